/**
 * VssStore.writeBatch against the real server (PGlite; PostgreSQL when TEST_DATABASE_URL is
 * set): several keys in one PutObjects transaction, all or nothing, with per-key conditional
 * versions, ordering against single writes, conflicts and lost replies settled by reading back.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConflictError, type FetchFunction } from '../../src/client/index.js';
import {
  ConcurrentWriterError,
  InvalidKeyError,
  KeyBusyError,
  KeyNotFoundError,
  StoreIOError,
  StoreLayout,
  VssStore,
  supportsAtomicBatch,
  type KeyValueWrite,
  type VersionChange,
  type VersionLedger,
} from '../../src/store/index.js';
import { KeyObfuscator, deriveVssKeys } from '../../src/crypto/index.js';
import { STORE_TEST_BACKENDS, useStoreServer, type TestBackend } from './helpers/backends.js';
import { rawListing } from './helpers/ldk-node-store.js';
import { startServerThread, type ServerThread } from './helpers/server-thread.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x2b);
const FAST_RETRY = { baseDelayMs: 1, maxAttempts: 3, maxTotalDelayMs: 100, maxJitterMs: 0 };
const layout = new StoreLayout(1, new KeyObfuscator(deriveVssKeys(SEED).obfuscationMasterKey));
const storeKey = (p: string, s: string, k: string) => layout.address(p, s, k).storeKey;

const w = (p: string, s: string, key: string, value: string): KeyValueWrite => ({ primaryNamespace: p, secondaryNamespace: s, key, value: bytes(value) });

/** Counts requests per operation; `beforePut` may act before a PutObjects is sent. */
function instrumentedFetch(): { fetch: FetchFunction; counts: Record<string, number>; onPut?: (attempt: number) => Promise<'send' | 'drop-reply' | 'fail-unsent'> } {
  const state: ReturnType<typeof instrumentedFetch> = {
    counts: {},
    fetch: async (url, init) => {
      const op = url.slice(url.lastIndexOf('/') + 1);
      state.counts[op] = (state.counts[op] ?? 0) + 1;
      const action = op === 'putObjects' && state.onPut ? await state.onPut(state.counts[op]) : 'send';
      if (action === 'fail-unsent') throw new TypeError('fetch failed: connection reset before the request was sent');
      const response = await fetch(url, init);
      if (action === 'drop-reply') {
        await response.arrayBuffer(); // the server committed; the reply is lost on the way back
        throw new TypeError('fetch failed: socket hang up');
      }
      return response;
    },
  };
  return state;
}

