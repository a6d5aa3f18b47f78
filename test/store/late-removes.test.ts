/**
 * Late attempts and removes, on the real server over loopback: a request whose connection broke
 * after it was sent (the caller saw StoreIOError, the read-back found it not applied) and that
 * the server applies afterwards. A late remove of ours is recognised as long as nothing newer of
 * ours applied; a late write of ours is recognised even after a remove and a re-create brought
 * the key back to the version it expected (VSS restarts a re-created key at version 1).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FetchFunction, FetchResponse } from '../../src/client/index.js';
import { PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';
import {
  ConcurrentWriterError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreIOError,
  VssStore,
  type VssStoreOptions,
} from '../../src/store/index.js';
import { MemoryLedger } from './helpers/memory-ledger.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x5a);

let server: Awaited<ReturnType<typeof startVssServer>>;
beforeAll(async () => {
  server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
});
afterAll(async () => {
  await server?.close();
});

/**
 * A fetch that can break the next PutObjects after sending it (the request is kept, to land
 * when the test says), run something just before the next PutObjects goes out, or refuse the
 * next PutObjects with 401 (an answer that proves nothing was applied).
 */
class Wire {
  #breakNext = 0;
  #failNext = false;
  #refuseNext = false;
  #beforeNext: (() => Promise<void>) | undefined;
  readonly #held: Array<() => Promise<void>> = [];

  /**
   * The next `count` puts (attempts: the client may retry) fail on the client, each with its
   * outcome unknown, but reach the server later, via `land`.
   */
  breakNextPut(count = 1): void {
    this.#breakNext = count;
  }
  /** The next put fails on the client (StoreIOError, outcome unknown) and never reaches the server. */
  failNextPut(): void {
    this.#failNext = true;
  }
  /** The oldest held put reaches the server now. */
  async land(): Promise<void> {
    const held = this.#held.shift();
    if (!held) throw new Error('no put is held');
    await held();
  }
  /** The oldest held put lands just before the next put is sent. */
  landBeforeNextPut(): void {
    this.#beforeNext = () => this.land();
  }
  refuseNextPut(): void {
    this.#refuseNext = true;
  }
  get holding(): number {
    return this.#held.length;
  }

  readonly fetch: FetchFunction = async (url, init) => {
    if (url.endsWith('/putObjects')) {
      const before = this.#beforeNext;
      this.#beforeNext = undefined;
      await before?.();
      if (this.#breakNext > 0) {
        this.#breakNext -= 1;
        // A request already on the wire is not stopped by the client giving up on it.
        const { signal: _signal, ...unsignalled } = init;
        this.#held.push(async () => void (await (await fetch(url, unsignalled)).arrayBuffer()));
        throw new TypeError('fetch failed: socket hang up');
      }
      if (this.#failNext) {
        this.#failNext = false;
        throw new TypeError('fetch failed: socket hang up');
      }
      if (this.#refuseNext) {
        this.#refuseNext = false;
        return refused();
      }
    }
    return fetch(url, init);
  };
}

/** A 401 from the server (e.g. an expired token): typed AuthError, nothing applied. */
function refused(): FetchResponse {
  const body = vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.AUTH_EXCEPTION, message: 'token expired' }).finish();
  return new Response(Uint8Array.from(body), { status: 401, headers: { [PROTOCOL_VERSION_HEADER]: PROTOCOL_VERSION } });
}

const open = (storeId: string, wire?: Wire, extra: Partial<VssStoreOptions> = {}) =>
  VssStore.open({
    storeId,
    client: { baseUrl: server.url, retry: 'none' },
    keys: { seed: SEED },
    ...(wire ? { clientRuntime: { fetch: wire.fetch } } : {}),
    ...extra,
  });

/** What a fresh instance (no faults, no memory) finds. */
async function onServer(storeId: string): Promise<string | null> {
  const fresh = await open(storeId);
  try {
    return text(await fresh.read('ns', '', 'k'));
  } catch (error) {
    if (error instanceof KeyNotFoundError) return null;
    throw error;
  }
}

/**
 * Writes v1, then removes the key with the delete breaking after it went out: the caller sees
 * StoreIOError and the delete is held by `wire`, to land when the test says.
 */
async function loseRemoveAfterWrite(store: VssStore, wire: Wire): Promise<void> {
  await store.write('ns', '', 'k', bytes('v1'));
  wire.breakNextPut();
  await expect(store.remove('ns', '', 'k', false)).rejects.toBeInstanceOf(StoreIOError);
}

