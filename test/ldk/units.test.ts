/**
 * The LDK layer's pieces on their own (real LDK WASM, no nodes): layout helpers, the sync
 * KVStore bridge and its error mapping, migration, the event loop's ordering, limits.
 */
import { beforeAll, describe, expect, it, vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import {
  LdkEventLoop,
  LdkVssStore,
  ManagerOrderedBroadcaster,
  MigrationVerificationError,
  PersisterStoppedError,
  backoffDelay,
  classifyUpdateIds,
  initLdk,
  ioErrorFor,
  isTransientStoreError,
  migrateStore,
  monitorName,
  parseMonitorName,
  parseUpdateKey,
  toLdkKVStore,
  toLdkMigratableKVStore,
  withSentinel,
  withoutSentinel,
  CorruptStateError,
  persistNetworkGraph,
  persistScorer,
  readManagerBytes,
  readNetworkGraph,
  readScorer,
  readChannelMonitorsWithLdk,
  silentLogger,
  type ManagerWriter,
  VssPersister,
} from '../../src/ldk/index.js';
import { createLimiter } from '../../src/ldk/concurrency.js';
import {
  ConcurrentWriterError,
  DataIntegrityError,
  InvalidKeyError,
  InvalidValueError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
  StoreIOError,
  StoreTimeoutError,
} from '../../src/store/errors.js';
import { ConflictError, InternalServerError, InvalidRequestError, NoSuchKeyError, VersionMismatchError, VssClientError } from '../../src/client/errors.js';
import type { AsyncKVStore, StoreKey, SyncKVStore } from '../../src/store/types.js';
import { MemoryKVStore, MemoryServer, connectionRefused } from './helpers/memory-store.js';
import { fakeLdkNode } from './helpers/fake-ldk-node.js';
import { capturingLogger } from './helpers/capturing-logger.js';
import { monitorReaderOver, readFailure } from './helpers/monitor-reader.js';
import { standInPersisterParts } from './helpers/fake-persist.js';

beforeAll(async () => {
  await initLdk();
});


describe('layout', () => {
  it('names monitors like LDK (display-order txid, index) and parses them back', () => {
    const txid = Uint8Array.from({ length: 32 }, (_, i) => i);
    const name = monitorName(ldk.OutPoint.constructor_new(txid, 3));
    expect(name).toBe(`${Buffer.from(txid).reverse().toString('hex')}_3`);
    const parsed = parseMonitorName(name)!;
    expect([...parsed.txid]).toEqual([...txid]);
    expect(parsed.index).toBe(3);
    expect(parseMonitorName('xyz_1')).toBeUndefined();
    expect(parseMonitorName(`${'a'.repeat(64)}_70000`)).toBeUndefined();
  });

  it('accepts only canonical decimal u64 update keys', () => {
    expect(parseUpdateKey('0')).toBe(0n);
    expect(parseUpdateKey('18446744073709551615')).toBe(0xffff_ffff_ffff_ffffn);
    for (const bad of ['', '01', '-1', '1.0', '18446744073709551616', 'ten']) expect(parseUpdateKey(bad)).toBeUndefined();
  });

  it('adds and strips the MonitorUpdatingPersister sentinel', () => {
    const monitor = Uint8Array.of(1, 2, 3);
    expect([...withSentinel(monitor)]).toEqual([0xff, 0xff, 1, 2, 3]);
    expect([...withoutSentinel(withSentinel(monitor))]).toEqual([1, 2, 3]);
    expect([...withoutSentinel(monitor)]).toEqual([1, 2, 3]);
  });

  it('splits listed updates into stale, the consecutive run LDK applies, and orphans after a gap', () => {
    expect(classifyUpdateIds(10n, ['3', '10', '11', '12', '14', '15', 'junk'])).toEqual({
      stale: [3n, 10n],
      consecutive: [11n, 12n],
      orphans: [14n, 15n],
    });
    expect(classifyUpdateIds(0n, [])).toEqual({ stale: [], consecutive: [], orphans: [] });
  });
});

describe('error classification', () => {
  it('maps store errors to the IOError LDK expects', () => {
    expect(ioErrorFor(new KeyNotFoundError('a', '', 'k'))).toBe(ldk.IOError.LDKIOError_NotFound);
    expect(ioErrorFor(new StoreTimeoutError('slow'))).toBe(ldk.IOError.LDKIOError_TimedOut);
    expect(ioErrorFor(new InvalidKeyError('bad'))).toBe(ldk.IOError.LDKIOError_InvalidInput);
    expect(ioErrorFor(new InvalidValueError('not bytes'))).toBe(ldk.IOError.LDKIOError_InvalidInput);
    expect(ioErrorFor(new DataIntegrityError('tag'))).toBe(ldk.IOError.LDKIOError_InvalidData);
    expect(ioErrorFor(new RollbackDetectedError('old'))).toBe(ldk.IOError.LDKIOError_InvalidData);
    expect(ioErrorFor(new StoreClosedError('closed'))).toBe(ldk.IOError.LDKIOError_NotConnected);
    expect(ioErrorFor(connectionRefused())).toBe(ldk.IOError.LDKIOError_ConnectionRefused);
    expect(ioErrorFor(new Error('wrapped', { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) }))).toBe(ldk.IOError.LDKIOError_ConnectionReset);
    expect(ioErrorFor(new ConcurrentWriterError('conflict'))).toBe(ldk.IOError.LDKIOError_Other);
    expect(ioErrorFor('weird')).toBe(ldk.IOError.LDKIOError_Other);
  });

  it('retries outages but never conflicts, rollbacks, undecryptable data or invalid requests', () => {
    expect(isTransientStoreError(connectionRefused())).toBe(true);
    expect(isTransientStoreError(new StoreTimeoutError('slow'))).toBe(true);
    expect(isTransientStoreError(new VssClientError('network', 'down'))).toBe(true);
    for (const fatal of [
      new ConcurrentWriterError('x'),
      new RollbackDetectedError('x'),
      new DataIntegrityError('x'),
      new InvalidValueError('x'),
      new CorruptStateError('x', 'monitors', '', 'k'),
      new InvalidKeyError('x'),
      new StoreClosedError('x'),
      new ConflictError('x'),
      new InvalidRequestError('x'),
      new NoSuchKeyError('x'),
      new KeyNotFoundError('monitor_updates', 'chan', '7'),
    ]) {
      expect(isTransientStoreError(fatal)).toBe(false);
    }
  });

  it('classifies the client errors a VssStore wraps in StoreIOError by their cause', () => {
    const wrapped = (cause: Error) => new StoreIOError(`writing: ${cause.message}`, { cause });
    expect(isTransientStoreError(wrapped(new InvalidRequestError('body too large')))).toBe(false);
    expect(isTransientStoreError(wrapped(new VersionMismatchError('1')))).toBe(false);
    expect(isTransientStoreError(wrapped(new VersionMismatchError(undefined, { status: 200 })))).toBe(false);
    // No protocol header on a 502/503/429: a proxy in front of a server that is down.
    for (const status of [502, 503, 429]) expect(isTransientStoreError(wrapped(new VersionMismatchError(undefined, { status })))).toBe(true);
    expect(isTransientStoreError(wrapped(new VssClientError('network', 'down')))).toBe(true);
    expect(isTransientStoreError(wrapped(new InternalServerError('busy')))).toBe(true);
  });

  it('backs off exponentially within bounds', () => {
    for (let attempt = 1; attempt <= 20; attempt++) {
      const d = backoffDelay(attempt, { initialDelayMs: 10, maxDelayMs: 1_000 });
      const base = Math.min(1_000, 10 * 2 ** (attempt - 1));
      expect(d).toBeGreaterThanOrEqual(base * 0.8);
      expect(d).toBeLessThanOrEqual(base);
    }
    // Never past what a timer honours (Node runs a longer one after 1 ms), even uncapped.
    expect(backoffDelay(64, { maxDelayMs: Number.POSITIVE_INFINITY })).toBeLessThanOrEqual(2 ** 31 - 1);
  });
});

