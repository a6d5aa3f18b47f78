/**
 * A store with some operations replaced (to delay, hold or fail them) and the rest passed
 * through, for the harness and the tests.
 */
import { supportsAtomicBatch, type AsyncKVStore, type KeyValueWrite } from '../src/store/types.js';

export interface StoreOverrides {
  read?: AsyncKVStore['read'];
  write?: AsyncKVStore['write'];
  remove?: AsyncKVStore['remove'];
  /** Replaces the inner store's atomic batch (only offered when the inner store has one). */
  writeBatch?: (writes: readonly KeyValueWrite[]) => Promise<void>;
  /** `false`: offer no atomic batch at all, so a persister writes each key on its own. Default true. */
  batches?: boolean;
}

export function wrapStore(inner: AsyncKVStore, overrides: StoreOverrides): AsyncKVStore {
  const store: AsyncKVStore & { writeBatch?: (writes: readonly KeyValueWrite[]) => Promise<void> } = {
    read: overrides.read ?? ((p, s, k) => inner.read(p, s, k)),
    write: overrides.write ?? ((p, s, k, value) => inner.write(p, s, k, value)),
    list: (p, s) => inner.list(p, s),
    listAll: () => inner.listAll(),
    remove: overrides.remove ?? ((p, s, k, lazy) => inner.remove(p, s, k, lazy)),
  };
  if (overrides.batches !== false && supportsAtomicBatch(inner)) {
    store.writeBatch = overrides.writeBatch ?? ((writes) => inner.writeBatch(writes));
  }
  return store;
}
