/**
 * Adversarial review of the write path (async API, real server in this thread on the memory
 * backend): lost replies under supersede chains and removes, listings while writes are in
 * flight, abort() with removes queued, a "crash" between the server's ack and the ledger record,
 * values at the server's body limit, and concurrent reads racing another writer.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FetchFunction } from '../../src/client/index.js';
import { MemoryBackend, startVssServer } from '../../src/server/index.js';
import {
  ConcurrentWriterError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
  StoreError,
  StoreIOError,
  VssStore,
  type VersionChange,
  type VssStoreOptions,
} from '../../src/store/index.js';
import { MemoryLedger, SlowFirstLedger } from './helpers/memory-ledger.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x6b);
const tick = () => new Promise((r) => setTimeout(r, 0));

let server: Awaited<ReturnType<typeof startVssServer>>;
let small: Awaited<ReturnType<typeof startVssServer>>;
const BODY_LIMIT = 64 * 1024;
beforeAll(async () => {
  server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  small = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0, maxRequestBodySize: BODY_LIMIT });
});
afterAll(async () => {
  await server?.close();
  await small?.close();
});

/**
 * A fetch whose PutObjects can be made to lose their reply after the server committed, or be
 * held (the server has not seen them) until released, or held after the server answered.
 */
class Wire {
  loseReplies = 0;
  #holdRequest: Array<() => void> = [];
  #holdReply: Array<() => void> = [];
  holdNextRequest = false;
  holdNextReply = false;
  sent: string[] = [];

  releaseRequest(): void {
    this.#holdRequest.shift()?.();
  }
  releaseReply(): void {
    this.#holdReply.shift()?.();
  }
  get heldReplies(): number {
    return this.#holdReply.length;
  }
  get heldRequests(): number {
    return this.#holdRequest.length;
  }

