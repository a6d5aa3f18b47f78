/**
 * The blocking store API (worker-thread bridge). The server runs in a worker thread of its
 * own: an in-process server would be frozen while this thread blocks in Atomics.wait.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { createServer, connect, type Socket } from 'node:net';
import * as workerThreads from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import {
  ConcurrentWriterError,
  InvalidKeyError,
  InvalidValueError,
  KeyBusyError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
  StoreError,
  StoreIOError,
  StoreTimeoutError,
  VssStore,
  type VssStoreOptions,
} from '../../src/store/index.js';
import { VssClient, VssClientError } from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import { SyncBridge } from '../../src/store/sync-bridge.js';
import { ioErrorFor } from '../../src/ldk/kv-store.js';
import { STORE_TEST_BACKENDS, type TestBackend } from './helpers/backends.js';
import { rewindVersion2Key } from './helpers/rewind.js';
import { startServerThread, type ServerThread } from './helpers/server-thread.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x17);
const FAST_RETRY = { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 50, maxJitterMs: 0 };

function syncSuite(backend: TestBackend): void {
  let server: ServerThread;
  beforeAll(async () => {
    server = await startServerThread({ backend: backend.option, auth: { kind: 'noop' } });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  const open = (extra: Partial<VssStoreOptions> = {}, storeId = `sync-${randomUUID().slice(0, 20)}`) =>
    VssStore.open({ storeId, client: { baseUrl: server.url, retry: FAST_RETRY }, keys: { seed: SEED }, ...extra });

  it('implements the KVStore contract synchronously', async () => {
    const store = await open();
    const sync = store.toSyncStore();
    sync.write('ns', 'sub', 'k1', bytes('v1'));
    sync.write('', '', 'root', bytes('r'));
    expect(text(sync.read('ns', 'sub', 'k1'))).toBe('v1');
    expect(sync.list('ns', 'sub')).toEqual(['k1']);
    expect(sync.list('', '')).toEqual(['root']);
    sync.write('ns', 'sub', 'k1', bytes('v2'));
    expect(text(sync.read('ns', 'sub', 'k1'))).toBe('v2');
    expect(sync.listAll().map((k) => k.key).sort()).toEqual(['k1', 'root']);
    sync.remove('ns', 'sub', 'k1', false);
    expect(sync.list('ns', 'sub')).toEqual([]);
    expect(() => sync.read('ns', 'sub', 'k1')).toThrow(KeyNotFoundError);
    expect(() => sync.write('', 'sub', 'k', bytes('x'))).toThrow(InvalidKeyError);
    expect(() => sync.read('ns', '', '')).toThrow(InvalidKeyError);
    const big = new Uint8Array(1 << 20).map((_, i) => i % 253);
    sync.write('big', '', 'v', big);
    expect(sync.read('big', '', 'v')).toEqual(big);
    await store.close();
  });

  it('shares one state with the async API: versions and values line up both ways', async () => {
    const store = await open();
    const sync = store.toSyncStore();
    await store.write('m', '', 'k', bytes('async 1'));
    expect(text(sync.read('m', '', 'k'))).toBe('async 1');
    sync.write('m', '', 'k', bytes('sync 2'));
    expect(text(await store.read('m', '', 'k'))).toBe('sync 2');
    await store.write('m', '', 'k', bytes('async 3'));
    sync.write('m', '', 'k', bytes('sync 4'));
    await store.remove('m', '', 'k', false);
    sync.write('m', '', 'k', bytes('sync 5'));
    expect(text(await store.read('m', '', 'k'))).toBe('sync 5');
    await store.close();
  });

  it('reports another writer as ConcurrentWriterError, synchronously', async () => {
    const storeId = `sync-${randomUUID().slice(0, 20)}`;
    const a = await open({}, storeId);
    const b = await open({}, storeId);
    const syncA = a.toSyncStore();
    syncA.write('', '', 'manager', bytes('a'));
    await b.read('', '', 'manager');
    await b.write('', '', 'manager', bytes('b'));
    expect(() => syncA.write('', '', 'manager', bytes('a2'))).toThrow(ConcurrentWriterError);
    expect(text(await b.read('', '', 'manager'))).toBe('b');
    await a.close();
    await b.close();
  });

  it('fails a sync write of a key whose async write is in flight (KeyBusyError), and supersedes a queued one', async () => {
    const store = await open();
    const sync = store.toSyncStore();
    const pending = store.write('busy', '', 'k', bytes('async'));
    await Promise.resolve();
    await Promise.resolve(); // the queue has started the async write
    expect(() => sync.write('busy', '', 'k', bytes('sync'))).toThrow(KeyBusyError);
    await pending;
    sync.write('busy', '', 'k', bytes('sync after'));
    expect(text(await store.read('busy', '', 'k'))).toBe('sync after');

    // Queued in the same synchronous stretch: the sync write supersedes it; its caller resolves.
    const queued = store.write('busy', '', 'q', bytes('queued async'));
    sync.write('busy', '', 'q', bytes('sync wins'));
    await queued;
    expect(text(await store.read('busy', '', 'q'))).toBe('sync wins');
    await store.close();
  });

  it('refuses a value that is not a Uint8Array with InvalidValueError, nothing sent, a queued async write of the key untouched', async () => {
    const store = await open();
    const sync = store.toSyncStore();
    sync.write('ns', '', 'k', bytes('v1'));
    // Async writes of the key still waiting in the queue: a refused sync call must not take
    // them over (a sync write supersedes them, and its failure would become theirs).
    const first = store.write('ns', '', 'k', bytes('v2'));
    const second = store.write('ns', '', 'k', bytes('v3'));
    for (const bad of ['v4', [118, 52], undefined]) {
      expect(() => sync.write('ns', '', 'k', bad as unknown as Uint8Array)).toThrow(InvalidValueError);
      expect(() => sync.write('ns', '', 'k', bad as unknown as Uint8Array)).toThrow(/the value for \["ns","","k"\] must be a Uint8Array/);
    }
    await first;
    await second;
    expect(text(sync.read('ns', '', 'k'))).toBe('v3');
    sync.write('ns', '', 'k', bytes('v5'));
    expect(text(await store.read('ns', '', 'k'))).toBe('v5');
    await store.close();
  });

  it('lazy removes return at once and complete on the async path', async () => {
    const store = await open();
    const sync = store.toSyncStore();
    sync.write('lazy', '', 'k', bytes('x'));
    sync.remove('lazy', '', 'k', true);
    await store.flush();
    expect(sync.list('lazy', '')).toEqual([]);
    await store.close();
  });

  it('records versions through the ledger from the sync path too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-sync-'));
    try {
      const storeId = `sync-${randomUUID().slice(0, 20)}`;
      const path = join(dir, 'versions.log');
      const store = await open({ versionLedger: path }, storeId);
      const sync = store.toSyncStore();
      sync.write('l', '', 'k', bytes('1'));
      sync.write('l', '', 'k', bytes('2'));
      await store.close();
      // Put the key back to version 1 behind the store's back (a restored backup of that row).
      await rewindVersion2Key(server.url, storeId);
      await expect(open({ versionLedger: path }, storeId)).rejects.toBeInstanceOf(RollbackDetectedError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('turns a server that never answers into StoreTimeoutError at the deadline, never a hang', async () => {
    const store = await VssStore.open({
      storeId: `sync-${randomUUID().slice(0, 20)}`,
      client: { baseUrl: server.proxyUrl, retry: FAST_RETRY },
      keys: { seed: SEED },
    });
    const sync = store.toSyncStore({ deadlineMs: 1500 });
    sync.write('t', '', 'k', bytes('before'));
    await server.blackhole(true);
    try {
      const started = Date.now();
      expect(() => sync.read('t', '', 'k')).toThrow(StoreTimeoutError);
      // Not before the deadline (a hang instead would end in the test's timeout).
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
      // A write that timed out has an unknown outcome ...
      expect(() => sync.write('t', '', 'k', bytes('lost'))).toThrow(StoreTimeoutError);
    } finally {
      await server.blackhole(false);
    }
    // ... and the next write reads back first (the swallowed write never arrived) and succeeds.
    await new Promise((resolve) => setTimeout(resolve, 50));
    sync.write('t', '', 'k', bytes('after'));
    expect(text(sync.read('t', '', 'k'))).toBe('after');
    await store.close();
  }, 60_000);

  it('fails cleanly when the worker cannot start in time, and after close (StoreClosedError, NotConnected for LDK)', async () => {
    const store = await open();
    expect(() => store.toSyncStore({ startupTimeoutMs: 1 })).toThrow(StoreTimeoutError);
    const sync = store.toSyncStore();
    sync.close();
    let failure: unknown;
    try {
      sync.list('a', '');
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(StoreClosedError);
    expect(ioErrorFor(failure)).toBe(ldk.IOError.LDKIOError_NotConnected);
    await store.close();
    expect(() => store.toSyncStore()).toThrow(StoreError);
  });

  it.each([Number.NaN, 0, -1, Number.POSITIVE_INFINITY])('refuses a wait bound of %s (Atomics.wait would treat NaN as forever)', async (bad) => {
    const store = await open();
    try {
      expect(() => store.toSyncStore({ deadlineMs: bad })).toThrow(/deadlineMs must be a positive, finite number/);
      expect(() => store.toSyncStore({ startupTimeoutMs: bad })).toThrow(/startupTimeoutMs must be a positive, finite number/);
    } finally {
      await store.close();
    }
  });

  it('keeps the network error code across the worker: an unreachable server is ConnectionRefused for LDK, as on the async path', async () => {
    // A proxy this thread can close: the store opens and writes through it (async, so this
    // thread is free to forward), then nothing listens there any more.
    const target = new URL(server.url);
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const upstream = connect(Number(target.port), target.hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => s.destroy());
        s.on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const port = (proxy.address() as { port: number }).port;
    const store = await VssStore.open({
      storeId: `sync-${randomUUID().slice(0, 20)}`,
      client: { baseUrl: `http://127.0.0.1:${port}${target.pathname}`, retry: FAST_RETRY },
      keys: { seed: SEED },
    });
    await store.write('down', '', 'k', bytes('v'));
    const closed = new Promise<void>((resolve) => proxy.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
    const sync = store.toSyncStore({ deadlineMs: 10_000 });
    let failure: unknown;
    try {
      sync.read('down', '', 'k');
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(StoreIOError);
    expect((failure as Error).cause).toBeInstanceOf(VssClientError);
    expect(ioErrorFor(failure)).toBe(ldk.IOError.LDKIOError_ConnectionRefused);
    await store.close();
  }, 30_000);

  it('needs a plain client config to build its worker', async () => {
    const store = await VssStore.open({
      storeId: `sync-${randomUUID().slice(0, 20)}`,
      client: new VssClient(server.url),
      keys: { seed: SEED },
    });
    expect(() => store.toSyncStore()).toThrow(/VssClientConfig/);
    await store.close();
  });
}

describe('SyncBridge worker', () => {
  /** Builds a bridge while keeping this thread's end of its port, to crash the worker at will. */
  function bridgeWithPort(): { bridge: SyncBridge; port: workerThreads.MessagePort } {
    let captured: workerThreads.MessagePort | undefined;
    const real = process.getBuiltinModule.bind(process);
    const spy = vi.spyOn(process, 'getBuiltinModule').mockImplementation(((id: string) => {
      if (id !== 'node:worker_threads') return real(id);
      function CapturingChannel(): workerThreads.MessageChannel {
        const channel = new workerThreads.MessageChannel();
        captured ??= channel.port1; // the first channel carries the requests; the second, the exit report
        return channel;
      }
      return { ...workerThreads, MessageChannel: CapturingChannel };
    }) as typeof process.getBuiltinModule);
    try {
      const bridge = new SyncBridge({ baseUrl: 'http://127.0.0.1:1/vss', retry: FAST_RETRY }, 30_000);
      return { bridge, port: captured! };
    } finally {
      spy.mockRestore();
    }
  }

  const getObject = () => vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish();

  it('a worker that dies while this thread is blocked fails the call at once with StoreIOError, not at the deadline as a timeout', () => {
    const { bridge, port } = bridgeWithPort();
    try {
      // A message the worker cannot handle throws in its listener: the worker dies. This thread
      // does not yield in between, so the worker's 'exit' event cannot be what tells it.
      port.postMessage(null);
      // Deadlines far beyond the test's timeout: only a call that does not wait for them passes.
      const farAway = () => performance.now() + 10 * 60_000;
      let failure: unknown;
      try {
        bridge.call('getObject', getObject(), farAway());
      } catch (error) {
        failure = error;
      }
      expect(failure).toBeInstanceOf(StoreIOError);
      expect(failure).not.toBeInstanceOf(StoreTimeoutError);
      expect((failure as Error).message).toMatch(/worker exited \(code 1\)/);
      // Every later call fails the same way, without waiting.
      expect(() => bridge.call('getObject', getObject(), farAway())).toThrow(/worker exited/);
    } finally {
      bridge.close();
    }
  }, 60_000);

  it('a live worker still answers (the exit flag is not raised by startup)', () => {
    const { bridge } = bridgeWithPort();
    try {
      // Nothing listens on port 1: the worker answers with the client's network error.
      expect(() => bridge.call('getObject', getObject(), performance.now() + 20_000)).toThrow(VssClientError);
    } finally {
      bridge.close();
    }
  }, 60_000);
});

for (const backend of STORE_TEST_BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `VssStore sync API on ${backend.label}${backend.skipReason ? ` — SKIPPED: ${backend.skipReason}` : ''}`,
    () => syncSuite(backend),
  );
}
