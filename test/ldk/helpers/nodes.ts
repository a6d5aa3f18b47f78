/**
 * Shared setup for the two-node LDK tests: a network, node A persisting through VssPersister
 * (or another strategy), node B in memory, connected, with one open channel.
 */
import * as ldk from 'lightningdevkit';
import { randomBytes } from 'node:crypto';
import { WalletNetwork, type OpenedChannel, type OpenChannelOptions } from '../../../harness/network.js';
import type { WalletNode } from '../../../harness/node.js';
import { vssPersistence, type PersistenceFactory, type VssPersistenceOptions } from '../../../harness/persistence.js';
import type { AsyncKVStore } from '../../../src/store/types.js';
import type { RecordingStore } from './recording-store.js';
import { LdkEventLoop, readChannelMonitors, silentLogger, type LdkEventLoopOptions, type RestoredMonitor, type VssPersister } from '../../../src/ldk/index.js';
import { withoutSentinel } from '../../../src/ldk/layout.js';

export interface Pair {
  net: WalletNetwork;
  a: WalletNode;
  b: WalletNode;
  channel: OpenedChannel;
}

export async function openPair(options: {
  persistenceA: PersistenceFactory;
  persistenceB?: PersistenceFactory;
  channel?: OpenChannelOptions;
  seedA?: Uint8Array;
}): Promise<Pair> {
  const net = await WalletNetwork.create();
  const a = net.addNode({ name: 'A', seed: options.seedA ?? randomBytes(32), persistence: options.persistenceA });
  const b = net.addNode({ name: 'B', persistence: options.persistenceB });
  net.start();
  await net.connect(a, b);
  const channel = await net.openChannel(a, b, options.channel);
  return { net, a, b, channel };
}

/**
 * Opens a pair whose node A writes through `store` (written separately: no atomic batches),
 * pays once, then crashes A in the middle of a second payment so that its monitor update 7 is
 * lost and 8 is stored: 7 and 8 are B's revoke_and_ack and commitment_signed reaching A
 * together; `store` refuses 7, and A crashes as soon as 8 is written (the server then goes dark
 * for A). `opened` gets the pair at once, for the test's teardown. Returns once A's last
 * requests settled.
 */
export async function openPairCrashedWithMonitorUpdateGap(store: RecordingStore, opened: (pair: Pair) => void): Promise<Pair> {
  const pair = await openPair({ persistenceA: vssNode(store) });
  opened(pair);
  const { net, a, b } = pair;
  await net.pay(a, b, 10_000n, { settled: true });
  store.failWritesTo = (k) => k.primaryNamespace === 'monitor_updates' && k.key === '7';
  let crashed: Promise<void> | undefined;
  store.afterWrite = (w) => {
    if (w.key.primaryNamespace === 'monitor_updates' && w.key.key === '8' && !crashed) {
      store.outage = true;
      crashed = net.crash(a);
    }
  };
  net.sendPayment(a, b, 20_000n);
  await net.waitFor(() => crashed !== undefined, { what: 'update 8 stored while 7 fails' });
  await crashed;
  await (store.inner as { flush?: () => Promise<void> }).flush?.().catch(() => {});
  return pair;
}

export function vssNode(store: AsyncKVStore, options: VssPersistenceOptions = {}): PersistenceFactory {
  return vssPersistence(store, { backoff: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
}

export function persisterOf(node: WalletNode): VssPersister {
  const p = node.persistence.vssPersister;
  if (!p) throw new Error(`${node.name} has no VssPersister`);
  return p;
}

/**
 * An event loop of the test's own for `node` (linked to its persister and ordered broadcaster,
 * quiet), in place of the harness's: the test picks the handler and any other option.
 */
export function ownEventLoop(node: WalletNode, store: AsyncKVStore, options: Pick<LdkEventLoopOptions, 'handleEvent'> & Partial<LdkEventLoopOptions>): LdkEventLoop {
  return new LdkEventLoop({
    channelManager: node.channelManager,
    chainMonitor: node.chainMonitor,
    store,
    persister: persisterOf(node),
    broadcaster: node.orderedBroadcaster,
    log: silentLogger,
    ...options,
  });
}

/**
 * Reads every monitor from `store` as a new device would (a fresh KeysManager from the
 * node's seed), independently of the node's own objects.
 */
export async function readMonitorsAsNewDevice(store: AsyncKVStore, seed: Uint8Array): Promise<RestoredMonitor[]> {
  const keys = ldk.KeysManager.constructor_new(seed, BigInt(Math.floor(Date.now() / 1000)), 7);
  const logger = ldk.Logger.new_impl({ log: () => {} });
  return readChannelMonitors(store, {
    entropySource: keys.as_EntropySource(),
    signerProvider: keys.as_SignerProvider(),
    broadcaster: ldk.BroadcasterInterface.new_impl({ broadcast_transactions: () => {} }),
    feeEstimator: ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => 253 }),
    logger,
  });
}

/** The latest update id inside a stored full monitor (LDK's sentinel and all), decoded with the node's seed. */
export function fullMonitorUpdateId(stored: Uint8Array, seed: Uint8Array): bigint {
  const keys = ldk.KeysManager.constructor_new(seed, 1n, 3);
  const parsed = ldk.UtilMethods.constructor_C2Tuple_ThirtyTwoBytesChannelMonitorZ_read(withoutSentinel(stored), keys.as_EntropySource(), keys.as_SignerProvider());
  if (!(parsed instanceof ldk.Result_C2Tuple_ThirtyTwoBytesChannelMonitorZDecodeErrorZ_OK)) throw new Error('stored full monitor does not decode');
  return parsed.res.get_b().get_latest_update_id();
}
