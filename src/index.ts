/**
 * ldk-vss: the package root. Re-exports the public API of every layer, in dependency
 * order: protocol <- crypto <- client <- store <- ldk. The server lives at `ldk-vss/server`.
 */
export * from './protocol/index.js';
export * from './crypto/index.js';
export * from './client/index.js';
export * from './store/index.js';
export * from './ldk/index.js';
