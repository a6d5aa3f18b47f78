/**
 * ListKeyVersions pagination end to end: the page-token parser, what reaches the backend, and
 * paging on every backend (memory, PGlite, PostgreSQL when TEST_DATABASE_URL is set) while keys
 * are created, updated and deleted between pages, with non-ASCII keys, LIKE metacharacters,
 * prefixes that are whole keys, and tokens taken from another store.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { GLOBAL_VERSION_KEY, hasField, int64ToBigInt, vss } from '../../src/protocol/index.js';
import { MemoryBackend, decodePageToken, startVssServer, type ListQuery, type StartedVssServer } from '../../src/server/index.js';
import { listKeyVersions } from '../../src/server/operations.js';
import { BACKEND_CASES, INVALID, TestClient, expectFailure, newIdentity, randomStoreId, type ListPage, type OpenedBackend } from './helpers.js';

describe('page tokens', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('accept any number of leading zeros, like the reference, and refuse more than 19 significant digits', () => {
    expect(decodePageToken(`${'0'.repeat(10_000)}42`)).toBe(42n);
    expect(decodePageToken(`+${'0'.repeat(10_000)}`)).toBe(0n);
    expect(decodePageToken(`-${'0'.repeat(50)}`)).toBe(0n);
    expect(decodePageToken('9223372036854775807')).toBe(9223372036854775807n);
    expect(decodePageToken(`000${'9223372036854775807'}`)).toBe(9223372036854775807n);
    expect(decodePageToken('9223372036854775808')).toBeUndefined();
    expect(decodePageToken('10000000000000000000')).toBeUndefined();
    expect(decodePageToken(`-${'0'.repeat(50)}1`)).toBeUndefined();
  });

  it('an overlong token is refused without converting it to a number (BigInt of a huge digit string blocks the event loop)', () => {
    const converted: number[] = [];
    const original = globalThis.BigInt;
    vi.spyOn(globalThis, 'BigInt').mockImplementation(((value: string | number | bigint | boolean) => {
      if (typeof value === 'string') converted.push(value.length);
      return original(value);
    }) as BigIntConstructor);
    expect(decodePageToken('9'.repeat(100_000))).toBeUndefined();
    expect(decodePageToken(`+${'1'.repeat(100_000)}`)).toBeUndefined();
    expect(converted.every((length) => length <= 20)).toBe(true);
  });
});

describe('what a listing asks of the backend', () => {
  /** A memory backend that records the queries it is given. */
  const recordingBackend = () => {
    const backend = new MemoryBackend();
    const queries: ListQuery[] = [];
    const list = backend.list.bind(backend);
    backend.list = async (userToken, query) => {
      queries.push(query);
      return list(userToken, query);
    };
    return { backend, queries };
  };

  it('a prefix longer than any key (600 characters) answers an empty page without querying the backend', async () => {
    const { backend, queries } = recordingBackend();
    const key600 = 'k'.repeat(600);
    await backend.put('u', { storeId: 's', transactionItems: [{ key: key600, version: 0n, value: new Uint8Array() }], globalVersion: 0n, deleteItems: [] });
    // A prefix that is a whole 600-character key still lists it.
    const whole = await listKeyVersions(backend, 'u', new vss.ListKeyVersionsRequest({ storeId: 's', keyPrefix: key600 }));
    expect(whole.keyVersions.map((kv) => kv.key)).toEqual([key600]);
    expect(queries).toHaveLength(1);

    const first = await listKeyVersions(backend, 'u', new vss.ListKeyVersionsRequest({ storeId: 's', keyPrefix: `${key600}x` }));
    expect(first.keyVersions).toEqual([]);
    expect(first.nextPageToken).toBe('');
    expect(hasField(first, 'globalVersion') && int64ToBigInt(first.globalVersion)).toBe(1n);
    const later = await listKeyVersions(backend, 'u', new vss.ListKeyVersionsRequest({ storeId: 's', keyPrefix: 'p'.repeat(5000), pageToken: '7' }));
    expect(later.keyVersions).toEqual([]);
    expect(later.nextPageToken).toBe('');
    expect(hasField(later, 'globalVersion')).toBe(false);
    // The token is still checked, as for any other prefix.
    await expect(
      listKeyVersions(backend, 'u', new vss.ListKeyVersionsRequest({ storeId: 's', keyPrefix: 'p'.repeat(5000), pageToken: 'x' })),
    ).rejects.toThrow('Invalid page token');
    expect(queries).toHaveLength(1);
  });
});

