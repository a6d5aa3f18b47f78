// Public API of src/ldk; the package root re-exports everything here.
export { initLdk, ldkWasmPath } from './wasm.js';
export * from './errors.js';
export * from './layout.js';
export { silentLogger, stderrLogger, describeError, type PersistenceLogger } from './log.js';
export { backoffDelay, isTransientStoreError, type BackoffOptions } from './retry.js';
export { toLdkKVStore, toLdkMigratableKVStore, ioErrorFor, LdkVssStore, type LdkKVStoreOptions, type SyncCapableStore } from './kv-store.js';
export {
  VssPersister,
  type VssPersisterOptions,
  type VssPersisterEvents,
  type VssPersisterStats,
  type DurableWriteEvent,
  type PendingWriteInfo,
  type MonitorPersistenceState,
  type ManagerWriter,
  type ManagerWriteTracker,
  type RetryEvent,
  type MonitorWriteKind,
  type PersisterCloseOptions,
  type PersisterCloseReport,
} from './persister.js';
export {
  readChannelMonitors,
  readMonitorWithUpdates,
  readChannelMonitorsWithLdk,
  classifyUpdateIds,
  type MonitorReadContext,
  type RestoredMonitor,
  type ReadMonitorsOptions,
} from './monitors.js';
export { persistManager, writeManagerBytes, persistNetworkGraph, persistScorer, readManagerBytes, readNetworkGraph, readScorer } from './manager.js';
export { LdkEventLoop, MAX_REWRITES_FOR_EVENTS, isDeliveredWithoutManagerWrite, type LdkEventLoopOptions, type LdkTimerIntervals, type LdkEventLoopEvents, type LdkEventHandler, type ManagerPersistedEvent } from './event-loop.js';
export {
  ManagerOrderedBroadcaster,
  DEFAULT_MAX_BROADCAST_HOLD_MS,
  type ManagerDurability,
  type ManagerOrderedBroadcasterOptions,
  type ManagerOrderedBroadcasterStats,
} from './broadcaster.js';
export { restoreNode, type RestoreNodeOptions, type RestoredNode } from './restore.js';
export {
  migrateStore,
  LdkKVStoreError,
  type MigrationSource,
  type MigrationTarget,
  type LdkMigrationSource,
  type MigrateStoreOptions,
  type MigrationProgress,
  type MigrationResult,
} from './migrate.js';