  readonly fetch: FetchFunction = async (url, init) => {
    const op = url.slice(url.lastIndexOf('/') + 1);
    this.sent.push(op);
    if (op === 'putObjects' && this.holdNextRequest) {
      this.holdNextRequest = false;
      const signal = init?.signal ?? undefined;
      await new Promise<void>((resolve, reject) => {
        this.#holdRequest.push(resolve);
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
    }
    const response = await fetch(url, init);
    if (op === 'putObjects' && this.holdNextReply) {
      this.holdNextReply = false;
      const body = await response.arrayBuffer();
      await new Promise<void>((resolve) => this.#holdReply.push(resolve));
      return new Response(body, { status: response.status, headers: response.headers });
    }
    if (op === 'putObjects' && this.loseReplies > 0) {
      this.loseReplies -= 1;
      await response.arrayBuffer(); // the server committed; the reply is lost
      throw new TypeError('fetch failed: socket hang up');
    }
    return response;
  };
}

const open = (storeId: string, wire?: Wire, extra: Partial<VssStoreOptions> = {}, url = server.url) =>
  VssStore.open({
    storeId,
    client: { baseUrl: url, retry: 'none' },
    keys: { seed: SEED },
    ...(wire ? { clientRuntime: { fetch: wire.fetch } } : {}),
    ...extra,
  });

/** What a fresh instance finds at ('ns', '', key). */
async function onServer(storeId: string, key = 'k', url = server.url): Promise<string | null> {
  const fresh = await open(storeId, undefined, {}, url);
  try {
    return text(await fresh.read('ns', '', key));
  } catch (error) {
    if (error instanceof KeyNotFoundError) return null;
    throw error;
  }
  finally {
    await fresh.close();
  }
}

const settled = (p: Promise<unknown>) => p.then(() => 'ok' as const, (e: unknown) => e);

describe('lost replies under supersede chains', () => {
  it('a write whose reply is lost (committed) while write, remove and write queue behind it: only the last is sent, every caller settles, the server holds it', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    await store.write('ns', '', 'k', bytes('v0'));
    wire.loseReplies = 1;
    const p1 = settled(store.write('ns', '', 'k', bytes('v1')));
    await tick(); // p1 is on the wire
    const p2 = settled(store.write('ns', '', 'k', bytes('v2')));
    const p3 = settled(store.remove('ns', '', 'k', false));
    const p4 = settled(store.write('ns', '', 'k', bytes('v4')));
    expect(await p1).toBeInstanceOf(StoreIOError);
    expect([await p2, await p3, await p4]).toEqual(['ok', 'ok', 'ok']);
    expect(text(await store.read('ns', '', 'k'))).toBe('v4');
    await store.close();
    expect(await onServer(storeId)).toBe('v4');
    // The marker, v0, v1 (lost), then v4: v2 and the remove were never sent.
    expect(wire.sent.filter((op) => op === 'putObjects')).toHaveLength(4);
  });

  it('a remove superseding a write behind a lost reply (committed): the key ends absent, no false conflict', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    wire.loseReplies = 1;
    const p1 = settled(store.write('ns', '', 'k', bytes('v1'))); // a create whose reply is lost
    await tick();
    const p2 = settled(store.write('ns', '', 'k', bytes('v2')));
    const p3 = settled(store.remove('ns', '', 'k', false));
    expect(await p1).toBeInstanceOf(StoreIOError);
    expect([await p2, await p3]).toEqual(['ok', 'ok']);
    await expect(store.read('ns', '', 'k')).rejects.toBeInstanceOf(KeyNotFoundError);
    await store.close();
    expect(await onServer(storeId)).toBeNull();
  });

  it('a lazy remove behind a lost reply (committed) removes the key; onBackgroundError is not called', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const background: unknown[] = [];
    const store = await open(storeId, wire, { onBackgroundError: (e) => background.push(e) });
    await store.write('ns', '', 'k', bytes('v0'));
    wire.loseReplies = 1;
    const p1 = settled(store.write('ns', '', 'k', bytes('v1')));
    await tick();
    await store.remove('ns', '', 'k', true);
    expect(await p1).toBeInstanceOf(StoreIOError);
    await store.flush();
    expect(background).toEqual([]);
    await store.close();
    expect(await onServer(storeId)).toBeNull();
  });

  it('a remove whose reply is lost (committed), then a write: the write goes as a create and lands', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const ledger = new MemoryLedger();
    const store = await open(storeId, wire, { versionLedger: ledger });
    await store.write('ns', '', 'k', bytes('v0'));
    wire.loseReplies = 1;
    const p1 = settled(store.remove('ns', '', 'k', false));
    await tick();
    const p2 = settled(store.write('ns', '', 'k', bytes('v2')));
    expect(await p1).toBeInstanceOf(StoreIOError);
    expect(await p2).toBe('ok');
    await store.close();
    expect(await onServer(storeId)).toBe('v2');
    const again = await open(storeId, undefined, { versionLedger: ledger });
    expect(text(await again.read('ns', '', 'k'))).toBe('v2');
    await again.close();
  });
});

describe('listings while writes are in flight', () => {
  it('list shows a key whose create the server committed but whose reply has not arrived; not one whose request has not reached the server', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    wire.holdNextReply = true;
    const committed = store.write('ns', '', 'a', bytes('a'));
    await new Promise((r) => setTimeout(r, 20));
    expect(wire.heldReplies).toBe(1);
    wire.holdNextRequest = true;
    const notYet = store.write('ns', '', 'b', bytes('b'));
    await new Promise((r) => setTimeout(r, 20));
    expect(wire.heldRequests).toBe(1);
    // Listing shows the server's state, not the caller's acknowledged writes.
    expect(await store.list('ns', '')).toEqual(['a']);
    expect((await store.listAll()).map((k) => k.key)).toEqual(['a']);
    wire.releaseReply();
    wire.releaseRequest();
    await Promise.all([committed, notYet]);
    expect((await store.list('ns', '')).sort()).toEqual(['a', 'b']);
    // A write after the listing is no false conflict and no false rollback.
    await store.write('ns', '', 'a', bytes('a2'));
    await store.close();
    expect(await onServer(storeId, 'a')).toBe('a2');
  });
});