describe('LDK KVStore over a SyncKVStore', () => {
  it('reads, writes, lists and removes through LDK; a missing key is NotFound and not logged', () => {
    const server = new MemoryServer();
    const log = capturingLogger();
    const kv = toLdkKVStore(new MemoryKVStore(server).toSyncStore(), { log });
    const buf = Uint8Array.of(9, 8, 7);
    expect(kv.write('monitors', '', 'k1', buf)).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    buf[0] = 0; // the store kept its own copy
    const read = kv.read('monitors', '', 'k1');
    expect(read).toBeInstanceOf(ldk.Result_CVec_u8ZIOErrorZ_OK);
    expect([...(read as ldk.Result_CVec_u8ZIOErrorZ_OK).res]).toEqual([9, 8, 7]);
    const listed = kv.list('monitors', '');
    expect((listed as ldk.Result_CVec_StrZIOErrorZ_OK).res).toEqual(['k1']);
    expect(kv.remove('monitors', '', 'k1', false)).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    const missing = kv.read('monitors', '', 'k1');
    expect(missing).toBeInstanceOf(ldk.Result_CVec_u8ZIOErrorZ_Err);
    expect((missing as ldk.Result_CVec_u8ZIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_NotFound);
    expect(log.lines).toEqual([]);
  });

  it('turns failures into IOError results (never exceptions into WASM) and logs the cause', () => {
    const store = new MemoryKVStore();
    const log = capturingLogger();
    const kv = toLdkKVStore(store.toSyncStore(), { log });
    store.failNext(1, () => new StoreTimeoutError('deadline passed'));
    expect((kv.write('a', '', 'k', Uint8Array.of(1)) as ldk.Result_NoneIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_TimedOut);
    expect((kv.read('a', '', 'bad key!') as ldk.Result_CVec_u8ZIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_InvalidInput);
    store.outage = true;
    expect((kv.list('a', '') as ldk.Result_CVec_StrZIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_ConnectionRefused);
    expect(log.lines.map((l) => [l.level, l.fields.op, l.fields.ioError])).toEqual([
      ['error', 'write', 'LDKIOError_TimedOut'],
      ['error', 'read', 'LDKIOError_InvalidInput'],
      ['error', 'list', 'LDKIOError_ConnectionRefused'],
    ]);
    expect(String(log.lines[0].fields.cause)).toContain('deadline passed');
  });

  it('lists every key as a MigratableKVStore, and LDK migrates between two of them', () => {
    const source = new MemoryKVStore();
    const sync = source.toSyncStore();
    sync.write('', '', 'manager', Uint8Array.of(1));
    sync.write('monitors', '', 'm', Uint8Array.of(2));
    sync.write('monitor_updates', 'm', '7', Uint8Array.of(3));
    const migratable = toLdkMigratableKVStore(sync);
    const all = migratable.list_all_keys() as ldk.Result_CVec_C3Tuple_StrStrStrZZIOErrorZ_OK;
    expect(all.res.map((t) => [t.get_a(), t.get_b(), t.get_c()]).sort()).toEqual([
      ['', '', 'manager'],
      ['monitor_updates', 'm', '7'],
      ['monitors', '', 'm'],
    ]);
    const target = new MemoryKVStore();
    const res = ldk.UtilMethods.constructor_migrate_kv_store_data(migratable, toLdkMigratableKVStore(target.toSyncStore()));
    expect(res).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    expect([...target.server.get('monitor_updates', 'm', '7')!]).toEqual([3]);
  });

  it('LdkVssStore hands out LDK views of a store that can block', () => {
    const store = new MemoryKVStore();
    const wrapped = new LdkVssStore({ ...asyncView(store), toSyncStore: () => store.toSyncStore() });
    expect(wrapped.toLdkKVStore().write('x', '', 'k', Uint8Array.of(5))).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    expect(wrapped.syncStore.read('x', '', 'k')).toEqual(Uint8Array.of(5));
  });
});

describe("readChannelMonitorsWithLdk (LDK's MonitorUpdatingPersister)", () => {
  it('reports a store it cannot reach as StoreIOError, and only undecodable data as CorruptStateError', () => {
    const store = new MemoryKVStore();
    const mup = monitorReaderOver(store, new Uint8Array(32).fill(7));
    expect(readChannelMonitorsWithLdk(mup)).toEqual([]);

    const failure = () => readFailure(mup);
    store.failNext(1, () => new StoreTimeoutError('deadline passed'));
    const timedOut = failure();
    expect(timedOut).toBeInstanceOf(StoreIOError);
    expect(timedOut).not.toBeInstanceOf(CorruptStateError);
    expect(String((timedOut as Error).message)).toContain('TimedOut');
    expect(isTransientStoreError(timedOut)).toBe(true);

    store.outage = true;
    const refused = failure();
    expect(refused).toBeInstanceOf(StoreIOError);
    expect(String((refused as Error).message)).toContain('ConnectionRefused');
    store.outage = false;

    store.toSyncStore().write('monitors', '', `${'ab'.repeat(32)}_0`, Uint8Array.of(0xff, 0xff, 1, 2, 3));
    expect(failure()).toBeInstanceOf(CorruptStateError);
  });
});

function asyncView(store: MemoryKVStore): AsyncKVStore {
  return {
    read: (p, s, k) => store.read(p, s, k),
    write: (p, s, k, v) => store.write(p, s, k, v),
    remove: (p, s, k, lazy) => store.remove(p, s, k, lazy),
    list: (p, s) => store.list(p, s),
    listAll: () => store.listAll(),
  };
}

async function fill(store: AsyncKVStore, n: number): Promise<void> {
  await store.write('', '', 'manager', Uint8Array.of(0xaa));
  for (let i = 0; i < n; i++) await store.write('monitor_updates', 'chan', String(i), Uint8Array.of(i, i));
}

describe('migrateStore', () => {
  it('copies every key, verifies it, reports progress, and copies the manager last', async () => {
    const from = new MemoryKVStore();
    await fill(from, 20);
    const to = new MemoryKVStore();
    const progress: number[] = [];
    const result = await migrateStore(from, to, { onProgress: (p) => progress.push(p.copied), concurrency: 4 });
    expect(result.keys).toBe(21);
    expect(result.bytes).toBe(41);
    expect(progress).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
    expect(to.server.keys().length).toBe(21);
    const lastWrite = to.server.log.filter((op) => op.op === 'write').at(-1)!;
    expect(lastWrite.key).toEqual({ primaryNamespace: '', secondaryNamespace: '', key: 'manager' });
  });

  it('refuses a target that already holds data unless told to overwrite', async () => {
    const from = new MemoryKVStore();
    await fill(from, 2);
    const to = new MemoryKVStore();
    await to.write('monitor_updates', 'chan', '1', Uint8Array.of(9));
    await expect(migrateStore(from, to)).rejects.toBeInstanceOf(MigrationVerificationError);
    expect(to.server.keys().length).toBe(1);
    await migrateStore(from, to, { overwrite: true });
    expect([...(await to.read('monitor_updates', 'chan', '1'))]).toEqual([1, 1]);
  });

  it('refuses to overwrite into a target holding monitor data the source lacks (a restore would read it as copied state)', async () => {
    const from = new MemoryKVStore();
    await fill(from, 2);
    const to = new MemoryKVStore();
    await to.write('monitor_updates', 'chan', '99', Uint8Array.of(9)); // a leftover delta
    await to.write('payments', '', 'old', Uint8Array.of(1)); // other data is only overwritten where it clashes
    const error = await migrateStore(from, to, { overwrite: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationVerificationError);
    expect((error as Error).message).toMatch(/holds 1 monitor key\(s\) the source does not \(e\.g\. monitor_updates\/chan\/99\)/);
    expect(to.server.keys().length).toBe(2); // nothing copied
    await to.remove('monitor_updates', 'chan', '99', false);
    await migrateStore(from, to, { overwrite: true });
    expect([...(await to.read('payments', '', 'old'))]).toEqual([1]);
  });

  it('detects a copy that does not read back identical', async () => {
    const from = new MemoryKVStore();
    await fill(from, 3);
    const inner = new MemoryKVStore();
    const lossy: AsyncKVStore = { ...asyncView(inner), write: (p, s, k, v) => inner.write(p, s, k, v.subarray(0, v.length - 1)) };
    await expect(migrateStore(from, lossy)).rejects.toThrow(/reads back different/);
  });

  it('copies between an LDK KVStore and async/sync stores in both directions', async () => {
    const from = new MemoryKVStore();
    await fill(from, 5);
    const ldkTarget = new MemoryKVStore();
    await migrateStore(from, toLdkKVStore(ldkTarget.toSyncStore()));
    expect(ldkTarget.server.keys().length).toBe(6);
    // A bare LDK KVStore cannot list: overwriting into it could not refuse leftover monitor data.
    await expect(migrateStore(from, toLdkKVStore(ldkTarget.toSyncStore()), { overwrite: true })).rejects.toThrow(/needs a target that can list its keys/);

    const back = new MemoryKVStore();
    const source = { kvStore: toLdkKVStore(ldkTarget.toSyncStore()), migratable: toLdkMigratableKVStore(ldkTarget.toSyncStore()) };
    const result = await migrateStore(source, back.toSyncStore() as SyncKVStore);
    expect(result.keys).toBe(6);
    expect([...(await back.read('', '', 'manager'))]).toEqual([0xaa]);
  });

  it('propagates a failing source listing', async () => {
    const from = new MemoryKVStore();
    await fill(from, 5);
    from.failNext(1, () => new DataIntegrityError('bad tag'));
    await expect(migrateStore(from, new MemoryKVStore())).rejects.toBeInstanceOf(DataIntegrityError);
  });

  it('a source read failing mid-copy rejects only once the copies under way have settled, and the manager is never copied', async () => {
    const from = new MemoryKVStore();
    await fill(from, 20);
    const failing: AsyncKVStore = {
      ...asyncView(from),
      read: (p, s, k) => (p === 'monitor_updates' && k === '3' ? Promise.reject(new DataIntegrityError('bad tag')) : from.read(p, s, k)),
    };
    const to = new MemoryKVStore(undefined, { latencyMs: 5 });
    await expect(migrateStore(failing, to, { concurrency: 4 })).rejects.toBeInstanceOf(DataIntegrityError);
    const settledKeys = to.server.keys().length;
    expect(settledKeys).toBeGreaterThan(0);
    expect(settledKeys).toBeLessThan(20); // copies queued after the failure never started
    await new Promise((r) => setTimeout(r, 50));
    expect(to.server.keys().length).toBe(settledKeys); // nothing was still writing to the target
    expect(to.server.get('', '', 'manager')).toBeUndefined();
  });

  it('fails (never reports success) when the source changes during the copy, e.g. a node still running', async () => {
    // A monitor update written while the copy runs: the target misses it.
    const from = new MemoryKVStore();
    await fill(from, 5);
    let wrote = false;
    const onProgress = (): void => {
      if (wrote) return;
      wrote = true;
      void from.write('monitor_updates', 'chan', '99', Uint8Array.of(9));
    };
    await expect(migrateStore(from, new MemoryKVStore(), { onProgress })).rejects.toThrow(/source changed while it was being copied: 1 key\(s\) added \(monitor_updates\/chan\/99\)/);

    // A manager rewritten after it was copied: same keys, different bytes.
    const again = new MemoryKVStore();
    await fill(again, 2);
    const rewrite = (p: { last: StoreKey }): void => {
      if (p.last.key === 'manager') void again.write('', '', 'manager', Uint8Array.of(0xbb));
    };
    const err = await migrateStore(again, new MemoryKVStore(), { onProgress: rewrite }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationVerificationError);
    expect((err as Error).message).toMatch(/1 rewritten \(\/\/manager\)/);
  });
});

/** A store whose writes resolve only when the test says so. */
function gatedStore(): AsyncKVStore & { release(err?: Error): void; writes: StoreKey[]; waiting: number } {
  const inner = new MemoryKVStore();
  const queue: { resolve: () => void; reject: (e: Error) => void }[] = [];
  const store = {
    ...asyncView(inner),
    writes: [] as StoreKey[],
    waiting: 0,
    write: async (p: string, s: string, k: string, v: Uint8Array) => {
      store.waiting++;
      await new Promise<void>((resolve, reject) => queue.push({ resolve, reject }));
      store.waiting--;
      await inner.write(p, s, k, v);
      store.writes.push({ primaryNamespace: p, secondaryNamespace: s, key: k });
    },
    release: (err?: Error) => {
      const next = queue.shift();
      if (err) next?.reject(err);
      else next?.resolve();
    },
  };
  return store;
}

/** A loop over a gated store, with one event queued and LDK asking for a manager write. */
function loopWithOneEventOwingAWrite() {
  const { state, channelManager, chainMonitor } = fakeLdkNode();
  const store = gatedStore();
  const handled: string[] = [];
  const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: (e) => void handled.push(e.constructor.name) });
  state.needsPersistence = true;
  state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(0n));
  return { state, store, handled, loop };
}

describe('LdkEventLoop', () => {
  it('hands no event to the app until the manager write LDK asked for is durable', async () => {
    const { state, store, handled, loop } = loopWithOneEventOwingAWrite();
    expect(loop.poll()).toBe(true); // the event is handed back; the manager write starts
    expect(loop.persisting).toBe(true);
    expect(state.pending).toHaveLength(1);
    expect(loop.poll()).toBe(false);
    expect(handled).toEqual([]);

    store.release();
    await loop.idle();
    expect(store.writes).toEqual([{ primaryNamespace: '', secondaryNamespace: '', key: 'manager' }]);
    // Handing the event back made LDK ask again, but that request is in the bytes written
    // (the flag is cleared as the manager is serialized): the event goes out now, and no
    // further write is owed (no write/hand-back loop, no redundant write later).
    expect(loop.poll()).toBe(true);
    expect(handled).toEqual(['Event_PendingHTLCsForwardable']);
    expect(loop.stats.managerWrites).toBe(1);
    expect(loop.persisting).toBe(false);
    expect(loop.owesManagerWrite).toBe(false);
  });

  it('an event LDK queues while that manager write is in flight waits for a newer write: no event goes out before a manager holding it is durable', async () => {
    const { state, store, handled, loop } = loopWithOneEventOwingAWrite();
    expect(loop.poll()).toBe(true); // handed back; write #1 serializes the manager
    // While write #1 is in flight, LDK queues another event (and asks for persistence).
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(1n));
    state.needsPersistence = true;
    store.release();
    await loop.idle();

    // Write #1 is durable but does not hold the second event: a newer write goes first.
    expect(loop.poll()).toBe(true);
    expect(handled).toEqual([]);
    expect(loop.persisting).toBe(true);
    store.release();
    await loop.idle();
    expect(loop.poll()).toBe(true);
    expect(handled).toEqual(['Event_PendingHTLCsForwardable', 'Event_PendingHTLCsForwardable']);
    expect(loop.stats).toMatchObject({ managerWrites: 2, rewritesForEvents: 1 });
    expect(store.writes).toHaveLength(2);
  });

  it('a monitor write requested while the app handles an event (e.g. claim_funds) starts the manager write in the same pass', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    let writer: ManagerWriter | undefined;
    const written: number[] = [];
    // The persister's side of the link: the loop hands it the manager bytes with their tick.
    const persister = {
      linkManagerWriter: (w: ManagerWriter) => {
        writer = w;
        return { tickNow: () => 7, durable: () => {}, writeManager: async (_bytes: Uint8Array, tick: number) => void written.push(tick) };
      },
    } as unknown as VssPersister;
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), persister, handleEvent: () => writer!.requestPersist() });
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(0n));
    expect(loop.poll()).toBe(true);
    expect(state.pending).toHaveLength(0); // delivered
    expect(loop.persisting).toBe(true); // and the write it asked for is already under way
    await loop.idle();
    expect(written).toEqual([7]);
    expect(loop.owesManagerWrite).toBe(false);
  });

  it('coalesces manager writes LDK asks for while nothing needs them, up to coalesceMs', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = new MemoryKVStore();
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: () => {}, coalesceMs: 40 });
    for (let i = 0; i < 5; i++) {
      state.needsPersistence = true;
      expect(loop.poll()).toBe(false); // owed, not due yet
    }
    expect(loop.managerWriteDueInMs).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(loop.poll()).toBe(true);
    await loop.idle();
    expect(loop.stats.managerWrites).toBe(1);
    expect(loop.managerWriteDueInMs).toBeUndefined();
  });

  it('retries a failed manager write, and stops for good on ConcurrentWriterError', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = gatedStore();
    const fatal: Error[] = [];
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: () => {}, backoff: { initialDelayMs: 1, maxDelayMs: 2 }, coalesceMs: 0, log: capturingLogger() });
    loop.on('fatal', (e) => fatal.push(e));
    state.needsPersistence = true;
    loop.poll();
    store.release(connectionRefused());
    await new Promise((r) => setTimeout(r, 20));
    expect(loop.stats.retries).toBe(1);
    store.release(new ConcurrentWriterError('someone else wrote the manager'));
    await expect(loop.idle()).rejects.toBeInstanceOf(ConcurrentWriterError);
    expect(fatal).toHaveLength(1);
    expect(loop.poll()).toBe(false);
  });

  it('a linked persister stops with the loop when the manager cannot be written: fatal and a rejected flush(), not a stall', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = gatedStore();
    const persister = new VssPersister({ store, ...standInPersisterParts(3) });
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, persister, handleEvent: () => {}, coalesceMs: 0, log: silentLogger });
    const fatal: Error[] = [];
    loop.on('fatal', (e) => fatal.push(e));
    persister.on('fatal', (e) => fatal.push(e));
    state.needsPersistence = true;
    loop.poll();
    const refused = new ConcurrentWriterError('someone else wrote the manager');
    store.release(refused);
    await expect(loop.idle()).rejects.toBe(refused);
    expect(persister.fatalError).toBe(refused);
    await expect(persister.flush()).rejects.toBe(refused);
    expect(fatal).toEqual([refused, refused]); // once each
    await persister.close();
  });

  it('status listeners that throw are logged and ignored: the write is not repeated, events still go out', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = gatedStore();
    const handled: string[] = [];
    const log = capturingLogger();
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: (e) => void handled.push(e.constructor.name), backoff: { initialDelayMs: 1, maxDelayMs: 2 }, coalesceMs: 0, log });
    const fatal: Error[] = [];
    loop.on('fatal', (e) => fatal.push(e));
    let calls = 0;
    for (const event of ['retry', 'manager-persisted'] as const) {
      loop.on(event, () => {
        calls++;
        throw new Error(`dashboard bug in '${event}'`);
      });
    }
    // A second listener still hears the event after the first one threw; an async one that
    // rejects is logged too (not an unhandled rejection, which would end the process).
    let persistedHeard = 0;
    loop.on('manager-persisted', () => void persistedHeard++);
    loop.on('manager-persisted', async () => {
      throw new Error('async dashboard bug');
    });
    state.needsPersistence = true;
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(0n));
    loop.poll();
    store.release(connectionRefused()); // one failed attempt: 'retry' is emitted
    await new Promise((r) => setTimeout(r, 20));
    store.release();
    await loop.idle();
    loop.poll();
    expect(handled).toEqual(['Event_PendingHTLCsForwardable']);
    expect(store.writes).toHaveLength(1);
    expect(loop.stats.managerWrites).toBe(1);
    expect(loop.stats.retries).toBe(1);
    expect(calls).toBe(2);
    expect(persistedHeard).toBe(1);
    expect(fatal).toEqual([]);
    await new Promise((r) => setTimeout(r, 0));
    expect(log.lines.filter((l) => l.level === 'error').map((l) => l.message)).toEqual([
      "a 'retry' listener threw; ignored, persistence carries on",
      "a 'manager-persisted' listener threw; ignored, persistence carries on",
      "a 'manager-persisted' listener threw; ignored, persistence carries on",
    ]);
  });

  it('an event handler that throws makes LDK replay the event instead of crashing WASM', () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    let calls = 0;
    const loop = new LdkEventLoop({
      channelManager,
      chainMonitor,
      store: new MemoryKVStore(),
      handleEvent: () => {
        calls++;
        throw new Error('app bug');
      },
      log: capturingLogger(),
    });
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(0n));
    expect(loop.poll()).toBe(true);
    expect(calls).toBe(1);
  });

  it('start() runs the loop by itself: owed writes go out when due, then events', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = new MemoryKVStore();
    const handled: string[] = [];
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: (e) => void handled.push(e.constructor.name), coalesceMs: 20 });
    state.needsPersistence = true;
    loop.start();
    await new Promise((r) => setTimeout(r, 150));
    expect(loop.stats.managerWrites).toBe(1);
    expect(loop.owesManagerWrite).toBe(false);
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(0n));
    await new Promise((r) => setTimeout(r, 1_200)); // the fake's futures never fire: the loop's own timer wakes it
    expect(handled).toEqual(['Event_PendingHTLCsForwardable']);
    await loop.stop();
  });

  it('stop() ends a write still retrying with PersisterStoppedError', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = new MemoryKVStore();
    store.outage = true;
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: () => {}, backoff: { initialDelayMs: 5, maxDelayMs: 5 }, coalesceMs: 0, log: capturingLogger() });
    state.needsPersistence = true;
    loop.poll();
    // Stop only once the write has failed and is retrying (the path the name promises).
    await vi.waitFor(() => expect(loop.stats.retries).toBeGreaterThan(0), { timeout: 5_000, interval: 5 });
    await loop.stop();
    expect(loop.fatalError).toBeInstanceOf(PersisterStoppedError);
  });
});