describe('a remove of ours that lands late', () => {
  it('is not taken for another writer by the next write: the write resolves, as a create', async () => {
    const storeId = `late-rm-${randomUUID()}`;
    const wire = new Wire();
    const ledger = new MemoryLedger();
    const store = await open(storeId, wire, { versionLedger: ledger });
    await loseRemoveAfterWrite(store, wire);
    // The next write reads back (v1: the remove "did not commit"), then the held delete lands,
    // then the write's compare-and-set expecting v1 meets 409.
    wire.landBeforeNextPut();
    await store.write('ns', '', 'k', bytes('v2'));
    expect(wire.holding).toBe(0);
    expect(text(await store.read('ns', '', 'k'))).toBe('v2');
    await store.write('ns', '', 'k', bytes('v3'));
    expect(await onServer(storeId)).toBe('v3');
    await store.close();
    // The ledger followed the key through its removal and re-creation: the store reopens.
    const reopened = await open(storeId, undefined, { versionLedger: ledger });
    expect(text(await reopened.read('ns', '', 'k'))).toBe('v3');
    await reopened.close();
  });

  it('is not taken for a rollback by a read: the key is gone, as the caller asked', async () => {
    const storeId = `late-rm-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    await loseRemoveAfterWrite(store, wire);
    // This write reads back (v1: the remove "did not commit"), then is refused unapplied.
    wire.refuseNextPut();
    await expect(store.write('ns', '', 'k', bytes('v2'))).rejects.toBeInstanceOf(StoreIOError);
    await wire.land();
    await expect(store.read('ns', '', 'k')).rejects.toBeInstanceOf(KeyNotFoundError);
    await store.write('ns', '', 'k', bytes('v3'));
    expect(await onServer(storeId)).toBe('v3');
    await store.close();
  });

  it('is the same for a remove and a batch that meet it', async () => {
    const storeId = `late-rm-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    await loseRemoveAfterWrite(store, wire);
    wire.landBeforeNextPut();
    await store.remove('ns', '', 'k', false);
    expect(await onServer(storeId)).toBeNull();

    await store.write('ns', '', 'k', bytes('v2'));
    wire.breakNextPut();
    await expect(store.remove('ns', '', 'k', false)).rejects.toBeInstanceOf(StoreIOError);
    wire.landBeforeNextPut();
    await store.writeBatch([
      { primaryNamespace: 'ns', secondaryNamespace: '', key: 'k', value: bytes('v3') },
      { primaryNamespace: 'ns', secondaryNamespace: '', key: 'other', value: bytes('o') },
    ]);
    expect(await onServer(storeId)).toBe('v3');
    await store.close();
  });

  it('is forgotten once a read saw the key at another version: another writer\'s delete after that stays a conflict', async () => {
    const storeId = `late-rm-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    const other = await open(storeId);
    await loseRemoveAfterWrite(store, wire);
    wire.failNextPut();
    // Reads back v1 (the remove did not commit), then fails with its own outcome unknown.
    await expect(store.write('ns', '', 'k', bytes('v2'))).rejects.toBeInstanceOf(StoreIOError);
    await other.read('ns', '', 'k');
    await other.write('ns', '', 'k', bytes('theirs'));
    // This read sees version 2 (not adopted: a write of ours is still uncertain). Our old
    // delete expected version 1: from now on it cannot be why the key vanishes.
    expect(text(await store.read('ns', '', 'k'))).toBe('theirs');
    await other.remove('ns', '', 'k', false);
    await wire.land(); // too late: the key is gone
    await expect(store.write('ns', '', 'k', bytes('v3'))).rejects.toBeInstanceOf(ConcurrentWriterError);
    expect(await onServer(storeId)).toBeNull();
    await store.close();
    await other.close();
  });

  it('never explains the key vanishing once a newer write of ours applied: that is acknowledged data lost', async () => {
    const storeId = `late-rm-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    await loseRemoveAfterWrite(store, wire);
    await store.write('ns', '', 'k', bytes('v2')); // reads back v1, applies on top: version 2
    await store.remove('ns', '', 'k', false);
    await store.write('ns', '', 'k', bytes('acknowledged')); // re-created: version 1 again
    // The old delete, expecting version 1, now passes on the re-created key. VSS versions
    // cannot fence it; the store must say so rather than adopt the loss as a remove of ours.
    await wire.land();
    expect(await onServer(storeId)).toBeNull();
    await expect(store.read('ns', '', 'k')).rejects.toBeInstanceOf(RollbackDetectedError);
    await expect(store.write('ns', '', 'k', bytes('after'))).rejects.toBeInstanceOf(ConcurrentWriterError);
    await store.close();
  });
});