describe('abort() with work queued', () => {
  it('writes on the wire fail with StoreIOError; a remove and a lazy remove queued behind them fail with StoreClosedError, unsent; the ledger keeps the keys', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const ledger = new MemoryLedger();
    const background: unknown[] = [];
    const store = await open(storeId, wire, { versionLedger: ledger, onBackgroundError: (e) => background.push(e) });
    await store.write('ns', '', 'k', bytes('v0'));
    await store.write('ns', '', 'j', bytes('j0'));
    const recorded = new Map(ledger.versions);
    // k's and j's next writes are held before the server sees them; a remove of each waits behind.
    wire.holdNextRequest = true;
    const kInFlight = settled(store.write('ns', '', 'k', bytes('k1')));
    await tick();
    const queuedRemove = settled(store.remove('ns', '', 'k', false));
    wire.holdNextRequest = true;
    const jInFlight = settled(store.write('ns', '', 'j', bytes('j1')));
    await tick();
    await store.remove('ns', '', 'j', true);
    const aborting = store.abort();
    expect(await kInFlight).toBeInstanceOf(StoreIOError);
    expect(await jInFlight).toBeInstanceOf(StoreIOError);
    expect(await queuedRemove).toBeInstanceOf(StoreClosedError);
    await aborting;
    expect(background).toHaveLength(1);
    expect(background[0]).toBeInstanceOf(StoreClosedError);
    // Nothing more was recorded: the removes never ran, so the ledger still holds k and j.
    expect(ledger.versions).toEqual(recorded);
    expect(wire.sent.filter((op) => op === 'putObjects')).toHaveLength(5);
  });

  it('a remove and a lazy remove queued just before abort() (not started) fail with StoreClosedError, unsent, the ledger untouched', async () => {
    const storeId = `wp-${randomUUID()}`;
    const wire = new Wire();
    const ledger = new MemoryLedger();
    const background: unknown[] = [];
    const store = await open(storeId, wire, { versionLedger: ledger, onBackgroundError: (e) => background.push(e) });
    await store.write('ns', '', 'k', bytes('v0'));
    await store.write('ns', '', 'j', bytes('j0'));
    const recorded = new Map(ledger.versions);
    const sent = wire.sent.length;
    const removing = settled(store.remove('ns', '', 'k', false));
    void store.remove('ns', '', 'j', true); // not awaited: that would let the removes start
    await store.abort();
    expect(await removing).toBeInstanceOf(StoreClosedError);
    expect(background).toHaveLength(1);
    expect(background[0]).toBeInstanceOf(StoreClosedError);
    expect(ledger.versions).toEqual(recorded);
    expect(wire.sent.length).toBe(sent);
  });
});

describe('close() with the server gone', () => {
  it('queued writes, removes and lazy removes on many keys all settle with typed errors; close() resolves; nothing hangs', async () => {
    const gone = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
    const storeId = `wp-${randomUUID()}`;
    const background: unknown[] = [];
    const store = await VssStore.open({
      storeId,
      client: { baseUrl: gone.url, retry: { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 20, maxJitterMs: 0 } },
      keys: { seed: SEED },
      onBackgroundError: (e) => background.push(e),
    });
    await store.write('ns', '', 'k0', bytes('v'));
    await gone.close();
    const outcomes: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++) {
      outcomes.push(settled(store.write('ns', '', `k${i}`, bytes('a'))));
      outcomes.push(settled(store.write('ns', '', `k${i}`, bytes('b'))));
      outcomes.push(settled(store.remove('ns', '', `k${i}`, false)));
      void store.remove('ns', '', `k${i}`, true);
    }
    await store.close();
    for (const outcome of await Promise.all(outcomes)) expect(outcome).toBeInstanceOf(StoreIOError);
    expect(background).toHaveLength(5);
    for (const error of background) expect(error).toBeInstanceOf(StoreIOError);
  });
});

