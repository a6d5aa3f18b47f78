import { StoreIOError } from '../../../src/store/errors.js';
import type { AsyncKVStore } from '../../../src/store/types.js';

/**
 * `inner` that accepts `accepted` writes and then fails every further one, like a copy whose
 * target went away (a process killed mid-migration).
 */
export function cutOffAfter(inner: AsyncKVStore, accepted: number): AsyncKVStore {
  let writes = 0;
  return {
    read: (p, s, k) => inner.read(p, s, k),
    write: async (p, s, k, v) => {
      if (++writes > accepted) throw new StoreIOError('cut off (simulated)');
      await inner.write(p, s, k, v);
    },
    remove: (p, s, k, lazy) => inner.remove(p, s, k, lazy),
    list: (p, s) => inner.list(p, s),
    listAll: () => inner.listAll(),
  };
}
