// Public API of src/store; the package root re-exports everything here.
export * from './types.js';
export * from './errors.js';
export { VssStore } from './vss-store.js';
export type { VssStoreOptions, VssStoreKeys, ToSyncStoreOptions } from './vss-store.js';
export { VssSyncStore } from './sync-store.js';
export type { WriteMode } from './engine.js';
export { fileVersionLedger, versionId, VersionLedgerLockedError } from './version-ledger.js';
export type { VersionLedger, VersionChange, FileVersionLedgerOptions, VersionLedgerLockHolder } from './version-ledger.js';
export { StoreLayout, VSS_SCHEMA_VERSION_KEY, V0_PROBE_PREFIX, encodeSchemaVersion, decodeSchemaVersion } from './layout.js';
export type { SchemaVersion, StoreAddress } from './layout.js';
export { checkKey, checkNamespace, checkValue, KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN } from './validation.js';