function batchSuite(backend: TestBackend): void {
  const fx = useStoreServer(backend, SEED, FAST_RETRY, 'batch-test');
  const { newStoreId, open } = fx;

  it('writes several keys in one request, each at its next version', async () => {
    const storeId = newStoreId();
    const net = instrumentedFetch();
    const store = await open(storeId, { clientRuntime: { fetch: net.fetch } });
    expect(supportsAtomicBatch(store)).toBe(true);
    await store.write('', '', 'manager', bytes('m1'));
    const puts = net.counts.putObjects;
    await store.writeBatch([w('', '', 'manager', 'm2'), w('monitor_updates', 'chan', '7', 'u7'), w('monitor_updates', 'chan', '8', 'u8')]);
    expect(net.counts.putObjects).toBe(puts + 1);
    expect(text(await store.read('', '', 'manager'))).toBe('m2');
    expect(text(await store.read('monitor_updates', 'chan', '8'))).toBe('u8');
    const listing = await rawListing(fx.raw, storeId);
    expect(listing.get(storeKey('', '', 'manager'))).toBe(2n);
    expect(listing.get(storeKey('monitor_updates', 'chan', '7'))).toBe(1n);
    // The store continues from the versions the batch wrote (a single write after it succeeds).
    await store.write('monitor_updates', 'chan', '7', bytes('u7b'));
    await store.writeBatch([w('', '', 'manager', 'm3'), w('monitor_updates', 'chan', '7', 'u7c')]);
    const other = await open(storeId);
    expect(text(await other.read('', '', 'manager'))).toBe('m3');
    expect(text(await other.read('monitor_updates', 'chan', '7'))).toBe('u7c');
    await store.close();
    await other.close();
  });

  it('a conflict on any key applies nothing, and every key of the batch needs a read before it is written again', async () => {
    const storeId = newStoreId();
    const net = instrumentedFetch();
    const first = await open(storeId, { clientRuntime: { fetch: net.fetch } });
    await first.writeBatch([w('', '', 'manager', 'm1'), w('monitors', '', 'chan', 'full1')]);
    const second = await open(storeId);
    await second.write('monitors', '', 'chan', bytes('intruder'));

    const error = await first.writeBatch([w('', '', 'manager', 'm2'), w('monitors', '', 'chan', 'full2'), w('monitor_updates', 'chan', '1', 'u1')]).catch((e) => e);
    expect(error).toBeInstanceOf(ConcurrentWriterError);
    expect(error.cause).toBeInstanceOf(ConflictError);
    // All or nothing: neither the manager nor the new update landed.
    expect(text(await second.read('', '', 'manager'))).toBe('m1');
    expect(await second.list('monitor_updates', 'chan')).toEqual([]);
    expect(text(await second.read('monitors', '', 'chan'))).toBe('intruder');
    // Which key conflicted is unknown: every one fails fast, without a request, until read.
    const puts = net.counts.putObjects;
    await expect(first.write('', '', 'manager', bytes('again'))).rejects.toBeInstanceOf(ConcurrentWriterError);
    await expect(first.writeBatch([w('monitor_updates', 'chan', '1', 'u1')])).rejects.toBeInstanceOf(ConcurrentWriterError);
    expect(net.counts.putObjects).toBe(puts);
    // Reading adopts the server's versions; a deliberate batch then succeeds.
    await first.read('', '', 'manager');
    await first.read('monitors', '', 'chan');
    await expect(first.read('monitor_updates', 'chan', '1')).rejects.toBeInstanceOf(KeyNotFoundError);
    await first.writeBatch([w('', '', 'manager', 'm3'), w('monitors', '', 'chan', 'full3'), w('monitor_updates', 'chan', '1', 'u1')]);
    expect(text(await second.read('monitors', '', 'chan'))).toBe('full3');
    await first.close();
    await second.close();
  });

  it('a batch whose reply was lost is settled by reading every key back', async () => {
    const storeId = newStoreId();
    const net = instrumentedFetch();
    const store = await open(storeId, { clientRuntime: { fetch: net.fetch } });
    await store.write('', '', 'manager', bytes('m1'));
    // 1. The first reply is lost, the retry meets 409: the read-back proves the batch committed.
    let pendingDrops = 1;
    net.onPut = async () => (pendingDrops-- > 0 ? 'drop-reply' : 'send');
    await store.writeBatch([w('', '', 'manager', 'm2'), w('monitor_updates', 'c', '1', 'u1')]);
    expect(text(await store.read('', '', 'manager'))).toBe('m2');
    expect(text(await store.read('monitor_updates', 'c', '1'))).toBe('u1');
    // 2. Every reply is lost: StoreIOError; the next write of each key reads back and continues.
    pendingDrops = 3;
    await expect(store.writeBatch([w('', '', 'manager', 'm3'), w('monitor_updates', 'c', '2', 'u2')])).rejects.toBeInstanceOf(StoreIOError);
    pendingDrops = 0;
    await store.writeBatch([w('', '', 'manager', 'm4'), w('monitor_updates', 'c', '2', 'u2 again')]);
    const other = await open(storeId);
    expect(text(await other.read('', '', 'manager'))).toBe('m4');
    expect(text(await other.read('monitor_updates', 'c', '2'))).toBe('u2 again');
    expect((await rawListing(fx.raw, storeId)).get(storeKey('', '', 'manager'))).toBe(4n);
    await store.close();
    await other.close();
  });

  it('an unsent first attempt followed by another writer is a conflict, found by reading back (never a false success)', async () => {
    const storeId = newStoreId();
    const net = instrumentedFetch();
    const store = await open(storeId, { clientRuntime: { fetch: net.fetch } });
    await store.writeBatch([w('', '', 'manager', 'm1'), w('monitors', '', 'chan', 'f1')]);
    const intruder = await open(storeId);
    await intruder.read('monitors', '', 'chan');
    const first = net.counts.putObjects + 1;
    net.onPut = async (attempt) => {
      if (attempt !== first) return 'send';
      // The request never reaches the server, but the client cannot know: meanwhile another writer moves a key.
      await intruder.write('monitors', '', 'chan', bytes('intruder'));
      return 'fail-unsent';
    };
    const error = await store.writeBatch([w('', '', 'manager', 'm2'), w('monitors', '', 'chan', 'f2')]).catch((e) => e);
    expect(error).toBeInstanceOf(ConcurrentWriterError);
    expect(text(await intruder.read('', '', 'manager'))).toBe('m1');
    expect(text(await intruder.read('monitors', '', 'chan'))).toBe('intruder');
    await store.close();
    await intruder.close();
  });

  it('keeps call order with single writes: supersedes a waiting one, and later ones wait for it', async () => {
    const storeId = newStoreId();
    const net = instrumentedFetch();
    const store = await open(storeId, { clientRuntime: { fetch: net.fetch } });
    await store.write('', '', 'manager', bytes('m0'));
    const puts = net.counts.putObjects;
    const results: string[] = [];
    // Same synchronous stretch: the single write of the manager is still waiting when the
    // batch arrives, so it is never sent; the write after the batch lands last.
    const superseded = store.write('', '', 'manager', bytes('stale')).then(() => results.push('superseded'));
    const batch = store.writeBatch([w('', '', 'manager', 'm1'), w('monitor_updates', 'c', '1', 'u1')]).then(() => results.push('batch'));
    const later = store.write('monitor_updates', 'c', '1', bytes('u1 later')).then(() => results.push('later'));
    await Promise.all([superseded, batch, later]);
    expect(net.counts.putObjects).toBe(puts + 2);
    expect(results.indexOf('later')).toBeGreaterThan(results.indexOf('batch'));
    expect(text(await store.read('', '', 'manager'))).toBe('m1');
    expect(text(await store.read('monitor_updates', 'c', '1'))).toBe('u1 later');
    await store.close();
  });

  it('refuses bad input with InvalidKeyError and sends nothing; an empty batch is a no-op', async () => {
    const net = instrumentedFetch();
    const store = await open(newStoreId(), { clientRuntime: { fetch: net.fetch } });
    const before = { ...net.counts };
    await expect(store.writeBatch([w('', '', 'manager', 'a'), w('', '', 'manager', 'b')])).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(store.writeBatch([w('', 'sub', 'k', 'x'), w('ok', '', 'k', 'y')])).rejects.toBeInstanceOf(InvalidKeyError);
    await store.writeBatch([]);
    expect(net.counts).toEqual(before);
    await store.close();
  });

  it('unconditional mode writes every item with version -1 (LDK Node compatible)', async () => {
    const storeId = newStoreId();
    const a = await open(storeId, { writeMode: 'unconditional' });
    const b = await open(storeId, { writeMode: 'unconditional' });
    await a.writeBatch([w('', '', 'manager', 'a'), w('monitors', '', 'c', 'a')]);
    await b.writeBatch([w('', '', 'manager', 'b'), w('monitors', '', 'c', 'b')]);
    expect(text(await a.read('monitors', '', 'c'))).toBe('b');
    expect((await rawListing(fx.raw, storeId)).get(storeKey('', '', 'manager'))).toBe(1n);
    await a.close();
    await b.close();
  });

  it('records every key of a durable batch in the version ledger, in one record', async () => {
    const recorded: VersionChange[][] = [];
    const ledger: VersionLedger = {
      load: async () => new Map(),
      record: async (changes) => void recorded.push([...changes]),
      recordSync: (changes) => void recorded.push([...changes]),
    };
    const store = await open(newStoreId(), { versionLedger: ledger });
    recorded.length = 0;
    await store.writeBatch([w('', '', 'manager', 'm'), w('monitors', '', 'c', 'f'), w('monitor_updates', 'c', '3', 'u')]);
    expect(recorded).toHaveLength(1);
    expect(recorded[0].map((c) => c.version)).toEqual([1n, 1n, 1n]);
    await store.close();
  });
}

