/**
 * Adversarial review of the blocking write path (sync bridge, server in a worker thread):
 * a write or remove the server committed whose answer never reached the blocked caller
 * (the worker died, or the deadline passed), values at the server's body limit, and many
 * blocking calls interleaved with queued asynchronous work.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { VssServerOptions } from '../../src/server/index.js';
import {
  ConcurrentWriterError,
  KeyNotFoundError,
  StoreError,
  StoreIOError,
  StoreTimeoutError,
  VersionLedgerError,
  VssStore,
  type VssStoreOptions,
} from '../../src/store/index.js';
import { SyncBridge } from '../../src/store/sync-bridge.js';
import { SlowFirstLedger, SyncMemoryLedger } from './helpers/memory-ledger.js';
import { startServerThread, type ServerThread } from './helpers/server-thread.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x2e);
const FAST_RETRY = { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 50, maxJitterMs: 0 };
const BODY_LIMIT = 64 * 1024;

let server: ServerThread;
let small: ServerThread;
beforeAll(async () => {
  server = await startServerThread({ backend: 'memory', auth: { kind: 'noop' } });
  // The helper passes its options through to startVssServer.
  small = await startServerThread({ backend: 'memory', auth: { kind: 'noop' }, maxRequestBodySize: BODY_LIMIT } as Pick<VssServerOptions, 'backend' | 'auth'>);
}, 120_000);
afterAll(async () => {
  await server?.close();
  await small?.close();
});
afterEach(() => {
  vi.restoreAllMocks();
});

const open = (storeId: string, extra: Partial<VssStoreOptions> = {}, url = server.url) =>
  VssStore.open({ storeId, client: { baseUrl: url, retry: FAST_RETRY }, keys: { seed: SEED }, ...extra });

async function onServer(storeId: string, key = 'k'): Promise<string | null> {
  const fresh = await open(storeId);
  try {
    return text(await fresh.read('ns', '', key));
  } catch (error) {
    if (error instanceof KeyNotFoundError) return null;
    throw error;
  } finally {
    await fresh.close();
  }
}

/**
 * The next PutObjects through any bridge reaches the server and commits, but its answer is
 * replaced by `failure` (what the bridge throws when its worker dies, or the deadline passes).
 */
function loseNextPutAnswer(failure: () => Error): void {
  const real = SyncBridge.prototype.call;
  let armed = true;
  vi.spyOn(SyncBridge.prototype, 'call').mockImplementation(function (this: SyncBridge, operation, body, deadlineAt) {
    const answer = real.call(this, operation, body, deadlineAt);
    if (armed && operation === 'putObjects') {
      armed = false;
      throw failure();
    }
    return answer;
  });
}

const workerDied = () => new StoreIOError('putObjects: the sync bridge worker exited (code 1); this blocking store can no longer reach the server');
const deadlinePassed = () => new StoreTimeoutError('putObjects: no answer from the VSS server within the deadline');

describe('a blocking write the server committed but whose answer was lost', () => {
  for (const [label, failure] of [
    ['the worker died', workerDied],
    ['the deadline passed', deadlinePassed],
  ] as const) {
    it(`(${label}): the caller gets ${failure().name}; the next async write reads back and lands, no false conflict, ledger consistent`, async () => {
      const storeId = `swp-${randomUUID().slice(0, 20)}`;
      const ledger = new SyncMemoryLedger();
      const store = await open(storeId, { versionLedger: ledger });
      const sync = store.toSyncStore();
      sync.write('ns', '', 'k', bytes('v1'));
      loseNextPutAnswer(failure);
      expect(() => sync.write('ns', '', 'k', bytes('v2'))).toThrow(failure().constructor as typeof StoreError);
      vi.restoreAllMocks();
      await store.write('ns', '', 'k', bytes('v3'));
      expect(text(sync.read('ns', '', 'k'))).toBe('v3');
      await store.close();
      expect(await onServer(storeId)).toBe('v3');
      const again = await open(storeId, { versionLedger: ledger });
      expect(text(await again.read('ns', '', 'k'))).toBe('v3');
      await again.close();
    }, 60_000);
  }

  it('(deadline) a blocking remove whose answer was lost, then a blocking write: it goes as a create', async () => {
    const storeId = `swp-${randomUUID().slice(0, 20)}`;
    const store = await open(storeId);
    const sync = store.toSyncStore();
    sync.write('ns', '', 'k', bytes('v1'));
    loseNextPutAnswer(deadlinePassed);
    expect(() => sync.remove('ns', '', 'k', false)).toThrow(StoreTimeoutError);
    vi.restoreAllMocks();
    sync.write('ns', '', 'k', bytes('v2'));
    await store.close();
    expect(await onServer(storeId)).toBe('v2');
  }, 60_000);

  it('(deadline) async writes queued behind nothing but superseded by the blocking write get its StoreTimeoutError; the next write settles it', async () => {
    const storeId = `swp-${randomUUID().slice(0, 20)}`;
    const store = await open(storeId);
    const sync = store.toSyncStore();
    sync.write('ns', '', 'k', bytes('v1'));
    const queued = store.write('ns', '', 'k', bytes('async')).then(
      () => 'ok',
      (e: unknown) => e,
    );
    loseNextPutAnswer(deadlinePassed);
    expect(() => sync.write('ns', '', 'k', bytes('v2'))).toThrow(StoreTimeoutError);
    vi.restoreAllMocks();
    expect(await queued).toBeInstanceOf(StoreTimeoutError);
    // The timed-out write committed: a read shows it, the next write builds on it.
    expect(text(sync.read('ns', '', 'k'))).toBe('v2');
    sync.write('ns', '', 'k', bytes('v3'));
    await store.close();
    expect(await onServer(storeId)).toBe('v3');
  }, 60_000);
});

