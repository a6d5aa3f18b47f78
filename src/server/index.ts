/**
 * ldk-vss/server: a VSS server compatible with the reference Rust vss-server.
 */
export {
  startVssServer,
  openBackend,
  createAuthorizer,
  ServerConfigError,
  ServerListenError,
  BackendCloseTimeoutError,
  DEFAULT_SHUTDOWN_GRACE_MS,
  MIN_BACKEND_CLOSE_MS,
} from './server.js';
export type { StartedVssServer, VssServerOptions, BackendOption, AuthOption, PostgresSsl, LogLevel } from './server.js';
export { createVssHandler, clientAddress, DEFAULT_HEALTH_CHECK_TIMEOUT_MS, type VssAppOptions, type OperationRouting } from './app.js';
export { MemoryBackend, type MemorySnapshot } from './backends/memory.js';
// The SQL backends, for callers that open and tune one themselves (batching, pool) and hand the
// instance to startVssServer({ backend }).
export { PostgresBackend, type PostgresBackendOptions } from './backends/postgres.js';
export { PgliteBackend, PgliteStartError, PgliteStoppedError, PGLITE_MAX_VALUE_SIZE, type PgliteBackendOptions } from './backends/pglite.js';
export { DataDirInUseError, DATA_DIR_LOCK_FILE } from './backends/data-dir-lock.js';
export { DEFAULT_BATCHING, type SqlBackendOptions } from './backends/sql-backend.js';
export type { BatcherOptions, GatherOptions, BatcherStats } from './backends/batcher.js';
export type { StorageBackend, StoredRecord, PutItem, DeleteItem, PutRequest, ListedKey, ListQuery } from './backends/types.js';
export * from './auth/index.js';
export * from './errors.js';
export * from './constants.js';
export * from './limits.js';
export { encodePageToken, decodePageToken } from './page-token.js';
export { parseRateLimit, type RateLimitOptions, type RateLimitRule } from './rate-limit.js';
export { parseCorsOrigins } from './cors.js';