describe('ManagerOrderedBroadcaster', () => {
  const tx = (n: number) => Uint8Array.of(2, 0, 0, 0, n);
  const flush = () => new Promise((r) => setTimeout(r, 5));

  it('sends at once while no manager writer is attached', () => {
    const sent: Uint8Array[][] = [];
    const b = new ManagerOrderedBroadcaster((txs) => void sent.push(txs));
    b.broadcaster.broadcast_transactions([tx(1), tx(2)]);
    expect(sent).toEqual([[tx(1), tx(2)]]);
    expect(b.stats).toEqual({ sentAtOnce: 2, sentAfterManager: 0, sentAfterTimeout: 0, dropped: 0 });
  });

  it('holds a transaction until a manager serialized after the broadcast is durable (not one already in flight)', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = gatedStore();
    const sent: Uint8Array[][] = [];
    const b = new ManagerOrderedBroadcaster((txs) => void sent.push(txs));
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: () => {}, coalesceMs: 0, broadcaster: b });
    state.needsPersistence = true;
    expect(loop.poll()).toBe(true); // manager #1 serialized, its write waits at the store
    b.broadcaster.broadcast_transactions([tx(1)]); // LDK broadcasts after #1 was serialized
    expect(b.held).toBe(1);
    expect(loop.owesManagerWrite).toBe(true);
    store.release(); // #1 durable: it does not know the broadcast
    await flush();
    expect(sent).toEqual([]);
    expect(loop.poll()).toBe(true); // #2, asked for by the broadcaster
    await flush();
    expect(sent).toEqual([]);
    store.release();
    await loop.idle();
    await flush();
    expect(sent).toEqual([[tx(1)]]);
    expect(b.held).toBe(0);
    expect(state.serialized).toBe(2);
    expect(b.stats.sentAfterManager).toBe(1);
  });

  it('drops what it holds when the loop stops before the manager is durable, as a crash would', async () => {
    const { channelManager, chainMonitor } = fakeLdkNode();
    const store = new MemoryKVStore();
    store.outage = true;
    const log = capturingLogger();
    const sent: Uint8Array[][] = [];
    const b = new ManagerOrderedBroadcaster((txs) => void sent.push(txs), { log });
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: () => {}, backoff: { initialDelayMs: 5, maxDelayMs: 5 }, coalesceMs: 0, log, broadcaster: b });
    b.broadcaster.broadcast_transactions([tx(3)]);
    loop.poll();
    await new Promise((r) => setTimeout(r, 30));
    await loop.stop();
    await flush();
    expect(sent).toEqual([]);
    expect(b.stats.dropped).toBe(1);
    expect(log.lines.some((l) => l.level === 'warn' && /broadcast dropped/.test(l.message))).toBe(true);
    // Once stopped, nothing can make a manager durable: later broadcasts are dropped too.
    b.broadcaster.broadcast_transactions([tx(4)]);
    await flush();
    expect(sent).toEqual([]);
    expect(b.stats.dropped).toBe(2);
  });

  it('sends anyway after maxHoldMs when the store does not confirm a manager write (a claim must not wait on storage)', async () => {
    const { channelManager, chainMonitor } = fakeLdkNode();
    const store = new MemoryKVStore();
    store.outage = true;
    const log = capturingLogger();
    const sent: Uint8Array[][] = [];
    const b = new ManagerOrderedBroadcaster((txs) => void sent.push(txs), { maxHoldMs: 40, log });
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: () => {}, backoff: { initialDelayMs: 5, maxDelayMs: 5 }, coalesceMs: 0, log, broadcaster: b });
    b.broadcaster.broadcast_transactions([tx(5)]);
    loop.poll();
    await new Promise((r) => setTimeout(r, 20));
    expect(sent).toEqual([]);
    await new Promise((r) => setTimeout(r, 60));
    expect(sent).toEqual([[tx(5)]]);
    expect(b.stats.sentAfterTimeout).toBe(1);
    expect(log.lines.some((l) => l.level === 'warn' && /before the ChannelManager/.test(l.message))).toBe(true);
    // The write it waited for lands later: nothing is sent twice.
    store.outage = false;
    await loop.idle();
    await flush();
    expect(sent).toHaveLength(1);
    await loop.stop();
  });

  it('a failing broadcaster is logged and never throws into LDK', () => {
    const log = capturingLogger();
    const b = new ManagerOrderedBroadcaster(() => {
      throw new Error('node unreachable');
    }, { log });
    expect(() => b.broadcaster.broadcast_transactions([tx(6)])).not.toThrow();
    expect(log.lines).toEqual([expect.objectContaining({ level: 'error', message: 'broadcaster threw' })]);
  });
});

