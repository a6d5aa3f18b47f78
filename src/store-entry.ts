/**
 * ldk-vss/store: ldk-vss/client plus `VssStore`, for browsers, React Native and Node alike. The
 * LDK layer is left out: it loads lightningdevkit's WASM with Node modules, so it is only in the
 * package root. The Node-only parts kept here (the blocking `toSyncStore()` view, the file version
 * ledger, the Node HTTP transport) reach Node through `process.getBuiltinModule` when used, and
 * elsewhere fail with a clear error instead of breaking the bundle.
 */
export * from './client-entry.js';
export * from './store/index.js';
