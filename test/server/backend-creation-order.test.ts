/**
 * ListKeyVersions order is the creation sequence (`sort_order`), which the reference assigns
 * statement by statement in request order. These cases run the same requests on every backend
 * directly (no HTTP) and expect the reference's order, so the memory backend that unit tests
 * trust and the SQL backends cannot drift apart on it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConflictError } from '../../src/server/errors.js';
import type { PutItem, PutRequest, StorageBackend } from '../../src/server/backends/types.js';
import { BACKEND_CASES, text, type OpenedBackend } from './helpers.js';

const item = (key: string, version: bigint): PutItem => ({ key, version, value: text(`${key}@${version}`) });

for (const backendCase of BACKEND_CASES) {
  const title = backendCase.skipReason ? `${backendCase.name} — SKIPPED: ${backendCase.skipReason}` : backendCase.name;
  describe.skipIf(backendCase.skipReason !== undefined)(`creation order of multi-item puts on ${title}`, () => {
    let opened: OpenedBackend;
    let backend: StorageBackend;
    let storeCounter = 0;
    beforeAll(async () => {
      opened = await backendCase.open();
      backend = opened.backend;
    });
    afterAll(async () => {
      await opened?.dispose();
    });

    const newStore = () => `order-${++storeCounter}`;
    const put = (storeId: string, request: Partial<PutRequest>) =>
      backend.put('user', { storeId, transactionItems: [], deleteItems: [], ...request });
    const listed = async (storeId: string) => (await backend.list('user', { storeId, keyPrefix: '', limit: 100 })).map((row) => row.key);

    it('numbers the keys one request creates in request order, not key order', async () => {
      const storeId = newStore();
      await put(storeId, { transactionItems: [item('z', 0n), item('a', 0n), item('m', -1n)] });
      // Newest first: m was created last, z first.
      expect(await listed(storeId)).toEqual(['m', 'a', 'z']);
    });

    it('keeps an upserted key in place among keys created around it in the same request, global version included', async () => {
      const storeId = newStore();
      await put(storeId, { transactionItems: [item('b', 0n)] });
      await put(storeId, { globalVersion: 0n, transactionItems: [item('y', 0n), item('b', -1n), item('c', 0n)] });
      expect(await listed(storeId)).toEqual(['c', 'y', 'b']);
      expect((await backend.get('user', storeId, 'b'))?.version).toBe(1n);
      expect((await backend.get('user', storeId, 'global_version'))?.version).toBe(1n);
    });

    it('moves a key deleted and re-created in later requests to the front, in request order with its neighbours', async () => {
      const storeId = newStore();
      await put(storeId, { transactionItems: [item('p', 0n), item('q', 0n)] });
      await put(storeId, { transactionItems: [item('r', 0n), item('d', 0n)], deleteItems: [{ key: 'p', version: 1n }] });
      await put(storeId, { transactionItems: [item('p', 0n), item('e', 0n)] });
      expect(await listed(storeId)).toEqual(['e', 'p', 'd', 'r', 'q']);
    });

    it('pages through keys created by one request in request order', async () => {
      const storeId = newStore();
      const keys = ['k9', 'k1', 'k5', 'k3', 'k7', 'k2'];
      await put(storeId, { transactionItems: keys.map((key) => item(key, 0n)) });
      const seen: string[] = [];
      let beforeSortOrder: bigint | undefined;
      for (let page = 0; page < 10; page++) {
        const rows = await backend.list('user', { storeId, keyPrefix: 'k', limit: 2, beforeSortOrder });
        if (rows.length === 0) break;
        seen.push(...rows.map((row) => row.key));
        beforeSortOrder = rows[rows.length - 1].sortOrder;
      }
      expect(seen).toEqual([...keys].reverse());
    });

    it('a conflicting multi-item put creates nothing and leaves the order of existing keys alone', async () => {
      const storeId = newStore();
      await put(storeId, { transactionItems: [item('s', 0n), item('t', 0n)] });
      await expect(put(storeId, { transactionItems: [item('w', 0n), item('s', 0n), item('f', 0n)] })).rejects.toBeInstanceOf(ConflictError);
      expect(await listed(storeId)).toEqual(['t', 's']);
      await put(storeId, { transactionItems: [item('w', 0n), item('f', 0n)] });
      expect(await listed(storeId)).toEqual(['f', 'w', 't', 's']);
    });
  });
}

/**
 * The creation sequence is also visible as numbers: a ListKeyVersions page token is the
 * `sort_order` of the last key listed. A PostgreSQL sequence is consumed by every INSERT attempt
 * that runs, and a failed multi-item put stops at its first failing statement (key order) unless
 * its numbers were drawn beforehand (inserts out of key order): the memory backend must consume
 * exactly as many numbers in each case.
 */
