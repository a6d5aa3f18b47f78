/**
 * The reference server's conformance cases (spec §5.1 generic suite 1–18, the HTTP-observable
 * PostgreSQL cases 19–23) plus the deliberate improvements, as black-box HTTP tests. Each test
 * gets its own signature-auth identity and a random store id (possibly empty), like the
 * reference harness's random user token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GLOBAL_VERSION_KEY, INT64_MAX, INT64_MIN } from '../../src/protocol/index.js';
import { startVssServer, type StartedVssServer, type VssServerOptions } from '../../src/server/index.js';
import {
  CONFLICT,
  INVALID,
  NO_SUCH_KEY,
  TestClient,
  VssHttpError,
  expectFailure,
  newIdentity,
  randomStoreId,
  str,
  text,
  type BackendCase,
  type OpenedBackend,
} from './helpers.js';

/** Values above this are read back in chunks by the SQL backends (small here to exercise it). */
const TEST_INLINE_VALUE_LIMIT = 1024 * 1024;

export function conformanceSuite(backendCase: BackendCase, serverOptions: Pick<VssServerOptions, 'operationRouting'> = {}): void {
  const variant = serverOptions.operationRouting ? `${backendCase.name} backend, operations routed by ${serverOptions.operationRouting}` : `${backendCase.name} backend`;
  const title = backendCase.skipReason ? `${variant} — SKIPPED: ${backendCase.skipReason}` : variant;
  describe.skipIf(backendCase.skipReason !== undefined)(title, () => {
    let opened: OpenedBackend;
    let server: StartedVssServer;

    beforeAll(async () => {
      opened = await backendCase.open({ inlineValueLimit: TEST_INLINE_VALUE_LIMIT });
      server = await startVssServer({ backend: opened.backend, maxRequestBodySize: 8 * 1024 * 1024, ...serverOptions });
    });
    afterAll(async () => {
      await server?.close();
      await opened?.dispose();
    });

    /** A client with a fresh identity and a random store id. */
    const newClient = (storeId = randomStoreId()) => {
      const identity = newIdentity();
      return new TestClient(server.url, storeId, () => identity.header());
    };

    const expectRecord = async (client: TestClient, key: string, version: bigint, value: string) => {
      const record = await client.get(key);
      expect({ key: record.key, version: record.version, value: str(record.value) }).toEqual({ key, version, value });
    };
    const globalVersion = async (client: TestClient) => (await client.get(GLOBAL_VERSION_KEY)).version;
    /** Puts k0..k{count-1}, one request each, with global versions 0..count-1. */
    const putKeys = async (c: TestClient, count: number) => {
      for (let i = 0; i < count; i++) await c.put(BigInt(i), [{ key: `k${i}`, version: 0n, value: 'v' }]);
    };
    const keysOf = (pages: Awaited<ReturnType<TestClient['listAll']>>) => pages.flatMap((page) => page.keys.map((k) => k.key));

    describe('reference generic suite (§5.1)', () => {
      it('1 put_should_succeed_when_single_object_put_operation', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await c.put(1n, [{ key: 'k1', version: 1n, value: 'k1v2' }]);
        await c.put(2n, [{ key: 'k2', version: -1n, value: 'k2v1' }]);
        await c.put(3n, [{ key: 'k2', version: -1n, value: 'k2v2' }]);
        await c.put(4n, [{ key: 'k2', version: -1n, value: 'k2v3' }]);
        await expectRecord(c, 'k1', 2n, 'k1v2');
        await expectRecord(c, 'k2', 1n, 'k2v3');
        expect(await globalVersion(c)).toBe(5n);
      });

      it('2 put_should_succeed_when_multi_object_put_operation', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k1', version: 0n, value: 'k1v1' }, { key: 'k2', version: 0n, value: 'k2v1' }]);
        await c.put(1n, [{ key: 'k1', version: 1n, value: 'k1v2' }, { key: 'k2', version: 1n, value: 'k2v2' }]);
        await expectRecord(c, 'k1', 2n, 'k1v2');
        await expectRecord(c, 'k2', 2n, 'k2v2');
        expect(await globalVersion(c)).toBe(2n);
      });

      it('3 put_should_fail_when_key_version_mismatched', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await expectFailure(c.put(1n, [{ key: 'k1', version: 0n, value: 'k1v2' }]), CONFLICT);
        await expectRecord(c, 'k1', 1n, 'k1v1');
        expect(await globalVersion(c)).toBe(1n);
      });

      it('4 put_multi_object_should_fail_when_single_key_version_mismatched', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v1' }, { key: 'k2', version: 0n, value: 'k2v1' }]);
        await expectFailure(c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v2' }, { key: 'k2', version: 1n, value: 'k2v2' }]), CONFLICT);
        await expectRecord(c, 'k1', 1n, 'k1v1');
        await expectRecord(c, 'k2', 1n, 'k2v1');
      });

      it('5 put_should_fail_when_global_version_mismatched', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await expectFailure(c.put(0n, [{ key: 'k1', version: 1n, value: 'k1v2' }]), CONFLICT);
        await expectRecord(c, 'k1', 1n, 'k1v1');
      });

      it('6 put_should_succeed_when_no_global_version_is_given', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await c.put(undefined, [{ key: 'k1', version: 1n, value: 'k1v2' }]);
        await expectRecord(c, 'k1', 2n, 'k1v2');
        const global = await c.get(GLOBAL_VERSION_KEY);
        expect({ key: global.key, version: global.version, value: global.value.length }).toEqual({ key: GLOBAL_VERSION_KEY, version: 0n, value: 0 });
      });

      it('7 put_and_delete_should_succeed_as_atomic_transaction', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await c.put(undefined, [{ key: 'k2', version: 0n, value: 'k2v1' }], [{ key: 'k1', version: 1n }]);
        await expectRecord(c, 'k2', 1n, 'k2v1');
        await expectFailure(c.get('k1'), NO_SUCH_KEY);
        await expectFailure(c.put(undefined, [{ key: 'k3', version: 0n, value: 'k3v1' }], [{ key: 'k2', version: 3n }]), CONFLICT);
        await expectFailure(c.get('k3'), NO_SUCH_KEY);
        await expectRecord(c, 'k2', 1n, 'k2v1');
        await expectFailure(c.put(undefined, [{ key: 'k3', version: 1n, value: 'k3v1' }], [{ key: 'k2', version: 1n }]), CONFLICT);
        await expectFailure(c.put(2n, [{ key: 'k3', version: 0n, value: 'k3v1' }], [{ key: 'k2', version: 1n }]), CONFLICT);
        await expectFailure(c.get('k3'), NO_SUCH_KEY);
        await expectRecord(c, 'k2', 1n, 'k2v1');
        expect(await globalVersion(c)).toBe(0n);
      });

      it('8 delete_should_succeed_when_item_exists', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await c.delete('k1', 1n);
        await expectFailure(c.get('k1'), NO_SUCH_KEY);
        await c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await c.put(undefined, [{ key: 'k1', version: 1n, value: 'k1v2' }]);
        await c.delete('k1', -1n);
        await expectFailure(c.get('k1'), NO_SUCH_KEY);
      });

      it('9 delete_should_succeed_when_item_does_not_exist', async () => {
        await newClient().delete('non_existent_key', 0n);
      });

      it('10 delete_should_be_idempotent', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await c.delete('k1', 1n);
        await c.delete('k1', 1n);
        await expectFailure(c.get('k1'), NO_SUCH_KEY);
      });

      it('11 get_should_throw_no_such_key_exception_when_key_does_not_exist', async () => {
        const error = await expectFailure(newClient().get('non_existent_key'), NO_SUCH_KEY);
        expect(error.serverMessage).toContain('Requested key not found.');
      });

      it('12 get_should_return_correct_value_when_key_exists', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k1', version: 0n, value: 'k1v1' }]);
        await expectRecord(c, 'k1', 1n, 'k1v1');
        await c.put(1n, [{ key: 'k1', version: 1n, value: 'k1v2' }, { key: 'k2', version: 0n, value: 'k2v1' }]);
        await expectRecord(c, 'k1', 2n, 'k1v2');
        await expectRecord(c, 'k2', 1n, 'k2v1');
        await c.put(2n, [{ key: 'k2', version: 1n, value: 'k2v2' }, { key: 'k3', version: 0n, value: 'k3v1' }]);
        await expectRecord(c, 'k2', 2n, 'k2v2');
        await expectRecord(c, 'k3', 1n, 'k3v1');
      });

      it('13 list_should_return_paginated_response', async () => {
        const c = newClient();
        for (let i = 0; i < 1000; i++) await c.put(BigInt(i), [{ key: `k${i}`, version: 0n, value: 'k1v1' }]);
        await c.put(1000n, [{ key: 'k1', version: 1n, value: 'k1v2' }]);
        await c.put(1001n, [{ key: 'k2', version: 1n, value: 'k2v2' }]);
        await c.put(1002n, [{ key: 'k2', version: 2n, value: 'k2v3' }]);
        const pages = await c.listAll();
        expect(pages[0].globalVersion).toBe(1003n);
        expect(pages.slice(1).every((page) => page.globalVersion === undefined)).toBe(true);
        expect(pages.map((page) => page.keys.length)).toEqual(Array(10).fill(100));
        const entries = new Map(pages.flatMap((page) => page.keys.map((k) => [k.key, k] as const)));
        expect(entries.size).toBe(1000);
        expect(entries.has(GLOBAL_VERSION_KEY)).toBe(false);
        const summary = (key: string) => {
          const entry = entries.get(key);
          return entry && { key: entry.key, version: entry.version, valueLength: entry.value.length };
        };
        expect(summary('k1')).toEqual({ key: 'k1', version: 2n, valueLength: 0 });
        expect(summary('k2')).toEqual({ key: 'k2', version: 3n, valueLength: 0 });
      });

      it('14 list_should_honour_page_size_and_key_prefix_if_provided', async () => {
        const c = newClient();
        for (let i = 0; i < 20; i++) await c.put(BigInt(i), [{ key: `${i}k`, version: 0n, value: 'k1v1' }]);
        const pages = await c.listAll({ pageSize: 5, keyPrefix: '1' });
        expect(pages.map((page) => page.keys.length)).toEqual([5, 5, 1]);
        expect(new Set(keysOf(pages))).toEqual(new Set(['1k', ...Array.from({ length: 10 }, (_, i) => `1${i}k`)]));
      });

      it('15 list_should_return_zero_global_version_when_global_versioning_not_enabled', async () => {
        const c = newClient();
        // Batched (the test is about listing, not about one request per key).
        for (let batch = 0; batch < 10; batch++) {
          await c.put(undefined, Array.from({ length: 100 }, (_, i) => ({ key: `k${batch * 100 + i}`, version: 0n, value: 'k1v1' })));
        }
        const pages = await c.listAll();
        expect(pages[0].globalVersion).toBe(0n);
        const keys = keysOf(pages);
        expect(new Set(keys).size).toBe(1000);
        expect(keys).toHaveLength(1000);
        expect(keys).not.toContain(GLOBAL_VERSION_KEY);
      });

      it('16 list_should_limit_max_page_size (10,000 keys)', async () => {
        const c = newClient();
        // 10 PutObjects of 1000 items each, the global version advancing per request.
        for (let batch = 0; batch < 10; batch++) {
          await c.put(BigInt(batch), Array.from({ length: 1000 }, (_, i) => ({ key: `k${batch * 1000 + i}`, version: 0n, value: 'k1v1' })));
        }
        const pages = await c.listAll();
        expect(pages.every((page) => page.keys.length <= 100)).toBe(true);
        const keys = keysOf(pages);
        expect(keys).toHaveLength(10_000);
        expect(new Set(keys).size).toBe(10_000);
        expect(pages[0].globalVersion).toBe(10n);
      });

      it('17 list_should_return_results_ordered_by_creation_time', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'z_first', version: 0n, value: 'v1' }]);
        await c.put(1n, [{ key: 'a_third', version: 0n, value: 'v1' }]);
        await c.put(2n, [{ key: 'm_second', version: 0n, value: 'v1' }]);
        const page = await c.list();
        expect(page.globalVersion).toBe(3n);
        expect(page.keys.map((k) => k.key)).toEqual(['m_second', 'a_third', 'z_first']);
        expect(page.nextPageToken).toBe('');
      });

      it('18 list_should_paginate_by_creation_time_with_prefix', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'pfx_z', version: 0n, value: 'v1' }]);
        await c.put(1n, [{ key: 'pfx_a', version: 0n, value: 'v1' }]);
        await c.put(2n, [{ key: 'other', version: 0n, value: 'v1' }]);
        await c.put(3n, [{ key: 'pfx_m', version: 0n, value: 'v1' }]);
        const pages = await c.listAll({ pageSize: 1, keyPrefix: 'pfx_' });
        expect(pages[0].globalVersion).toBe(4n);
        expect(pages.every((page) => page.keys.length <= 1)).toBe(true);
        expect(keysOf(pages)).toEqual(['pfx_m', 'pfx_a', 'pfx_z']);
      });
    });

    describe('reference PostgreSQL suite, HTTP-observable cases (§5.2)', () => {
      it('19 list_orders_by_sort_order_desc', async () => {
        const c = newClient('store');
        for (const key of ['c_key', 'a_key', 'b_key']) await c.put(undefined, [{ key, version: 0n, value: 'v1' }]);
        expect((await c.list()).keys.map((k) => k.key)).toEqual(['b_key', 'a_key', 'c_key']);
        expect(keysOf(await c.listAll({ pageSize: 1 }))).toEqual(['b_key', 'a_key', 'c_key']);
      });

      it('20 list_zero_page_size_should_return_only_global_version', async () => {
        const c = newClient();
        await putKeys(c, 3);
        const page = await c.list({ pageSize: 0 });
        expect(page).toEqual({ keys: [], globalVersion: 3n, nextPageToken: '' });
      });

      it('21 list_should_return_empty_page_token_when_exact_fit', async () => {
        const c = newClient();
        await putKeys(c, 5);
        const page = await c.list({ pageSize: 5 });
        expect(page.keys).toHaveLength(5);
        expect(page.globalVersion).toBe(5n);
        expect(page.nextPageToken).toBe('');
      });

      it('22 list_should_return_empty_page_token_on_last_non_empty_page', async () => {
        const c = newClient();
        await putKeys(c, 6);
        const first = await c.list({ pageSize: 5 });
        expect(first.keys).toHaveLength(5);
        expect(first.globalVersion).toBe(6n);
        expect(first.nextPageToken).toMatch(/^[0-9]+$/);
        const second = await c.list({ pageSize: 5, pageToken: first.nextPageToken });
        expect(second.keys.map((k) => k.key)).toEqual(['k0']);
        expect(second.nextPageToken).toBe('');
        expect(second.globalVersion).toBeUndefined();
      });

      it('23 supports large objects (chunked read path; the 1 GiB body limit is covered in bad-input tests)', async () => {
        const c = newClient('store_id');
        // Over two read chunks plus an odd tail, with a pattern so misplaced chunks show up.
        const value = new Uint8Array(2 * TEST_INLINE_VALUE_LIMIT + 12_345);
        for (let i = 0; i < value.length; i++) value[i] = (i * 7 + (i >> 16)) & 0xff;
        await c.put(undefined, [{ key: 'k1', version: 0n, value }]);
        const record = await c.get('k1');
        expect(record.version).toBe(1n);
        expect(Buffer.compare(Buffer.from(record.value), Buffer.from(value))).toBe(0);
        await c.delete('k1', record.version);
        await expectFailure(c.get('k1'), NO_SUCH_KEY);
      });
    });

    describe('versioning and isolation details', () => {
      it('-1 writes reset an existing key to version 1 and global_version -1 resets the global version to 1', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k', version: 0n, value: 'a' }]);
        await c.put(1n, [{ key: 'k', version: 1n, value: 'b' }]);
        await c.put(-1n, [{ key: 'k', version: -1n, value: 'c' }]);
        await expectRecord(c, 'k', 1n, 'c');
        expect(await globalVersion(c)).toBe(1n);
      });

      it('a request with only global_version checks and bumps it; an empty request is a no-op', async () => {
        const c = newClient();
        await c.put(0n, []);
        await c.put(1n, []);
        await expectFailure(c.put(1n, []), CONFLICT);
        await c.put(undefined, []);
        expect(await globalVersion(c)).toBe(2n);
      });

      it('negative versions other than -1 and versions of missing keys conflict', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k', version: 0n, value: 'a' }]);
        await expectFailure(c.put(undefined, [{ key: 'k', version: -2n, value: 'x' }]), CONFLICT);
        await expectFailure(c.put(undefined, [{ key: 'k', version: INT64_MIN, value: 'x' }]), CONFLICT);
        await expectFailure(c.put(undefined, [{ key: 'missing', version: 1n, value: 'x' }]), CONFLICT);
        await expectFailure(c.put(undefined, [{ key: 'k', version: INT64_MAX, value: 'x' }]), CONFLICT);
        await expectRecord(c, 'k', 1n, 'a');
      });

      it('delete_items conflict on a missing key even with -1, and on a wrong version', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'k', version: 0n, value: 'a' }]);
        await expectFailure(c.put(undefined, [], [{ key: 'missing', version: -1n }]), CONFLICT);
        await expectFailure(c.put(undefined, [], [{ key: 'k', version: 2n }]), CONFLICT);
        await expectFailure(c.put(undefined, [], [{ key: 'k', version: 0n }]), CONFLICT);
        await c.put(undefined, [], [{ key: 'k', version: -1n }]);
        await expectFailure(c.get('k'), NO_SUCH_KEY);
      });

      it('DeleteObject with a wrong version succeeds but deletes nothing, and never touches the global version', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k', version: 0n, value: 'a' }]);
        await c.delete('k', 5n);
        await expectRecord(c, 'k', 1n, 'a');
        await c.delete('k', 1n);
        expect(await globalVersion(c)).toBe(1n);
      });

      it('a global-version conflict rolls back every item of the request', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'a', version: 0n, value: 'a1' }]);
        await expectFailure(
          c.put(0n, [{ key: 'a', version: 1n, value: 'a2' }, { key: 'b', version: 0n, value: 'b1' }], []),
          CONFLICT,
        );
        await expectRecord(c, 'a', 1n, 'a1');
        await expectFailure(c.get('b'), NO_SUCH_KEY);
      });

      it('the global_version key can be written through items when global_version is absent (the reference collision)', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: GLOBAL_VERSION_KEY, version: 0n, value: '' }]);
        expect(await globalVersion(c)).toBe(1n);
        expect((await c.list()).keys).toEqual([]);
        await c.delete(GLOBAL_VERSION_KEY, -1n);
        expect(await globalVersion(c)).toBe(0n);
      });

      it('updates keep a key\'s list position; delete and re-create moves it to the front', async () => {
        const c = newClient();
        for (const key of ['a', 'b', 'c']) await c.put(undefined, [{ key, version: 0n, value: 'v' }]);
        await c.put(undefined, [{ key: 'a', version: 1n, value: 'v2' }]);
        await c.put(undefined, [{ key: 'b', version: -1n, value: 'v2' }]);
        expect((await c.list()).keys.map((k) => k.key)).toEqual(['c', 'b', 'a']);
        await c.delete('b', -1n);
        await c.put(undefined, [{ key: 'b', version: 0n, value: 'v3' }]);
        expect((await c.list()).keys.map((k) => k.key)).toEqual(['b', 'c', 'a']);
      });

      it('keys written after the first page never appear on later pages (keyset pagination)', async () => {
        const c = newClient();
        for (let i = 0; i < 5; i++) await c.put(undefined, [{ key: `old${i}`, version: 0n, value: 'v' }]);
        const first = await c.list({ pageSize: 2 });
        await c.put(undefined, [{ key: 'new', version: 0n, value: 'v' }]);
        const rest = [];
        let token = first.nextPageToken;
        while (token) {
          const page = await c.list({ pageSize: 2, pageToken: token });
          rest.push(...page.keys.map((k) => k.key));
          token = page.nextPageToken;
        }
        expect([...first.keys.map((k) => k.key), ...rest]).toEqual(['old4', 'old3', 'old2', 'old1', 'old0']);
      });

      it('users are isolated even with the same store id', async () => {
        const alice = newClient('shared');
        const bob = newClient('shared');
        await alice.put(0n, [{ key: 'secret', version: 0n, value: 'alice' }]);
        await expectFailure(bob.get('secret'), NO_SUCH_KEY);
        expect((await bob.list()).keys).toEqual([]);
        expect(await globalVersion(bob)).toBe(0n);
        await bob.put(undefined, [{ key: 'secret', version: 0n, value: 'bob' }]);
        await expectRecord(alice, 'secret', 1n, 'alice');
        await bob.delete('secret', -1n);
        await expectRecord(alice, 'secret', 1n, 'alice');
      });

      it('store ids are isolated for one user, and the empty store id works', async () => {
        const identity = newIdentity();
        const a = new TestClient(server.url, '', () => identity.header());
        const b = a.withStore('other');
        await a.put(0n, [{ key: 'k', version: 0n, value: 'in-empty' }]);
        await expectFailure(b.get('k'), NO_SUCH_KEY);
        await expectRecord(a, 'k', 1n, 'in-empty');
        expect((await a.list()).keys.map((k) => k.key)).toEqual(['k']);
      });

      it('empty keys and empty values are allowed; an empty prefix lists the empty key', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: '', version: 0n, value: '' }]);
        await expectRecord(c, '', 1n, '');
        expect((await c.list({ keyPrefix: '' })).keys.map((k) => k.key)).toEqual(['']);
      });

      it('page tokens accept the reference syntax and reject the rest', async () => {
        const c = newClient();
        await putKeys(c, 3);
        const all = (await c.list()).keys.map((k) => k.key);
        const token = (await c.list({ pageSize: 1 })).nextPageToken as string;
        expect((await c.list({ pageToken: `+${token}` })).keys.map((k) => k.key)).toEqual(all.slice(1));
        expect((await c.list({ pageToken: `00${token}` })).keys.map((k) => k.key)).toEqual(all.slice(1));
        expect((await c.list({ pageToken: '0' })).keys).toEqual([]);
        for (const bad of ['', 'abc', '-1', '-67', '1.5', ' 1', '9223372036854775808', '-9223372036854775808']) {
          const error = await expectFailure(c.list({ pageToken: bad }), INVALID);
          expect(error.serverMessage).toContain('Invalid page token');
        }
        // With page_size 0 the reference answers before looking at the token.
        expect((await c.list({ pageToken: 'abc', pageSize: 0 })).keys).toEqual([]);
      });

      it('page_size above 100 is capped at 100', async () => {
        const c = newClient();
        await c.put(undefined, Array.from({ length: 150 }, (_, i) => ({ key: `k${i}`, version: 0n, value: 'v' })));
        for (const pageSize of [101, 1000, 2 ** 31 - 1]) {
          const page = await c.list({ pageSize });
          expect(page.keys).toHaveLength(100);
          expect(page.nextPageToken).not.toBe('');
        }
      });

      it('1000 items per PutObjects are accepted, 1001 are refused', async () => {
        const c = newClient();
        await c.put(0n, Array.from({ length: 1000 }, (_, i) => ({ key: `k${i}`, version: 0n, value: 'v' })));
        await c.put(undefined, [{ key: 'extra', version: 0n, value: 'v' }], Array.from({ length: 999 }, (_, i) => ({ key: `k${i}`, version: 1n })));
        expect((await c.list()).keys.map((k) => k.key)).toEqual(['extra', 'k999']);
        const error = await expectFailure(
          c.put(undefined, Array.from({ length: 1001 }, (_, i) => ({ key: `n${i}`, version: 0n, value: 'v' }))),
          INVALID,
        );
        expect(error.serverMessage).toBe('Number of write items per request should be less than equal to 1000');
        await expectFailure(c.put(undefined, [{ key: 'x', version: 0n }], Array.from({ length: 1000 }, (_, i) => ({ key: `d${i}`, version: -1n }))), INVALID);
      });
    });

    describe('concurrency', () => {
      it('concurrent creates of one key: exactly one wins, the rest conflict', async () => {
        const c = newClient();
        const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => c.put(undefined, [{ key: 'race', version: 0n, value: `w${i}` }])));
        expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
        for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toMatchObject(CONFLICT);
        expect((await c.get('race')).version).toBe(1n);
      });

      it('compare-and-set increments from concurrent writers are never lost', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'counter', version: 0n, value: '0' }]);
        let successes = 0;
        await Promise.all(
          Array.from({ length: 6 }, async () => {
            for (let round = 0; round < 5; round++) {
              const current = await c.get('counter');
              const next = String(Number(str(current.value)) + 1);
              try {
                // Multi-item requests (with the global version) take the transactional path.
                await c.put(undefined, [{ key: 'counter', version: current.version, value: next }, { key: `log-${current.version}`, version: -1n, value: next }]);
                successes++;
              } catch (error) {
                expect(error).toMatchObject(CONFLICT);
              }
            }
          }),
        );
        const final = await c.get('counter');
        expect(successes).toBeGreaterThan(0);
        expect(final.version).toBe(BigInt(1 + successes));
        expect(str(final.value)).toBe(String(successes));
      });

      it('a rolled-back transaction does not take concurrent single-item writes with it', async () => {
        const c = newClient();
        await c.put(undefined, [{ key: 'exists', version: 0n, value: 'v' }]);
        const writes = Array.from({ length: 20 }, (_, i) => c.put(undefined, [{ key: `single-${i}`, version: -1n, value: 'v' }]));
        const failing = Array.from({ length: 5 }, (_, i) =>
          c.put(undefined, [{ key: `tx-${i}-a`, version: 0n, value: 'v' }, { key: 'exists', version: 0n, value: 'conflict' }]).then(
            () => 'committed',
            // Rolled back because of the conflict, not failed for some other reason.
            (error: unknown) => (error instanceof VssHttpError && error.status === CONFLICT.status && error.code === CONFLICT.code ? 'rolled back' : String(error)),
          ),
        );
        await Promise.all(writes);
        expect(await Promise.all(failing)).toEqual(Array(5).fill('rolled back'));
        for (let i = 0; i < 20; i++) expect((await c.get(`single-${i}`)).version).toBe(1n);
        for (let i = 0; i < 5; i++) await expectFailure(c.get(`tx-${i}-a`), NO_SUCH_KEY);
      });
    });

    describe('deliberate improvements over the reference', () => {
      it('key_prefix is matched literally: _ % and \\ are not wildcards', async () => {
        const c = newClient();
        const keys = ['pfx_a', 'pfxAb', 'p%x', 'pAx', 'a\\b', 'a\\', 'aXb', '_u', 'xu'];
        await c.put(undefined, keys.map((key) => ({ key, version: 0n, value: 'v' })));
        const list = async (keyPrefix: string) => (await c.list({ keyPrefix })).keys.map((k) => k.key).sort();
        expect(await list('pfx_')).toEqual(['pfx_a']);
        expect(await list('p%')).toEqual(['p%x']);
        expect(await list('a\\')).toEqual(['a\\', 'a\\b']);
        expect(await list('_')).toEqual(['_u']);
        expect(await list('%')).toEqual([]);
      });

      it('keys of exactly 600 characters work (ldk-node) and longer ones are refused with 400', async () => {
        const c = newClient();
        const key600 = 'A'.repeat(600);
        await c.put(undefined, [{ key: key600, version: 0n, value: 'v' }]);
        await expectRecord(c, key600, 1n, 'v');
        // Characters, not bytes or UTF-16 units: 600 astral characters are 1200 UTF-16 units.
        const astral600 = '😀'.repeat(600);
        await c.put(undefined, [{ key: astral600, version: -1n, value: 'v' }]);
        await expectRecord(c, astral600, 1n, 'v');
        for (const key of ['A'.repeat(601), '😀'.repeat(601), `${'A'.repeat(600)} `]) {
          const error = await expectFailure(c.put(undefined, [{ key, version: 0n, value: 'v' }]), INVALID);
          expect(error.serverMessage).toContain('600');
          await expectFailure(c.get(key), INVALID);
          await expectFailure(c.delete(key, -1n), INVALID);
          await expectFailure(c.put(undefined, [], [{ key, version: -1n }]), INVALID);
        }
      });

      it('store ids longer than 120 characters are refused with 400; 120 work', async () => {
        const identity = newIdentity();
        const ok = new TestClient(server.url, 's'.repeat(120), () => identity.header());
        await ok.put(0n, [{ key: 'k', version: 0n, value: 'v' }]);
        await expectRecord(ok, 'k', 1n, 'v');
        const tooLong = ok.withStore('s'.repeat(121));
        await expectFailure(tooLong.put(undefined, [{ key: 'k', version: 0n, value: 'v' }]), INVALID);
        await expectFailure(tooLong.get('k'), INVALID);
        await expectFailure(tooLong.delete('k', -1n), INVALID);
        await expectFailure(tooLong.list(), INVALID);
      });

      it('NUL characters in store id, key or prefix are refused with 400', async () => {
        const c = newClient('nul-test');
        await expectFailure(c.put(undefined, [{ key: 'a\0b', version: 0n, value: 'v' }]), INVALID);
        await expectFailure(c.get('a\0b'), INVALID);
        await expectFailure(c.delete('\0', -1n), INVALID);
        await expectFailure(c.list({ keyPrefix: '\0' }), INVALID);
        await expectFailure(c.withStore('s\0').get('k'), INVALID);
      });

      it('negative page sizes are refused with 400', async () => {
        const c = newClient();
        for (const pageSize of [-1, -2, -(2 ** 31)]) await expectFailure(c.list({ pageSize }), INVALID);
      });

      it('duplicate keys within one PutObjects are refused with 400 and change nothing', async () => {
        const c = newClient();
        await c.put(0n, [{ key: 'k', version: 0n, value: 'v' }]);
        await expectFailure(c.put(undefined, [{ key: 'n', version: 0n, value: 'a' }, { key: 'n', version: 1n, value: 'b' }]), INVALID);
        await expectFailure(c.put(undefined, [{ key: 'n', version: 0n, value: 'a' }], [{ key: 'n', version: 1n }]), INVALID);
        await expectFailure(c.put(undefined, [], [{ key: 'k', version: 1n }, { key: 'k', version: -1n }]), INVALID);
        const error = await expectFailure(c.put(1n, [{ key: GLOBAL_VERSION_KEY, version: -1n, value: '' }]), INVALID);
        expect(error.serverMessage).toContain('global');
        await expectFailure(c.get('n'), NO_SUCH_KEY);
        await expectRecord(c, 'k', 1n, 'v');
        expect(await globalVersion(c)).toBe(1n);
      });
    });
  });
}
