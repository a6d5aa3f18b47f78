/**
 * VssStore against the real server (in-process, noop auth) on PGlite, and on PostgreSQL when
 * TEST_DATABASE_URL is set: LDK's KVStore contract, LDK Node byte compatibility (V1 and V0),
 * ordering, conditional writes, ambiguous writes, fail-closed open and tampering.
 */
import { describe, expect, it } from 'vitest';
import { ConflictError, type FetchFunction } from '../../src/client/index.js';
import { decryptStorable, deriveVssKeys, encryptStorable } from '../../src/crypto/index.js';
import { int64ToBigInt, keyValue } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';
import {
  ConcurrentWriterError,
  DataIntegrityError,
  InvalidKeyError,
  InvalidValueError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
  StoreError,
  StoreIOError,
  StoreOpenError,
  VssStore,
} from '../../src/store/index.js';
import { STORE_TEST_BACKENDS, useStoreServer, type TestBackend } from './helpers/backends.js';
import { MemoryLedger } from './helpers/memory-ledger.js';
import { LdkNodeStoreWriter, rawListing } from './helpers/ldk-node-store.js';
import { SPEC_MONITOR as MONITOR, SPEC_SEED as SEED, V1_MANAGER, V1_MONITOR, V1_SCHEMA_KEY } from './helpers/vectors.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const FAST_RETRY = { baseDelayMs: 1, maxAttempts: 3, maxTotalDelayMs: 100, maxJitterMs: 0 };

/** Counts requests per operation on the way to the server. */
function countingFetch(): { fetch: FetchFunction; counts: Record<string, number> } {
  const counts: Record<string, number> = {};
  const fetchFn: FetchFunction = (url, init) => {
    const op = url.slice(url.lastIndexOf('/') + 1);
    counts[op] = (counts[op] ?? 0) + 1;
    return fetch(url, init);
  };
  return { fetch: fetchFn, counts };
}