for (const backendCase of BACKEND_CASES) {
  const title = backendCase.skipReason ? `${backendCase.name} — SKIPPED: ${backendCase.skipReason}` : backendCase.name;
  describe.skipIf(backendCase.skipReason !== undefined)(`creation sequence numbers consumed on ${title}`, () => {
    let opened: OpenedBackend;
    let backend: StorageBackend;
    let counter = 0;
    beforeAll(async () => {
      opened = await backendCase.open();
      backend = opened.backend;
    });
    afterAll(async () => {
      await opened?.dispose();
    });

    const put = (storeId: string, request: Partial<PutRequest>) =>
      backend.put('user', { storeId, transactionItems: [], deleteItems: [], ...request });
    /** Creates a fresh key and returns the creation sequence number it got. */
    const probe = async (): Promise<bigint> => {
      const key = `probe-${++counter}`;
      await put('probes', { transactionItems: [item(key, 0n)] });
      const [row] = await backend.list('user', { storeId: 'probes', keyPrefix: key, limit: 1 });
      return row.sortOrder;
    };
    /**
     * How `run` ended ('applied', 'conflict', or the unexpected error itself) and how many
     * sequence numbers it consumed (after `setup`, which is not counted).
     */
    const consumed = async (setup: (storeId: string) => Promise<void>, run: (storeId: string) => Promise<unknown>) => {
      const storeId = `seq-${++counter}`;
      await setup(storeId);
      const before = await probe();
      const outcome = await run(storeId).then(
        () => 'applied' as const,
        (error: unknown) => (error instanceof ConflictError ? ('conflict' as const) : error),
      );
      return { outcome, consumed: (await probe()) - before - 1n };
    };
    const nothing = async () => {};

    it.each<[string, (storeId: string) => Promise<void>, (storeId: string) => Promise<unknown>, bigint, 'applied' | 'conflict']>([
      ['a successful put: one per insert attempt (creates and -1 writes), none for updates and deletes',
        async (s) => put(s, { transactionItems: [item('u', 0n), item('r', 0n), item('d', 0n)] }),
        async (s) => put(s, { transactionItems: [item('a', 0n), item('r', -1n), item('u', 1n), item('z', 0n)], deleteItems: [{ key: 'd', version: -1n }] }),
        3n, 'applied'],
      ['a failed put whose inserts are in key order: those before the failing statement',
        nothing,
        async (s) => put(s, { transactionItems: [item('a', 0n), item('b', 5n), item('c', 0n)] }),
        1n, 'conflict'],
      ['a failed put whose first statement in key order is a failing delete: none',
        nothing,
        async (s) => put(s, { transactionItems: [item('z', 0n)], deleteItems: [{ key: 'a', version: 3n }] }),
        0n, 'conflict'],
      ['a failed put whose failing create comes first in key order: that one only',
        async (s) => put(s, { transactionItems: [item('e', 0n)] }),
        async (s) => put(s, { transactionItems: [item('e', 0n), item('f', 0n), item('g', -1n)] }),
        1n, 'conflict'],
      ['a failed put with a wrong global version sorting before its items: none',
        nothing,
        async (s) => put(s, { globalVersion: 7n, transactionItems: [item('x', 0n), item('y', -1n)] }),
        0n, 'conflict'],
      ['a failed put whose inserts are out of key order: all of them, drawn before any statement',
        nothing,
        async (s) => put(s, { transactionItems: [item('z', 0n), item('y', -1n), item('a', 4n)] }),
        2n, 'conflict'],
      ['a failed single create of an existing key: one',
        async (s) => put(s, { transactionItems: [item('k', 0n)] }),
        async (s) => put(s, { transactionItems: [item('k', 0n)] }),
        1n, 'conflict'],
      ['a failed single update and a DeleteObject: none',
        async (s) => put(s, { transactionItems: [item('k', 0n)] }),
        async (s) => {
          await backend.delete('user', s, { key: 'k', version: -1n });
          await put(s, { transactionItems: [item('k', 3n)] });
        },
        0n, 'conflict'],
    ])('%s', async (_name, setup, run, expected, outcome) => {
      expect(await consumed(setup, run)).toEqual({ outcome, consumed: expected });
    });

    it('page tokens (sort orders) after a failed put are the same numbers on every backend', async () => {
      const storeId = `seq-${++counter}`;
      await put(storeId, { transactionItems: [item('a', 0n)] });
      await expect(put(storeId, { transactionItems: [item('b', 0n), item('c', 9n), item('d', 0n)] })).rejects.toBeInstanceOf(ConflictError);
      await put(storeId, { transactionItems: [item('e', 0n)] });
      const rows = await backend.list('user', { storeId, keyPrefix: '', limit: 10 });
      expect(rows.map((row) => row.key)).toEqual(['e', 'a']);
      // b drew a number, d never ran.
      expect(rows[0].sortOrder - rows[1].sortOrder).toBe(2n);
    });
  });
}