describe('the version ledger around a crash', () => {
  /** A ledger whose next record never completes (the process "dies" while recording). */
  class StallingLedger extends MemoryLedger {
    stallNext = false;
    override async record(changes: readonly VersionChange[]): Promise<void> {
      if (this.stallNext) {
        this.stallNext = false;
        return new Promise<void>(() => {});
      }
      return super.record(changes);
    }
  }

  it('a crash between the server\'s ack and the ledger record: the restart accepts the server (ahead), no false rollback, and still detects a real one', async () => {
    const storeId = `wp-${randomUUID()}`;
    const ledger = new StallingLedger();
    const store = await open(storeId, undefined, { versionLedger: ledger });
    await store.write('ns', '', 'k', bytes('v1'));
    await store.write('ns', '', 'm', bytes('m1'));
    ledger.stallNext = true;
    const write = settled(store.write('ns', '', 'k', bytes('v2')));
    await new Promise((r) => setTimeout(r, 30)); // acked by the server, stuck recording
    void store.abort(); // the crash: the record never lands
    void write;
    const restarted = await open(storeId, undefined, { versionLedger: ledger });
    expect(text(await restarted.read('ns', '', 'k'))).toBe('v2');
    // The restarted ledger caught up with the server: losing v2 now is detected.
    const backup = (server.backend as MemoryBackend).snapshot();
    await restarted.write('ns', '', 'm', bytes('m2'));
    await restarted.write('ns', '', 'k', bytes('v3'));
    await restarted.close();
    (server.backend as MemoryBackend).restore(backup);
    await expect(open(storeId, undefined, { versionLedger: ledger })).rejects.toBeInstanceOf(RollbackDetectedError);
  });

  it('a crash between forgetting a removed key and the delete: the restart opens (the server holds the key, the ledger under-states it)', async () => {
    const storeId = `wp-${randomUUID()}`;
    const ledger = new MemoryLedger();
    const wire = new Wire();
    const store = await open(storeId, wire, { versionLedger: ledger });
    await store.write('ns', '', 'k', bytes('v1'));
    wire.holdNextRequest = true;
    const removing = settled(store.remove('ns', '', 'k', false));
    await tick();
    expect(wire.heldRequests).toBe(1);
    await store.abort();
    expect(await removing).toBeInstanceOf(StoreIOError);
    const restarted = await open(storeId, undefined, { versionLedger: ledger });
    expect(text(await restarted.read('ns', '', 'k'))).toBe('v1');
    await restarted.close();
  });
});

describe('values at the server\'s request body limit', () => {
  it('a value just under the limit is stored; one over it fails promptly with a typed error, leaves no conflict, and the key stays writable', async () => {
    const storeId = `wp-${randomUUID()}`;
    const store = await open(storeId, undefined, {}, small.url);
    const under = new Uint8Array(BODY_LIMIT - 1024).map((_, i) => i % 251);
    await store.write('ns', '', 'k', under);
    expect(await store.read('ns', '', 'k')).toEqual(under);
    const over = new Uint8Array(BODY_LIMIT + 1).fill(7);
    const failure = await settled(store.write('ns', '', 'k', over));
    expect(failure).toBeInstanceOf(StoreError);
    expect(failure).not.toBeInstanceOf(ConcurrentWriterError);
    await store.write('ns', '', 'k', bytes('small'));
    await store.close();
    expect(await onServer(storeId, 'k', small.url)).toBe('small');
  });
});

