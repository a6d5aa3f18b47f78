import * as ldk from 'lightningdevkit';
import { readChannelMonitorsWithLdk, silentLogger, toLdkKVStore } from '../../../src/ldk/index.js';
import type { MemoryKVStore } from './memory-store.js';

/** LDK's MonitorUpdatingPersister over `store` (through the KVStore bridge), as a reader of stored monitors. */
export function monitorReaderOver(store: MemoryKVStore, seed: Uint8Array): ldk.MonitorUpdatingPersister {
  const keys = ldk.KeysManager.constructor_new(seed, 1n, 1);
  return ldk.MonitorUpdatingPersister.constructor_new(
    toLdkKVStore(store.toSyncStore(), { log: silentLogger }),
    ldk.Logger.new_impl({ log: () => {} }),
    100n,
    keys.as_EntropySource(),
    keys.as_SignerProvider(),
    ldk.BroadcasterInterface.new_impl({ broadcast_transactions: () => {} }),
    ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => 253 }),
  );
}

/** What readChannelMonitorsWithLdk(reader) throws, or undefined when it reads. */
export function readFailure(reader: ldk.MonitorUpdatingPersister): unknown {
  try {
    readChannelMonitorsWithLdk(reader);
  } catch (err) {
    return err;
  }
  return undefined;
}
