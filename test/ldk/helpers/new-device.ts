/**
 * LDK objects of a "new device" for calling restoreNode directly (not through the harness):
 * keys from the node's seed, every broadcast recorded, a quiet logger.
 */
import * as ldk from 'lightningdevkit';
import { silentLogger, VssPersister, type RestoreNodeOptions } from '../../../src/ldk/index.js';
import type { AsyncKVStore } from '../../../src/store/types.js';

export interface NewDevice {
  keys: ldk.KeysManager;
  logger: ldk.Logger;
  feeEstimator: ldk.FeeEstimator;
  broadcaster: ldk.BroadcasterInterface;
  /** Every transaction the device's LDK objects broadcast. */
  broadcasts: Uint8Array[];
  /** A VssPersister over `store` for this device (quiet, short backoff). */
  persister(store: AsyncKVStore): VssPersister;
  /** restoreNode's options for `store` (override or add any with `extra`). */
  restoreOptions(store: AsyncKVStore, persister: RestoreNodeOptions['persister'], extra?: Partial<RestoreNodeOptions>): RestoreNodeOptions;
}

/** `broadcasts`: the array every broadcast transaction is pushed to (a new one by default). */
export function newDevice(seed: Uint8Array, options: { broadcasts?: Uint8Array[] } = {}): NewDevice {
  const keys = ldk.KeysManager.constructor_new(seed, BigInt(Math.floor(Date.now() / 1000)), 17);
  const loggerImpl: ldk.LoggerInterface = { log: () => {} };
  const logger = ldk.Logger.new_impl(loggerImpl);
  const graph = ldk.NetworkGraph.constructor_new(ldk.Network.LDKNetwork_Regtest, logger);
  const scorer = ldk.ProbabilisticScorer.constructor_new(ldk.ProbabilisticScoringDecayParameters.constructor_default(), graph, logger);
  const score = ldk.MultiThreadedLockableScore.constructor_new(scorer.as_Score()).as_LockableScore();
  const feeEstimator = ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => 253 });
  const broadcasts = options.broadcasts ?? [];
  const broadcaster = ldk.BroadcasterInterface.new_impl({ broadcast_transactions: (txs) => void broadcasts.push(...txs) });
  const config = ldk.UserConfig.constructor_default();
  config.set_manually_accept_inbound_channels(true);
  return {
    keys,
    logger,
    feeEstimator,
    broadcaster,
    broadcasts,
    persister: (store) =>
      new VssPersister({
        store,
        entropySource: keys.as_EntropySource(),
        signerProvider: keys.as_SignerProvider(),
        broadcaster,
        feeEstimator,
        logger,
        log: silentLogger,
        backoff: { initialDelayMs: 20, maxDelayMs: 200 },
      }),
    restoreOptions: (store, persister, extra = {}) => ({
      store,
      entropySource: keys.as_EntropySource(),
      nodeSigner: keys.as_NodeSigner(),
      signerProvider: keys.as_SignerProvider(),
      feeEstimator,
      broadcaster,
      logger: loggerImpl,
      router: ldk.DefaultRouter.constructor_new(graph, logger, keys.as_EntropySource(), score, ldk.ProbabilisticScoringFeeParameters.constructor_default()).as_Router(),
      messageRouter: ldk.DefaultMessageRouter.constructor_new(graph, keys.as_EntropySource()).as_MessageRouter(),
      config,
      persister,
      log: silentLogger,
      ...extra,
    }),
  };
}