describe('concurrent reads racing another writer', () => {
  /** A fetch that holds the answer of the next GetObject or ListKeyVersions (the server has served it) until released. */
  function heldAnswers(): { fetch: FetchFunction; hold(op: 'getObject' | 'listKeyVersions'): void; release(): void; held(): number } {
    let holdOp: string | undefined;
    const held: Array<() => void> = [];
    return {
      fetch: async (url, init) => {
        const op = url.slice(url.lastIndexOf('/') + 1);
        const response = await fetch(url, init);
        if (op !== holdOp) return response;
        holdOp = undefined;
        const body = await response.arrayBuffer();
        await new Promise<void>((resolve) => held.push(resolve));
        return new Response(body, { status: response.status, headers: response.headers });
      },
      hold: (op) => (holdOp = op),
      release: () => held.shift()?.(),
      held: () => held.length,
    };
  }

  for (const op of ['getObject', 'listKeyVersions'] as const) {
    it(`an older answer (${op}) arriving after a newer read taught a newer version is no rollback`, async () => {
      const storeId = `wp-${randomUUID()}`;
      const wire = heldAnswers();
      const a = await VssStore.open({ storeId, client: { baseUrl: server.url, retry: 'none' }, keys: { seed: SEED }, clientRuntime: { fetch: wire.fetch } });
      await a.write('ns', '', 'k', bytes('v1'));
      const b = await open(storeId);
      wire.hold(op);
      const older = (op === 'getObject' ? a.read('ns', '', 'k').then(text) : a.list('ns', '')).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 20));
      expect(wire.held()).toBe(1); // served at version 1, answer not yet here
      await b.write('ns', '', 'k', bytes('v2')); // another writer (e.g. another device)
      expect(text(await a.read('ns', '', 'k'))).toBe('v2'); // A learns version 2
      wire.release();
      const result = await older;
      expect(result).toEqual(op === 'getObject' ? 'v1' : ['k']);
      // And A's state is the newer one: its next write builds on version 2.
      await a.write('ns', '', 'k', bytes('v3'));
      await a.close();
      await b.close();
      expect(await onServer(storeId)).toBe('v3');
    });
  }
});

describe('a slow version ledger', () => {

  it('a version a read learned, recorded slowly, never lands after a later remove of the key (no false rollback at the next open)', async () => {
    const storeId = `wp-${randomUUID()}`;
    const ledger = new SlowFirstLedger();
    const a = await open(storeId, undefined, { versionLedger: ledger });
    await a.write('ns', '', 'k', bytes('v1'));
    const b = await open(storeId);
    await b.write('ns', '', 'k', bytes('v2')); // another device moves the key on
    await b.close();
    ledger.slow = 1;
    const reading = a.read('ns', '', 'k'); // learns version 2; its record is slow
    await new Promise((r) => setTimeout(r, 20));
    await a.remove('ns', '', 'k', false); // the caller read v2 (the value is on its way), removes it
    expect(text(await reading)).toBe('v2');
    await a.close();
    const reopened = await open(storeId, undefined, { versionLedger: ledger });
    await expect(reopened.read('ns', '', 'k')).rejects.toBeInstanceOf(KeyNotFoundError);
    await reopened.close();
  });
});

describe('unconditional mode (LDK Node compatible): a known limit, pinned', () => {
  it('a write whose request lands late, after a newer write succeeded, silently replaces the newer value (versions -1 cannot fence it; conditional mode refuses it)', async () => {
    for (const writeMode of ['unconditional', 'conditional'] as const) {
      const storeId = `wp-${randomUUID()}`;
      let late: (() => Promise<void>) | undefined;
      let breakNext = false;
      const fetchFn: FetchFunction = async (url, init) => {
        if (url.endsWith('/putObjects') && breakNext) {
          breakNext = false;
          const { signal: _signal, ...unsignalled } = init;
          late = async () => void (await (await fetch(url, unsignalled)).arrayBuffer());
          throw new TypeError('fetch failed: socket hang up'); // sent, the connection broke
        }
        return fetch(url, init);
      };
      const store = await open(storeId, undefined, { writeMode, clientRuntime: { fetch: fetchFn } });
      await store.write('ns', '', 'k', bytes('v1'));
      breakNext = true;
      await expect(store.write('ns', '', 'k', bytes('old'))).rejects.toBeInstanceOf(StoreIOError);
      await store.write('ns', '', 'k', bytes('new'));
      await late!(); // the broken request reaches the server only now
      await store.close();
      expect([writeMode, await onServer(storeId)]).toEqual([writeMode, writeMode === 'unconditional' ? 'old' : 'new']);
    }
  });
});