for (const backendCase of BACKEND_CASES) {
  const title = backendCase.skipReason ? `${backendCase.name} — SKIPPED: ${backendCase.skipReason}` : backendCase.name;
  describe.skipIf(backendCase.skipReason !== undefined)(`ListKeyVersions paging on ${title}`, () => {
    let opened: OpenedBackend;
    let server: StartedVssServer;
    beforeAll(async () => {
      opened = await backendCase.open();
      server = await startVssServer({ backend: opened.backend });
    });
    afterAll(async () => {
      await server?.close();
      await opened?.dispose();
    });

    const newClient = (storeId = randomStoreId()) => {
      const identity = newIdentity();
      return new TestClient(server.url, storeId, () => identity.header());
    };
    const keysOf = (pages: ListPage[]) => pages.flatMap((page) => page.keys.map((k) => k.key));
    const create = (c: TestClient, keys: string[]) => c.put(undefined, keys.map((key) => ({ key, version: 0n, value: 'v' })));

    it('writes between pages: every key that exists throughout is listed exactly once, and paging ends', async () => {
      const c = newClient();
      const initial = Array.from({ length: 30 }, (_, i) => `k${String(i).padStart(2, '0')}`);
      // One request per key: creation order is then k00 … k29, listed newest first.
      for (const key of initial) await create(c, [key]);
      const listed: string[] = [];
      const touched = new Set<string>();
      let token: string | undefined;
      let round = 0;
      for (let guard = 0; guard < 100; guard++) {
        const page = await c.list({ pageSize: 3, ...(token !== undefined ? { pageToken: token } : {}) });
        listed.push(...page.keys.map((k) => k.key));
        if (!page.nextPageToken) break;
        token = page.nextPageToken;
        // Between pages: create new keys, update keys not yet listed (both ways), delete a key
        // already listed and one not yet listed, delete and re-create one not yet listed.
        const pending = initial.filter((key) => !listed.includes(key) && !touched.has(key));
        round++;
        await create(c, [`new${round}`]);
        touched.add(`new${round}`);
        if (pending.length >= 4) {
          const [updateCas, updateAny, remove, recreate] = pending.slice(-4);
          await c.put(undefined, [{ key: updateCas, version: (await c.get(updateCas)).version, value: 'v2' }]);
          await c.put(undefined, [{ key: updateAny, version: -1n, value: 'v2' }]);
          await c.delete(remove, -1n);
          await c.delete(recreate, -1n);
          await create(c, [recreate]);
          for (const key of [remove, recreate]) touched.add(key);
        }
        await c.delete(listed[listed.length - 1], -1n);
      }
      expect(round).toBeGreaterThan(5);
      expect(new Set(listed).size).toBe(listed.length);
      const existedThroughout = initial.filter((key) => !touched.has(key));
      expect(existedThroughout.length).toBeGreaterThan(0);
      for (const key of existedThroughout) expect(listed, `${key} existed throughout`).toContain(key);
      // Keys created after the first page are never listed (keyset pagination newest first).
      expect(listed.filter((key) => key.startsWith('new'))).toEqual([]);
    });

    it('page_size: 0 gives only the global version, negative is refused, huge is capped', async () => {
      const c = newClient();
      await c.put(0n, [{ key: 'a', version: 0n, value: 'v' }]);
      await c.put(1n, [{ key: 'b', version: 0n, value: 'v' }]);
      expect(await c.list({ pageSize: 0 })).toEqual({ keys: [], nextPageToken: '', globalVersion: 2n });
      for (const pageSize of [-1, -2, -(2 ** 31)]) {
        const error = await expectFailure(c.list({ pageSize }), INVALID);
        expect(error.serverMessage).toContain('page_size');
      }
      const huge = await c.list({ pageSize: 2 ** 31 - 1 });
      expect(huge.keys.map((k) => k.key)).toEqual(['b', 'a']);
      expect(huge.nextPageToken).toBe('');
      expect(huge.globalVersion).toBe(2n);
    });

    it('a prefix that is a whole key lists that key and the keys that extend it', async () => {
      const c = newClient();
      await create(c, ['abc', 'ab', 'abcd', 'abd', 'abc\\x']);
      expect(keysOf(await c.listAll({ keyPrefix: 'abc', pageSize: 1 }))).toEqual(['abc\\x', 'abcd', 'abc']);
      expect(keysOf(await c.listAll({ keyPrefix: 'abcd' }))).toEqual(['abcd']);
      expect(keysOf(await c.listAll({ keyPrefix: 'abcde' }))).toEqual([]);
    });

    it('non-ASCII keys: listed newest first whatever their bytes, and prefixes match code points exactly', async () => {
      const c = newClient();
      const precomposed = 'caf\u00e9';
      const decomposed = 'cafe\u0301';
      const keys = ['😀-z', 'Ωmega', precomposed, decomposed, '日本語', 'a', 'Z', '\u00e9t\u00e9', 'e\u0301t\u00e9', '😀😀', '\u{10FFFF}'];
      for (const key of keys) await create(c, [key]);
      const all = keysOf(await c.listAll({ pageSize: 2 }));
      expect(all).toEqual([...keys].reverse());
      expect(keysOf(await c.listAll({ keyPrefix: precomposed, pageSize: 1 }))).toEqual([precomposed]);
      expect(keysOf(await c.listAll({ keyPrefix: 'cafe', pageSize: 1 }))).toEqual([decomposed]);
      expect(keysOf(await c.listAll({ keyPrefix: '\u00e9', pageSize: 1 }))).toEqual(['\u00e9t\u00e9']);
      expect(keysOf(await c.listAll({ keyPrefix: '😀', pageSize: 1 }))).toEqual(['😀😀', '😀-z']);
      expect(keysOf(await c.listAll({ keyPrefix: 'z' }))).toEqual([]);
      expect(keysOf(await c.listAll({ keyPrefix: '\u{10FFFF}' }))).toEqual(['\u{10FFFF}']);
    });

    it('LIKE metacharacters in a prefix stay literal on every page', async () => {
      const c = newClient();
      const keys = ['p_1', 'pX1', 'p_2', 'p%3', 'p\\4', 'p_5', 'pY5', 'p\\_6', 'p\\X6'];
      for (const key of keys) await create(c, [key]);
      expect(keysOf(await c.listAll({ keyPrefix: 'p_', pageSize: 1 }))).toEqual(['p_5', 'p_2', 'p_1']);
      expect(keysOf(await c.listAll({ keyPrefix: 'p%', pageSize: 1 }))).toEqual(['p%3']);
      expect(keysOf(await c.listAll({ keyPrefix: 'p\\', pageSize: 1 }))).toEqual(['p\\X6', 'p\\_6', 'p\\4']);
      expect(keysOf(await c.listAll({ keyPrefix: 'p\\_', pageSize: 1 }))).toEqual(['p\\_6']);
    });

    it('a token from another store or user pages only through this store\'s keys', async () => {
      const alice = newClient('shared');
      const bob = newClient('shared');
      const aliceOther = alice.withStore('other');
      for (let i = 0; i < 3; i++) {
        await create(bob, [`bob${i}`]);
        await create(alice, [`alice${i}`]);
        await create(aliceOther, [`other${i}`]);
      }
      const bobToken = (await bob.list({ pageSize: 1 })).nextPageToken as string;
      const otherToken = (await aliceOther.list({ pageSize: 1 })).nextPageToken as string;
      for (const token of [bobToken, otherToken]) {
        const page = await alice.list({ pageToken: token });
        expect(page.keys.every((k) => k.key.startsWith('alice'))).toBe(true);
        expect(page.globalVersion).toBeUndefined();
      }
    });

    it('the global version row is never listed, not even with a prefix that matches it, and never shortens a page', async () => {
      const c = newClient();
      await c.put(0n, [{ key: 'global_a', version: 0n, value: 'v' }]);
      await c.put(1n, [{ key: 'global_b', version: 0n, value: 'v' }]);
      const pages = await c.listAll({ keyPrefix: 'global', pageSize: 1 });
      expect(keysOf(pages)).toEqual(['global_b', 'global_a']);
      expect(pages.map((page) => page.keys.length)).toEqual([1, 1]);
      expect(keysOf(pages)).not.toContain(GLOBAL_VERSION_KEY);
      expect(pages[0].globalVersion).toBe(2n);
    });

    it('a prefix longer than any key answers an empty last page', async () => {
      const c = newClient();
      await create(c, ['k'.repeat(600)]);
      expect(await c.list({ keyPrefix: 'k'.repeat(601) })).toEqual({ keys: [], nextPageToken: '', globalVersion: 0n });
      expect(keysOf(await c.listAll({ keyPrefix: 'k'.repeat(600) }))).toEqual(['k'.repeat(600)]);
    });
  });
}
