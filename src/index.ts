/**
 * ldk-vss: the package root. Re-exports the public API of every layer, in dependency
 * order: protocol <- crypto <- client <- store (together `ldk-vss/store`, which bundles for
 * browsers) <- ldk. The server lives at `ldk-vss/server`.
 */
export * from './store-entry.js';
export * from './ldk/index.js';