function storeSuite(backend: TestBackend): void {
  const fx = useStoreServer(backend, SEED, FAST_RETRY, 'store-test');
  const { newStoreId, open } = fx;

  describe('LDK KVStore contract', () => {
    it('writes, reads, lists and removes, including the root namespace', async () => {
      const store = await open(newStoreId());
      await store.write('ns', 'sub', 'k1', bytes('v1'));
      await store.write('', '', 'root', bytes('r'));
      expect(text(await store.read('ns', 'sub', 'k1'))).toBe('v1');
      expect(text(await store.read('', '', 'root'))).toBe('r');
      expect(await store.list('ns', 'sub')).toEqual(['k1']);
      expect(await store.list('', '')).toEqual(['root']); // the schema marker is internal
      await store.write('ns', 'sub', 'k1', bytes('v2'));
      expect(text(await store.read('ns', 'sub', 'k1'))).toBe('v2');
      await store.remove('ns', 'sub', 'k1', false);
      expect(await store.list('ns', 'sub')).toEqual([]);
      const missing = await store.read('ns', 'sub', 'k1').catch((e) => e);
      expect(missing).toBeInstanceOf(KeyNotFoundError);
      expect([missing.primaryNamespace, missing.secondaryNamespace, missing.key]).toEqual(['ns', 'sub', 'k1']);
      // Removing a missing key is not an error.
      await store.remove('ns', 'sub', 'never-written', false);
      await store.close();
    });

    it('rejects keys LDK rejects, with InvalidKeyError and nothing sent', async () => {
      const { fetch, counts } = countingFetch();
      const store = await open(newStoreId(), { clientRuntime: { fetch } });
      const before = { ...counts };
      await expect(store.write('', 'sub', 'k', bytes('x'))).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(store.write('ns', '', '', bytes('x'))).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(store.read('ns', '', 'a#b')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(store.remove('ns', '', 'k'.repeat(121), false)).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(store.list('', 'sub')).rejects.toBeInstanceOf(InvalidKeyError);
      expect(counts).toEqual(before);
      await store.close();
    });

    it('refuses values that are not a Uint8Array with InvalidValueError, before anything is queued, sent or recorded', async () => {
      const { fetch, counts } = countingFetch();
      const ledger = new MemoryLedger();
      const store = await open(newStoreId(), { clientRuntime: { fetch }, versionLedger: ledger });
      await store.write('ns', '', 'kept', bytes('v1'));
      const before = { ...counts };
      const versions = new Map(ledger.versions);
      const records = ledger.records;
      // Copied before this check, a string became zeros and numbers wrapped at 256, stored silently.
      for (const bad of ['v2', [118, 50], 300, null, undefined, new Uint16Array([1]), new ArrayBuffer(2)]) {
        const err = await store.write('ns', '', 'kept', bad as unknown as Uint8Array).catch((e: unknown) => e);
        expect(err, String(bad)).toBeInstanceOf(InvalidValueError);
        expect(err).toBeInstanceOf(StoreError);
        expect((err as Error).message).toMatch(/the value for \["ns","","kept"\] must be a Uint8Array/);
        // One bad entry refuses the whole batch, good entries included.
        const batch = store.writeBatch([
          { primaryNamespace: 'ns', secondaryNamespace: '', key: 'other', value: bytes('fine') },
          { primaryNamespace: 'ns', secondaryNamespace: '', key: 'kept', value: bad as unknown as Uint8Array },
        ]);
        await expect(batch).rejects.toBeInstanceOf(InvalidValueError);
      }
      await expect(store.writeBatch('nope' as unknown as [])).rejects.toBeInstanceOf(InvalidValueError);
      expect(counts).toEqual(before);
      expect(ledger.versions).toEqual(versions);
      expect(ledger.records).toBe(records);
      await store.flush();
      // Nothing changed, and the key is not left uncertain: the next write is a plain one.
      expect(text(await store.read('ns', '', 'kept'))).toBe('v1');
      await expect(store.read('ns', '', 'other')).rejects.toBeInstanceOf(KeyNotFoundError);
      await store.write('ns', '', 'kept', Buffer.from('v3')); // a Node Buffer is a Uint8Array
      expect(text(await store.read('ns', '', 'kept'))).toBe('v3');
      expect(counts.getObject ?? 0).toBe((before.getObject ?? 0) + 3); // only the three reads above
      expect(counts.putObjects).toBe(before.putObjects + 1); // only the Buffer write
      await store.close();
    });

    it('reserves the schema marker\'s address: no write, batch, remove or read of it, and the store still opens', async () => {
      const storeId = newStoreId();
      const { fetch, counts } = countingFetch();
      const store = await open(storeId, { clientRuntime: { fetch } });
      const before = { ...counts };
      await expect(store.write('', '', 'vss_schema_version', bytes('x'))).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(store.writeBatch([{ primaryNamespace: '', secondaryNamespace: '', key: 'vss_schema_version', value: bytes('x') }])).rejects.toBeInstanceOf(
        InvalidKeyError,
      );
      await expect(store.remove('', '', 'vss_schema_version', false)).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(store.read('', '', 'vss_schema_version')).rejects.toThrow(/reserved for the store's schema marker/);
      expect(counts).toEqual(before);
      // The same key in another namespace is an ordinary key.
      await store.write('ns', '', 'vss_schema_version', bytes('ordinary'));
      await store.close();
      const reopened = await open(storeId);
      expect(text(await reopened.read('ns', '', 'vss_schema_version'))).toBe('ordinary');
      await reopened.close();
    });

    it('handles 120-character namespaces and keys, empty and 1 MiB values', async () => {
      const store = await open(newStoreId());
      const [p, s, k] = ['A'.repeat(120), 'B'.repeat(120), 'C'.repeat(120)];
      await store.write(p, s, k, bytes('long'));
      expect(text(await store.read(p, s, k))).toBe('long');
      expect(await store.list(p, s)).toEqual([k]);
      await store.write('v', '', 'empty', new Uint8Array());
      expect(await store.read('v', '', 'empty')).toEqual(new Uint8Array());
      const big = new Uint8Array(1 << 20).map((_, i) => (i * 7) % 251);
      await store.write('v', '', 'big', big);
      expect(await store.read('v', '', 'big')).toEqual(big);
      await store.close();
    });

    it('keeps namespaces apart and lists across server pages', async () => {
      const store = await open(newStoreId());
      await store.write('ns_a', 'sub', 'x', bytes('a'));
      await store.write('ns_b', 'sub', 'x', bytes('b'));
      await store.write('ns_a', 'sub2', 'y', bytes('c'));
      await store.write('ns_a', '', 'z', bytes('d'));
      expect(await store.list('ns_a', 'sub')).toEqual(['x']);
      expect(await store.list('ns_b', 'sub')).toEqual(['x']);
      expect(await store.list('ns_a', 'sub2')).toEqual(['y']);
      expect(await store.list('ns_a', '')).toEqual(['z']);
      const expected: string[] = [];
      await Promise.all(
        Array.from({ length: 130 }, (_, i) => {
          const key = `key_${String(i).padStart(4, '0')}`;
          expected.push(key);
          return store.write('paged', '', key, bytes(String(i)));
        }),
      );
      const listed = await store.list('paged', '');
      expect(listed).toHaveLength(130);
      expect([...listed].sort()).toEqual(expected.sort());
      await store.close();
    });

    it('listAll returns exactly the written addresses, without the schema marker', async () => {
      const store = await open(newStoreId());
      await store.write('', '', 'manager', bytes('m'));
      await store.write('monitors', '', MONITOR, bytes('mon'));
      await store.write('monitor_updates', MONITOR, '42', bytes('u'));
      const all = await store.listAll();
      const sortKey = (k: { primaryNamespace: string; secondaryNamespace: string; key: string }) => `${k.primaryNamespace}/${k.secondaryNamespace}/${k.key}`;
      expect(all.map(sortKey).sort()).toEqual(['//manager', `monitor_updates/${MONITOR}/42`, `monitors//${MONITOR}`].sort());
      await store.close();
    });

    it('applies writes of one key in call order; queued writes are superseded and all callers resolve', async () => {
      const { fetch, counts } = countingFetch();
      const store = await open(newStoreId(), { clientRuntime: { fetch } });
      const putsBefore = counts.putObjects ?? 0;
      const writes = Array.from({ length: 50 }, (_, i) => store.write('ord', '', 'k', bytes(`v${i}`)));
      await Promise.all(writes);
      expect(text(await store.read('ord', '', 'k'))).toBe('v49');
      const puts = (counts.putObjects ?? 0) - putsBefore;
      expect(puts).toBeGreaterThanOrEqual(1);
      expect(puts).toBeLessThan(50);
      // A remove between writes is ordered too.
      const a = store.write('ord', '', 'r', bytes('a'));
      const b = store.remove('ord', '', 'r', false);
      const c = store.write('ord', '', 'r', bytes('c'));
      await Promise.all([a, b, c]);
      expect(text(await store.read('ord', '', 'r'))).toBe('c');
      await store.write('ord', '', 'r', bytes('d'));
      await store.remove('ord', '', 'r', false);
      await expect(store.read('ord', '', 'r')).rejects.toBeInstanceOf(KeyNotFoundError);
      await store.close();
    });

    it('lazy removes return at once and are done after flush; a closed store refuses work', async () => {
      const store = await open(newStoreId());
      await store.write('lazy', '', 'k', bytes('x'));
      await store.remove('lazy', '', 'k', true);
      await store.flush();
      expect(await store.list('lazy', '')).toEqual([]);
      await store.close();
      await expect(store.read('lazy', '', 'k')).rejects.toBeInstanceOf(StoreClosedError);
      await expect(store.write('lazy', '', 'k', bytes('x'))).rejects.toBeInstanceOf(StoreClosedError);
    });
  });

  describe('LDK Node compatibility', () => {
    it('writes the V1 layout byte for byte: spec key vectors, marker 01 00 under AAD = key', async () => {
      const storeId = newStoreId();
      const store = await open(storeId);
      expect(store.schemaVersion).toBe(1);
      await store.write('', '', 'manager', bytes('manager bytes'));
      await store.write('monitors', '', MONITOR, bytes('monitor bytes'));
      const listing = await rawListing(fx.raw, storeId);
      expect([...listing.keys()].sort()).toEqual([V1_MANAGER, V1_MONITOR, V1_SCHEMA_KEY].sort());
      const marker = await fx.raw.getObject({ storeId, key: V1_SCHEMA_KEY });
      const { dataEncryptionKey } = deriveVssKeys(SEED);
      expect(decryptStorable(marker.value!.value!, dataEncryptionKey, bytes(V1_SCHEMA_KEY)).value).toEqual(new Uint8Array([1, 0]));
      const manager = await fx.raw.getObject({ storeId, key: V1_MANAGER });
      expect(text(decryptStorable(manager.value!.value!, dataEncryptionKey, bytes(V1_MANAGER)).value)).toBe('manager bytes');
      await store.close();
    });

    it('reads a V1 store written by LDK Node (unconditional writes, sealed version -1)', async () => {
      const storeId = newStoreId();
      const node = new LdkNodeStoreWriter(fx.raw, storeId, SEED, 1);
      await node.writeMarker();
      await node.write('', '', 'manager', bytes('mgr'));
      await node.write('monitors', '', MONITOR, bytes('mon'));
      await node.write('bdk_wallet', '', 'descriptor', bytes('wpkh(...)'));
      await node.write('payments', '', 'ab'.repeat(32), bytes('pay'));
      const store = await open(storeId);
      expect(store.schemaVersion).toBe(1);
      expect(text(await store.read('', '', 'manager'))).toBe('mgr');
      expect(text(await store.read('monitors', '', MONITOR))).toBe('mon');
      expect(await store.list('payments', '')).toEqual(['ab'.repeat(32)]);
      expect((await store.listAll()).length).toBe(4);
      // Our conditional writes continue from the versions the node left (1).
      await store.write('monitors', '', MONITOR, bytes('mon2'));
      expect((await rawListing(fx.raw, storeId)).get(V1_MONITOR)).toBe(2n);
      await store.close();
    });

    it('reads and writes a V0 store (ldk-node ≤ 0.6): plaintext namespaces, empty AAD, no marker', async () => {
      const storeId = newStoreId();
      const node = new LdkNodeStoreWriter(fx.raw, storeId, SEED, 0);
      await node.write('bdk_wallet', '', 'descriptor', bytes('wpkh(...)'));
      await node.write('', '', 'manager', bytes('mgr'));
      await node.write('monitors', '', MONITOR, bytes('mon'));
      await node.write('monitor_updates', MONITOR, '7', bytes('upd'));
      const store = await open(storeId);
      expect(store.schemaVersion).toBe(0);
      expect(text(await store.read('', '', 'manager'))).toBe('mgr');
      expect(text(await store.read('monitors', '', MONITOR))).toBe('mon');
      expect(await store.list('monitor_updates', MONITOR)).toEqual(['7']);
      expect(await store.list('', '')).toEqual(['manager']);
      expect((await store.listAll()).map((k) => k.key).sort()).toEqual(['7', 'descriptor', 'manager', MONITOR].sort());
      await store.write('payments', '', 'cafe', bytes('p'));
      const listing = await rawListing(fx.raw, storeId);
      expect(listing.has(node.storeKey('payments', '', 'cafe'))).toBe(true);
      expect(listing.has(V1_SCHEMA_KEY)).toBe(false); // a V0 store stays V0
      await store.close();
      const reopened = await open(storeId);
      expect(reopened.schemaVersion).toBe(0);
      expect(text(await reopened.read('payments', '', 'cafe'))).toBe('p');
      await reopened.close();
    });

    it('opens a V0 store whose marker says V0 (00 00 at the V1 address)', async () => {
      const storeId = newStoreId();
      const node = new LdkNodeStoreWriter(fx.raw, storeId, SEED, 0);
      await node.writeMarker();
      await node.write('bdk_wallet', '', 'descriptor', bytes('wpkh(...)'));
      const store = await open(storeId);
      expect(store.schemaVersion).toBe(0);
      expect(text(await store.read('bdk_wallet', '', 'descriptor'))).toBe('wpkh(...)');
      expect((await store.listAll()).map((k) => k.key)).toEqual(['descriptor']);
      await store.close();
    });

    it('unconditional mode behaves like LDK Node: version -1 writes, last writer wins', async () => {
      const storeId = newStoreId();
      const a = await open(storeId, { writeMode: 'unconditional' });
      const b = await open(storeId, { writeMode: 'unconditional' });
      await a.write('', '', 'manager', bytes('a'));
      await b.write('', '', 'manager', bytes('b'));
      await a.write('', '', 'manager', bytes('a2'));
      expect(text(await b.read('', '', 'manager'))).toBe('a2');
      expect((await rawListing(fx.raw, storeId)).get(V1_MANAGER)).toBe(1n);
      await a.close();
      await b.close();
    });
  });

  /** What a new instance of the store sees: the key is not on the server. */
  async function expectAbsentOnServer(storeId: string, primaryNamespace: string, key: string): Promise<void> {
    const fresh = await open(storeId);
    await expect(fresh.read(primaryNamespace, '', key)).rejects.toBeInstanceOf(KeyNotFoundError);
    await fresh.close();
  }

  /** Two instances of one store: `a` writes the key, then `b` reads it and writes it again. */
  async function changedBehindTheBackOfA(namespace: string, key: string, aValue: string, bValue: string): Promise<{ a: VssStore; b: VssStore }> {
    const storeId = newStoreId();
    const a = await open(storeId);
    const b = await open(storeId);
    await a.write(namespace, '', key, bytes(aValue));
    await b.read(namespace, '', key);
    await b.write(namespace, '', key, bytes(bValue));
    return { a, b };
  }

  describe('conditional writes and concurrent writers', () => {
    it('a second instance writing behind the first one\'s back makes the first fail, never overwrite', async () => {
      const storeId = newStoreId();
      const { fetch, counts } = countingFetch();
      const first = await open(storeId, { clientRuntime: { fetch } });
      await first.write('', '', 'manager', bytes('first v1'));
      const second = await open(storeId);
      await second.write('', '', 'manager', bytes('second v2'));
      const error = await first.write('', '', 'manager', bytes('first v2')).catch((e) => e);
      expect(error).toBeInstanceOf(ConcurrentWriterError);
      expect(error.cause).toBeInstanceOf(ConflictError);
      expect(text(await second.read('', '', 'manager'))).toBe('second v2');
      // Until it reads the key, the first instance fails fast without sending anything.
      const puts = counts.putObjects;
      await expect(first.write('', '', 'manager', bytes('again'))).rejects.toBeInstanceOf(ConcurrentWriterError);
      expect(counts.putObjects).toBe(puts);
      // Reading adopts the other writer's version; a deliberate write then succeeds.
      expect(text(await first.read('', '', 'manager'))).toBe('second v2');
      await first.write('', '', 'manager', bytes('first v3'));
      expect(text(await second.read('', '', 'manager'))).toBe('first v3');
      await first.close();
      await second.close();
    });

    it('a remove behind another writer\'s back is a conflict too, and so is a racing create', async () => {
      const { a, b } = await changedBehindTheBackOfA('m', 'k', 'a', 'b');
      await expect(a.remove('m', '', 'k', false)).rejects.toBeInstanceOf(ConcurrentWriterError);
      expect(text(await b.read('m', '', 'k'))).toBe('b');
      const results = await Promise.allSettled([a.write('m', '', 'new', bytes('a')), b.write('m', '', 'new', bytes('b'))]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason).toBeInstanceOf(ConcurrentWriterError);
      await a.close();
      await b.close();
    });

    it('removing a key another writer created after open is a conflict; removing an absent key is a no-op', async () => {
      const storeId = newStoreId();
      const { fetch, counts } = countingFetch();
      const a = await open(storeId, { clientRuntime: { fetch } });
      const b = await open(storeId);
      await b.write('m', '', 'theirs', bytes('b'));
      await expect(a.remove('m', '', 'theirs', false)).rejects.toBeInstanceOf(ConcurrentWriterError);
      expect(text(await b.read('m', '', 'theirs'))).toBe('b');
      // An absent key costs one read and nothing else.
      const before = { ...counts };
      await a.remove('m', '', 'never-written', false);
      expect(counts.getObject).toBe((before.getObject ?? 0) + 1);
      expect(counts.putObjects ?? 0).toBe(before.putObjects ?? 0);
      // Once read, the key is known and a deliberate remove goes through.
      expect(text(await a.read('m', '', 'theirs'))).toBe('b');
      await a.remove('m', '', 'theirs', false);
      await expectAbsentOnServer(storeId, 'm', 'theirs');
      await a.close();
      await b.close();
    });

    it('two instances creating the same empty store at once both open it', async () => {
      const storeId = newStoreId();
      let other: VssStore | undefined;
      // The other instance opens (and creates) the store between this one's marker read and its listing.
      const racing: FetchFunction = async (url, init) => {
        if (url.endsWith('/listKeyVersions') && !other) other = await open(storeId);
        return fetch(url, init);
      };
      const store = await open(storeId, { clientRuntime: { fetch: racing } });
      expect(other?.schemaVersion).toBe(1);
      expect(store.schemaVersion).toBe(1);
      await store.write('', '', 'manager', bytes('m'));
      expect(text(await other!.read('', '', 'manager'))).toBe('m');
      await store.close();
      await other!.close();
    });

    it('an older attempt of ours that lands late is not mistaken for another writer', async () => {
      const storeId = newStoreId();
      // A put whose connection breaks after the request went out: the caller sees an error,
      // and the request reaches the server only later (here: just before the next put).
      let breakNextPut = false;
      let late: (() => Promise<Response>) | undefined;
      const delaying: FetchFunction = async (url, init) => {
        if (url.endsWith('/putObjects')) {
          if (breakNextPut) {
            breakNextPut = false;
            const { signal: _signal, ...rest } = init ?? {};
            late = () => fetch(url, rest);
            throw new TypeError('fetch failed: socket hang up');
          }
          if (late) {
            const deliver = late;
            late = undefined;
            await (await deliver()).arrayBuffer();
          }
        }
        return fetch(url, init);
      };
      const store = await open(storeId, { clientRuntime: { fetch: delaying }, client: { baseUrl: fx.url, retry: 'none' } });
      await store.write('late', '', 'k', bytes('v1'));
      breakNextPut = true;
      await expect(store.write('late', '', 'k', bytes('v2'))).rejects.toBeInstanceOf(StoreIOError);
      // The next write reads back (v2 not there yet), then v2 lands, then this put meets it.
      await store.write('late', '', 'k', bytes('v3'));
      expect(late).toBeUndefined();
      expect(text(await store.read('late', '', 'k'))).toBe('v3');
      const lateKey = new LdkNodeStoreWriter(fx.raw, storeId, SEED, 1).storeKey('late', '', 'k');
      expect((await rawListing(fx.raw, storeId)).get(lateKey)).toBe(3n);
      // The same for a batch, and a real other writer is still caught afterwards.
      breakNextPut = true;
      await expect(store.writeBatch([{ primaryNamespace: 'late', secondaryNamespace: '', key: 'k', value: bytes('v4') }])).rejects.toBeInstanceOf(StoreIOError);
      await store.writeBatch([{ primaryNamespace: 'late', secondaryNamespace: '', key: 'k', value: bytes('v5') }]);
      expect(text(await store.read('late', '', 'k'))).toBe('v5');
      const other = await open(storeId);
      await other.read('late', '', 'k');
      await other.write('late', '', 'k', bytes('theirs'));
      await expect(store.write('late', '', 'k', bytes('v6'))).rejects.toBeInstanceOf(ConcurrentWriterError);
      await store.close();
      await other.close();
    });

    it('removing a key whose create of ours failed but landed late removes it (not a false conflict)', async () => {
      const storeId = newStoreId();
      let breakNextPut = false;
      let late: (() => Promise<Response>) | undefined;
      let gets = 0;
      const delaying: FetchFunction = async (url, init) => {
        if (url.endsWith('/putObjects') && breakNextPut) {
          breakNextPut = false;
          const { signal: _signal, ...rest } = init ?? {};
          late = () => fetch(url, rest);
          throw new TypeError('fetch failed: socket hang up');
        }
        // The first read settles the failed create (not there yet); the create lands before the second.
        if (url.endsWith('/getObject') && ++gets === 2 && late) {
          await (await late()).arrayBuffer();
          late = undefined;
        }
        return fetch(url, init);
      };
      const store = await open(storeId, { clientRuntime: { fetch: delaying }, client: { baseUrl: fx.url, retry: 'none' } });
      breakNextPut = true;
      await expect(store.write('late', '', 'new', bytes('v1'))).rejects.toBeInstanceOf(StoreIOError);
      await store.remove('late', '', 'new', false);
      expect(late).toBeUndefined();
      await expectAbsentOnServer(storeId, 'late', 'new');
      await store.close();
    });

    it('a batch whose reply was lost leaves every key uncertain, even when reading one of them back fails', async () => {
      const storeId = newStoreId();
      let loseReply = false;
      let getsAllowed = Infinity;
      const flaky: FetchFunction = async (url, init) => {
        if (url.endsWith('/putObjects') && loseReply) {
          loseReply = false;
          await (await fetch(url, init)).arrayBuffer(); // committed, reply lost; the retry meets 409
          throw new TypeError('fetch failed: socket hang up');
        }
        if (url.endsWith('/getObject') && getsAllowed-- <= 0) throw new TypeError('fetch failed: ECONNRESET');
        return fetch(url, init);
      };
      const store = await open(storeId, { clientRuntime: { fetch: flaky } });
      const batch = (v: string) => ['k1', 'k2', 'k3'].map((key) => ({ primaryNamespace: 'b', secondaryNamespace: '', key, value: bytes(v) }));
      await store.writeBatch(batch('a'));
      loseReply = true;
      getsAllowed = 1; // k1 reads back, k2's read-back fails
      await expect(store.writeBatch(batch('b'))).rejects.toBeInstanceOf(StoreIOError);
      getsAllowed = Infinity;
      // k3 was never read back: it must still be settled by reading, not taken for a conflict.
      await store.write('b', '', 'k3', bytes('c'));
      await store.write('b', '', 'k2', bytes('c'));
      expect(text(await store.read('b', '', 'k3'))).toBe('c');
      await store.close();
    });

    it('a late attempt never excuses a conflict once the key moved on: another writer\'s delete stays a conflict', async () => {
      const storeId = newStoreId();
      let failNextPut = false;
      const failing: FetchFunction = async (url, init) => {
        if (url.endsWith('/putObjects') && failNextPut) {
          failNextPut = false;
          throw new TypeError('fetch failed: socket hang up'); // outcome unknown (never sent here)
        }
        return fetch(url, init);
      };
      const a = await open(storeId, { clientRuntime: { fetch: failing }, client: { baseUrl: fx.url, retry: 'none' } });
      const b = await open(storeId);
      await a.write('m', '', 'k', bytes('a1'));
      failNextPut = true;
      await expect(a.remove('m', '', 'k', false)).rejects.toBeInstanceOf(StoreIOError);
      failNextPut = true;
      await expect(a.write('m', '', 'k', bytes('a2'))).rejects.toBeInstanceOf(StoreIOError); // reads back: not committed
      await b.read('m', '', 'k');
      await b.write('m', '', 'k', bytes('b2'));
      expect(text(await a.read('m', '', 'k'))).toBe('b2');
      await b.remove('m', '', 'k', false);
      // a's old attempts expected version 1; the key has moved on twice since: this is b's doing.
      await expect(a.write('m', '', 'k', bytes('a3'))).rejects.toBeInstanceOf(ConcurrentWriterError);
      await expectAbsentOnServer(storeId, 'm', 'k');
      await a.close();
      await b.close();
    });

    it('a listing adopts no versions: a stale write after list or listAll still fails, before and after a conflict', async () => {
      const { a, b } = await changedBehindTheBackOfA('chan', 'k', 'a1', 'b2');
      // A listing shows the key at b's version; a never read it, so its next write is stale.
      expect(await a.list('chan', '')).toEqual(['k']);
      expect(await a.listAll()).toEqual([{ primaryNamespace: 'chan', secondaryNamespace: '', key: 'k' }]);
      await expect(a.write('chan', '', 'k', bytes('a stale'))).rejects.toBeInstanceOf(ConcurrentWriterError);
      // Once conflicted, a listing does not lift the conflict either; only a read does.
      await a.list('chan', '');
      await expect(a.write('chan', '', 'k', bytes('a stale again'))).rejects.toBeInstanceOf(ConcurrentWriterError);
      expect(text(await b.read('chan', '', 'k'))).toBe('b2');
      expect(text(await a.read('chan', '', 'k'))).toBe('b2');
      await a.write('chan', '', 'k', bytes('a3'));
      expect(text(await b.read('chan', '', 'k'))).toBe('a3');
      await a.close();
      await b.close();
    });

    it('a listing that shows a key older than this store last saw is a rollback', async () => {
      const storeId = newStoreId();
      const a = await open(storeId);
      await a.write('chan', '', 'k', bytes('v1'));
      await a.write('chan', '', 'k', bytes('v2'));
      // Behind the store's back the key goes back to version 1 (a restored server snapshot).
      const b = await open(storeId, { writeMode: 'unconditional' });
      await b.write('chan', '', 'k', bytes('old'));
      await expect(a.list('chan', '')).rejects.toBeInstanceOf(RollbackDetectedError);
      await a.close();
      await b.close();
    });

    it('a write whose reply was lost is settled by reading back, not by guessing', async () => {
      const storeId = newStoreId();
      let dropReplies = 0;
      const lossy: FetchFunction = async (url, init) => {
        const response = await fetch(url, init);
        if (url.endsWith('/putObjects') && dropReplies > 0) {
          dropReplies -= 1;
          await response.arrayBuffer(); // the server committed; the reply is lost
          throw new TypeError('fetch failed: socket hang up');
        }
        return response;
      };
      const store = await open(storeId, { clientRuntime: { fetch: lossy } });
      // 1. The first reply is lost, the retry meets 409: the read-back proves our write committed.
      dropReplies = 1;
      await store.write('amb', '', 'k', bytes('mine'));
      expect(text(await store.read('amb', '', 'k'))).toBe('mine');
      // 2. Every reply of a write is lost: the write fails (outcome unknown) ...
      dropReplies = 3;
      await expect(store.write('amb', '', 'k', bytes('second'))).rejects.toBeInstanceOf(StoreIOError);
      // ... and the next write first reads back, finds our value committed, and continues.
      await store.write('amb', '', 'k', bytes('third'));
      expect(text(await store.read('amb', '', 'k'))).toBe('third');
      await store.close();
      const other = await open(storeId);
      expect(text(await other.read('amb', '', 'k'))).toBe('third');
      await other.close();
    });
  });

  describe('fail-closed open and tampering', () => {
    it('refuses to open when the server is down', async () => {
      const down = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
      const url = down.url;
      await down.close();
      const error = await VssStore.open({ storeId: 's', client: { baseUrl: url, retry: 'none' }, keys: { seed: SEED } }).catch((e) => e);
      expect(error).toBeInstanceOf(StoreOpenError);
      expect(error.cause).toBeDefined();
    });

    it('refuses a store that is not empty but unreadable with these keys (wrong seed)', async () => {
      const storeId = newStoreId();
      const store = await open(storeId);
      await store.write('', '', 'manager', bytes('m'));
      await store.close();
      const error = await VssStore.open({ storeId, client: { baseUrl: fx.url }, keys: { seed: new Uint8Array(64).fill(1) } }).catch((e) => e);
      expect(error).toBeInstanceOf(StoreOpenError);
      expect(error.message).toMatch(/no schema marker readable/);
      // Same obfuscation key, wrong data key: the marker is found but does not decrypt.
      const keys = deriveVssKeys(SEED);
      const wrongData = await VssStore.open({
        storeId,
        client: { baseUrl: fx.url },
        keys: { obfuscationMasterKey: keys.obfuscationMasterKey, dataEncryptionKey: new Uint8Array(32).fill(3) },
      }).catch((e) => e);
      expect(wrongData).toBeInstanceOf(StoreOpenError);
      expect(wrongData.cause).toBeInstanceOf(DataIntegrityError);
    });

    it('refuses a tampered or unknown schema marker, and a V0 store under a wrong key', async () => {
      const storeId = newStoreId();
      await (await open(storeId)).close();
      const marker = await fx.raw.getObject({ storeId, key: V1_SCHEMA_KEY });
      const tampered = Uint8Array.from(marker.value!.value!);
      tampered[4] ^= 1;
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_SCHEMA_KEY, -1n, tampered)] });
      const e1 = await open(storeId).catch((e) => e);
      expect(e1).toBeInstanceOf(StoreOpenError);
      expect(e1.cause).toBeInstanceOf(DataIntegrityError);

      const unknown = encryptStorable(new Uint8Array([2, 0]), -1n, deriveVssKeys(SEED).dataEncryptionKey, { aad: bytes(V1_SCHEMA_KEY) });
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_SCHEMA_KEY, -1n, unknown)] });
      const e2 = await open(storeId).catch((e) => e);
      expect(e2).toBeInstanceOf(StoreOpenError);
      expect(String(e2.message)).toMatch(/schema/);

      const v0 = newStoreId();
      await new LdkNodeStoreWriter(fx.raw, v0, new Uint8Array(64).fill(5), 0).write('bdk_wallet', '', 'descriptor', bytes('d'));
      const e3 = await open(v0).catch((e) => e);
      expect(e3).toBeInstanceOf(StoreOpenError);
      expect(e3.message).toMatch(/V0/);
    });

    it('refuses to treat a store with foreign keys and no marker as empty', async () => {
      const storeId = newStoreId();
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue('something-else', 0n, bytes('x'))] });
      await expect(open(storeId)).rejects.toBeInstanceOf(StoreOpenError);
      expect((await rawListing(fx.raw, storeId)).size).toBe(1); // nothing was written
    });

    it('reports tampered, moved and replayed values as DataIntegrityError or rollback', async () => {
      const storeId = newStoreId();
      const store = await open(storeId);
      await store.write('', '', 'manager', bytes('v1'));
      const v1 = (await fx.raw.getObject({ storeId, key: V1_MANAGER })).value!.value!;
      await store.write('', '', 'manager', bytes('v2'));
      await store.write('monitors', '', MONITOR, bytes('mon'));

      // Flipped bit.
      const current = (await fx.raw.getObject({ storeId, key: V1_MONITOR })).value!;
      const flipped = Uint8Array.from(current.value!);
      flipped[3] ^= 0x80;
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_MONITOR, int64ToBigInt(current.version), flipped)] });
      await expect(store.read('monitors', '', MONITOR)).rejects.toBeInstanceOf(DataIntegrityError);

      // A valid ciphertext moved to another key fails its AAD.
      const moved = (await fx.raw.getObject({ storeId, key: V1_MANAGER })).value!.value!;
      const monitorNow = (await fx.raw.getObject({ storeId, key: V1_MONITOR })).value!;
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_MONITOR, int64ToBigInt(monitorNow.version), moved)] });
      await expect(store.read('monitors', '', MONITOR)).rejects.toBeInstanceOf(DataIntegrityError);

      // The old value replayed under a newer version: its sealed version gives it away.
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_MANAGER, 2n, v1)] });
      const replayed = await store.read('', '', 'manager').catch((e) => e);
      expect(replayed).toBeInstanceOf(DataIntegrityError);
      expect(replayed.message).toMatch(/sealed for version 1 but is served as version 3/);

      // The old value restored with its old version: the key went back in time.
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_MANAGER, -1n, v1)] });
      const store2 = await open(storeId);
      await store2.write('', '', 'manager', bytes('x')); // store2 now knows version 2
      await fx.raw.putObjects({ storeId, transactionItems: [keyValue(V1_MANAGER, -1n, v1)] }); // back to version 1
      await expect(store2.read('', '', 'manager')).rejects.toBeInstanceOf(RollbackDetectedError);
      await store.close();
      await store2.close();
    });
  });
}

for (const backend of STORE_TEST_BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `VssStore on ${backend.label}${backend.skipReason ? ` — SKIPPED: ${backend.skipReason}` : ''}`,
    () => storeSuite(backend),
  );
}
