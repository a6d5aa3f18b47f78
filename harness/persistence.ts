/**
 * How a harness node persists: each strategy builds the node's `Persist` (for its
 * ChainMonitor) and names the store its ChannelManager goes to.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore, SyncKVStore } from '../src/store/types.js';
import {
  VssPersister,
  readChannelMonitorsWithLdk,
  silentLogger,
  toLdkKVStore,
  type BackoffOptions,
  type PersistenceLogger,
  type RestoredMonitor,
  type VssPersisterOptions,
} from '../src/ldk/index.js';

/** The LDK objects of a node that persisters need. */
export interface NodeContext {
  name: string;
  keysManager: ldk.KeysManager;
  logger: ldk.Logger;
  feeEstimator: ldk.FeeEstimator;
  broadcaster: ldk.BroadcasterInterface;
}

export interface NodePersistence {
  /** Label for reports ("memory", "vss", "ldk-mup"). */
  kind: string;
  /** The Persist handed to the node's ChainMonitor. */
  persist: ldk.Persist;
  /** Set for VssPersister-based nodes (attached to the ChainMonitor by the node). */
  vssPersister?: VssPersister;
  /**
   * Link the VssPersister to the node's manager writes (default true): monitor writes wait
   * for a manager that knows them, so no crash point leads to a stale-manager force-close.
   */
  linkManager?: boolean;
  /** Where the ChannelManager is written; without one the manager is never persisted. */
  managerStore?: AsyncKVStore;
  /** Reads this strategy's monitors for a restore (default: the parallel async reader). */
  readMonitors?: () => RestoredMonitor[] | Promise<RestoredMonitor[]>;
  /** Retry schedule for the node's ChannelManager writes (default: the event loop's). */
  backoff?: BackoffOptions;
  /** Stops background work; called when the node crashes or shuts down. */
  close(): Promise<void>;
}

export type PersistenceFactory = (ctx: NodeContext) => NodePersistence;

const COMPLETED = ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_Completed;

/** Nothing is stored; every monitor update completes at once. The benchmark baseline. */
export function memoryPersistence(): PersistenceFactory {
  return () => ({
    kind: 'memory',
    persist: ldk.Persist.new_impl({
      persist_new_channel: () => COMPLETED,
      update_persisted_channel: () => COMPLETED,
      archive_persisted_channel: () => {},
    }),
    close: async () => {},
  });
}

export type VssPersistenceOptions = Omit<VssPersisterOptions, 'store' | 'entropySource' | 'signerProvider' | 'broadcaster' | 'feeEstimator' | 'logger'> & {
  /** See NodePersistence.linkManager. Default true. */
  linkManager?: boolean;
};

/** VssPersister for monitors and the event loop's manager writes, both to `store`. */
export function vssPersistence(store: AsyncKVStore, options: VssPersistenceOptions = {}): PersistenceFactory {
  const { linkManager, ...persisterOptions } = options;
  return (ctx) => {
    const persister = new VssPersister({
      store,
      entropySource: ctx.keysManager.as_EntropySource(),
      signerProvider: ctx.keysManager.as_SignerProvider(),
      broadcaster: ctx.broadcaster,
      feeEstimator: ctx.feeEstimator,
      logger: ctx.logger,
      log: silentLogger,
      ...persisterOptions,
    });
    return {
      kind: 'vss',
      persist: persister.toLdkPersist(),
      vssPersister: persister,
      linkManager: linkManager ?? true,
      managerStore: store,
      backoff: options.backoff,
      // Only a crash closes a node's persistence here: a crash does not wait for writes on the wire.
      close: () => persister.close({ timeoutMs: 0 }),
    };
  };
}

export interface LdkPersisterOptions {
  /** LDK's `maximum_pending_updates`. Default 100. */
  maximumPendingUpdates?: number;
  log?: PersistenceLogger;
}

/**
 * LDK's own MonitorUpdatingPersister over a blocking store (every write blocks the thread
 * until durable and returns Completed), with the manager written through `managerStore`.
 */
export function ldkMonitorUpdatingPersistence(syncStore: SyncKVStore, managerStore: AsyncKVStore, options: LdkPersisterOptions = {}): PersistenceFactory {
  return (ctx) => {
    const mup = ldk.MonitorUpdatingPersister.constructor_new(
      toLdkKVStore(syncStore, { log: options.log ?? silentLogger }),
      ctx.logger,
      BigInt(options.maximumPendingUpdates ?? 100),
      ctx.keysManager.as_EntropySource(),
      ctx.keysManager.as_SignerProvider(),
      ctx.broadcaster,
      ctx.feeEstimator,
    );
    return {
      kind: 'ldk-mup',
      persist: mup.as_Persist(),
      managerStore,
      readMonitors: () => readChannelMonitorsWithLdk(mup),
      close: async () => {},
    };
  };
}