describe('a write of ours that lands late after a remove', () => {
  it('landing on the re-created key is recognised: the next write resolves and replaces it', async () => {
    const storeId = `late-wr-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    await store.write('ns', '', 'k', bytes('a'));
    wire.breakNextPut();
    await expect(store.write('ns', '', 'k', bytes('old-failed'))).rejects.toBeInstanceOf(StoreIOError);
    await store.remove('ns', '', 'k', false); // reads back: "a", the failed write did not commit
    await store.write('ns', '', 'k', bytes('b')); // re-created at version 1
    // The failed write expected version 1 and lands on the new object. VSS cannot fence it.
    await wire.land();
    expect(await onServer(storeId)).toBe('old-failed');
    await store.write('ns', '', 'k', bytes('c'));
    expect(await onServer(storeId)).toBe('c');
    expect(text(await store.read('ns', '', 'k'))).toBe('c');
    await store.close();
  });

  it('a write of ours superseded by our own late remove is remembered too: its landing later is recognised', async () => {
    const storeId = `late-wr-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    await loseRemoveAfterWrite(store, wire);
    wire.breakNextPut();
    // Reads back v1 (the remove did not commit), then its own put breaks: both expect version 1.
    await expect(store.write('ns', '', 'k', bytes('x'))).rejects.toBeInstanceOf(StoreIOError);
    await wire.land(); // the remove
    await store.write('ns', '', 'k', bytes('y')); // reads back: gone, our remove; creates (version 1)
    await wire.land(); // the write "x", expecting version 1, lands on the new object
    expect(await onServer(storeId)).toBe('x');
    await store.write('ns', '', 'k', bytes('z'));
    expect(await onServer(storeId)).toBe('z');
    await store.close();
  });

  it('a copy of a write that committed is recognised too: the client sent it twice and one copy lands after a remove', async () => {
    const storeId = `late-wr-${randomUUID()}`;
    const wire = new Wire();
    const retry = { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 100, maxJitterMs: 0 };
    const store = await open(storeId, wire, { client: { baseUrl: server.url, retry } });
    wire.breakNextPut(2); // both attempts of the create break after they went out
    await expect(store.write('ns', '', 'k', bytes('x'))).rejects.toBeInstanceOf(StoreIOError);
    await wire.land(); // one copy lands
    await store.remove('ns', '', 'k', false); // reads back: "x" committed; then removes it
    await wire.land(); // the other copy finds the key absent and creates it again
    expect(await onServer(storeId)).toBe('x');
    await store.write('ns', '', 'k', bytes('y'));
    expect(await onServer(storeId)).toBe('y');
    await store.close();
  });

  it('a create landing after the key was re-created and removed again is removed again, not a conflict', async () => {
    const storeId = `late-wr-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    wire.breakNextPut();
    await expect(store.write('ns', '', 'k', bytes('failed-create'))).rejects.toBeInstanceOf(StoreIOError);
    await store.write('ns', '', 'k', bytes('b')); // reads back: absent, then creates
    await store.remove('ns', '', 'k', false);
    await wire.land(); // the failed create finds the key absent and lands
    expect(await onServer(storeId)).toBe('failed-create');
    // The caller's last word was the remove: the store removes its own stray value again.
    await store.remove('ns', '', 'k', false);
    expect(await onServer(storeId)).toBeNull();
    await store.close();
  });

  it('another writer\'s value is still a conflict, with late writes of ours remembered', async () => {
    const storeId = `late-wr-${randomUUID()}`;
    const wire = new Wire();
    const store = await open(storeId, wire);
    const other = await open(storeId);
    await store.write('ns', '', 'k', bytes('a'));
    wire.breakNextPut();
    await expect(store.write('ns', '', 'k', bytes('old-failed'))).rejects.toBeInstanceOf(StoreIOError);
    await store.remove('ns', '', 'k', false);
    await store.write('ns', '', 'k', bytes('b'));
    await other.read('ns', '', 'k');
    await other.write('ns', '', 'k', bytes('theirs'));
    await expect(store.write('ns', '', 'k', bytes('c'))).rejects.toBeInstanceOf(ConcurrentWriterError);
    await expect(store.remove('ns', '', 'k', false)).rejects.toBeInstanceOf(ConcurrentWriterError);
    expect(await onServer(storeId)).toBe('theirs');
    await wire.land(); // expects version 1, the key is at 2: refused by the server
    expect(await onServer(storeId)).toBe('theirs');
    await store.close();
    await other.close();
  });
});