describe('values that are views into a larger buffer', () => {
  it('a pooled Buffer slice (byteOffset > 0) is stored as exactly its bytes, blocking and async', async () => {
    const storeId = `swp-${randomUUID().slice(0, 20)}`;
    const store = await open(storeId);
    const sync = store.toSyncStore();
    const backing = new Uint8Array(64).map((_, i) => i);
    const view = backing.subarray(10, 20);
    const pooled = Buffer.from('pooled value');
    expect(view.byteOffset).toBe(10);
    sync.write('ns', '', 'view', view);
    sync.write('ns', '', 'pooled', pooled);
    await store.write('ns', '', 'async-view', view);
    expect(sync.read('ns', '', 'view')).toEqual(Uint8Array.from(view));
    expect(text(sync.read('ns', '', 'pooled'))).toBe('pooled value');
    expect(await store.read('ns', '', 'async-view')).toEqual(Uint8Array.from(view));
    await store.close();
  }, 60_000);
});

describe('many blocking calls', () => {
  it('hundreds of blocking writes interleaved with queued async writes and lazy removes of the same keys: each key ends at its last operation', async () => {
    const storeId = `swp-${randomUUID().slice(0, 20)}`;
    const background: unknown[] = [];
    const store = await open(storeId, { onBackgroundError: (e) => background.push(e) });
    const sync = store.toSyncStore();
    const expected = new Map<string, string | null>();
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      const key = `k${i % 7}`;
      switch (i % 4) {
        case 0:
          // Queued, not started (this thread never yields in the loop): the next blocking call on the key supersedes it.
          pending.push(store.write('ns', '', key, bytes(`async ${i}`)));
          expected.set(key, `async ${i}`);
          break;
        case 1:
        case 2:
          sync.write('ns', '', key, bytes(`sync ${i}`));
          expected.set(key, `sync ${i}`);
          break;
        case 3:
          sync.remove('ns', '', key, true);
          expected.set(key, null);
          break;
      }
    }
    await Promise.all(pending);
    await store.flush();
    expect(background).toEqual([]);
    for (const [key, value] of expected) {
      let found: string | null;
      try {
        found = text(sync.read('ns', '', key));
      } catch (error) {
        if (!(error instanceof KeyNotFoundError)) throw error;
        found = null;
      }
      expect([key, found]).toEqual([key, value]);
    }
    await store.close();
  }, 120_000);
});

describe('values at the server\'s request body limit, blocking', () => {
  it('one just under the limit is stored; one over it fails with a typed error before the deadline (not retried into a timeout), no conflict left behind', async () => {
    const storeId = `swp-${randomUUID().slice(0, 20)}`;
    const store = await open(storeId, {}, small.url);
    const sync = store.toSyncStore({ deadlineMs: 20_000 });
    const under = new Uint8Array(BODY_LIMIT - 1024).map((_, i) => i % 251);
    sync.write('ns', '', 'k', under);
    expect(sync.read('ns', '', 'k')).toEqual(under);
    let failure: unknown;
    try {
      sync.write('ns', '', 'k', new Uint8Array(BODY_LIMIT + 1).fill(9));
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(StoreError);
    expect(failure).not.toBeInstanceOf(StoreTimeoutError);
    expect(failure).not.toBeInstanceOf(ConcurrentWriterError);
    sync.write('ns', '', 'k', bytes('small'));
    expect(text(sync.read('ns', '', 'k'))).toBe('small');
    await store.close();
  }, 60_000);
});

describe('a slow version ledger and the blocking API', () => {
  it('a blocking remove while a version a read learned is still being recorded fails before it is sent (VersionLedgerError); once recorded, it succeeds and the next open sees no false rollback', async () => {
    const storeId = `swp-${randomUUID().slice(0, 20)}`;
    const ledger = new SlowFirstLedger();
    const a = await open(storeId, { versionLedger: ledger });
    const sync = a.toSyncStore();
    await a.write('ns', '', 'k', bytes('v1'));
    const b = await open(storeId);
    await b.write('ns', '', 'k', bytes('v2')); // another device moves the key on
    await b.close();
    ledger.slow = 1;
    const reading = a.read('ns', '', 'k'); // learns version 2; its record is slow
    await new Promise((r) => setTimeout(r, 20));
    expect(() => sync.remove('ns', '', 'k', false)).toThrow(VersionLedgerError);
    expect(text(await reading)).toBe('v2');
    expect(await onServer(storeId)).toBe('v2'); // nothing was sent
    sync.remove('ns', '', 'k', false);
    await a.close();
    const reopened = await open(storeId, { versionLedger: ledger });
    await expect(reopened.read('ns', '', 'k')).rejects.toBeInstanceOf(KeyNotFoundError);
    await reopened.close();
  }, 60_000);
});