for (const backend of STORE_TEST_BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `VssStore.writeBatch on ${backend.label}${backend.skipReason ? ` — SKIPPED: ${backend.skipReason}` : ''}`,
    () => batchSuite(backend),
  );
}

describe('VssStore.writeBatch and the blocking API', () => {
  let thread: ServerThread;
  beforeAll(async () => {
    thread = await startServerThread({ backend: 'pglite', auth: { kind: 'noop' } });
  }, 120_000);
  afterAll(async () => {
    await thread?.close();
  });

  it('a blocking write of a key with a batch queued fails with KeyBusyError (it would overtake the batch)', async () => {
    const store = await VssStore.open({ storeId: `batch-sync-${randomUUID().slice(0, 12)}`, client: { baseUrl: thread.url }, keys: { seed: SEED } });
    const sync = store.toSyncStore();
    const running = store.write('', '', 'manager', bytes('running'));
    await Promise.resolve();
    await Promise.resolve();
    const batch = store.writeBatch([w('', '', 'manager', 'batch'), w('monitors', '', 'c', 'f')]);
    // The key's first operation is in flight and the batch waits behind it.
    expect(() => sync.write('monitors', '', 'c', bytes('sync'))).toThrow(KeyBusyError);
    await Promise.all([running, batch]);
    sync.write('monitors', '', 'c', bytes('sync'));
    expect(text(sync.read('', '', 'manager'))).toBe('batch');
    expect(text(await store.read('monitors', '', 'c'))).toBe('sync');
    await store.close();
  });
});