describe('network graph and scorer helpers', () => {
  const logger = () => ldk.Logger.new_impl({ log: () => {} });

  it('round-trip in LDK\'s layout, start fresh when absent, and refuse corrupt bytes', async () => {
    const store = new MemoryKVStore();
    const graph = await readNetworkGraph(store, ldk.Network.LDKNetwork_Regtest, logger());
    expect(graph).toBeInstanceOf(ldk.NetworkGraph);
    const graphBytes = await persistNetworkGraph(graph, store);
    expect(store.server.get('', '', 'network_graph')!.length).toBe(graphBytes);
    expect(await readNetworkGraph(store, ldk.Network.LDKNetwork_Regtest, logger())).toBeInstanceOf(ldk.NetworkGraph);

    const scorer = await readScorer(store, graph, logger());
    await persistScorer(scorer, store);
    expect(store.server.has('', '', 'scorer')).toBe(true);
    expect(await readScorer(store, graph, logger())).toBeInstanceOf(ldk.ProbabilisticScorer);

    await store.write('', '', 'network_graph', Uint8Array.of(1, 2, 3));
    await expect(readNetworkGraph(store, ldk.Network.LDKNetwork_Regtest, logger())).rejects.toBeInstanceOf(CorruptStateError);
    await store.write('', '', 'scorer', Uint8Array.of(9));
    await expect(readScorer(store, graph, logger())).rejects.toBeInstanceOf(CorruptStateError);
  });

  it('readManagerBytes: undefined only for a missing manager; other errors propagate', async () => {
    const store = new MemoryKVStore();
    expect(await readManagerBytes(store)).toBeUndefined();
    store.outage = true;
    await expect(readManagerBytes(store)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('createLimiter', () => {
  it('never runs more than the limit at once and keeps all results', async () => {
    const limit = createLimiter(3);
    let active = 0;
    let peak = 0;
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        limit(async () => {
          active++;
          peak = Math.max(peak, active);
          await new Promise((r) => setTimeout(r, 2));
          active--;
          return i;
        }),
      ),
    );
    expect(peak).toBe(3);
    expect(results).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(() => createLimiter(0)).toThrow(RangeError);
  });

  it('a task arriving while a freed slot is being handed to a waiter queues behind it (the bound holds)', async () => {
    const limit = createLimiter(1);
    let active = 0;
    let peak = 0;
    // Plain promises (no async wrappers), so the order of continuations below is exact.
    const tracked = (work: Promise<void>) => (): Promise<void> => {
      active++;
      peak = Math.max(peak, active);
      void work.then(() => {
        active--;
      });
      return work;
    };
    let releaseFirst!: () => void;
    const first = limit(tracked(new Promise<void>((r) => (releaseFirst = r))));
    const second = limit(tracked(new Promise<void>((r) => setTimeout(r, 5))));
    await new Promise((r) => setTimeout(r, 1));
    let third: Promise<void> | undefined;
    releaseFirst();
    // Runs after the slot is freed and before the waiting task resumes, as a continuation of
    // other work (restore queueing an update read) does.
    queueMicrotask(() => {
      third = limit(tracked(new Promise<void>((r) => setTimeout(r, 5))));
    });
    await first;
    await second;
    await third;
    expect(peak).toBe(1);
  });
});
