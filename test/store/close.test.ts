/**
 * VssStore.close() while writes are queued: every close() call, not only the first, resolves
 * only once the queued writes have settled (a shutdown path that closes the store a second
 * time and then exits must not cut them off).
 */
import { describe, expect, it } from 'vitest';
import type { FetchFunction } from '../../src/client/index.js';
import { StoreClosedError, StoreError } from '../../src/store/index.js';
import { STORE_TEST_BACKENDS, useStoreServer } from './helpers/backends.js';

const SEED = new Uint8Array(64).fill(0x3c);
const FAST_RETRY = { baseDelayMs: 1, maxAttempts: 3, maxTotalDelayMs: 100, maxJitterMs: 0 };

/** A fetch that holds PutObjects requests until `release()`. */
function gatedPuts(): { fetch: FetchFunction; release(): void; held(): number } {
  let gate: (() => void) | undefined;
  let opened = Promise.resolve();
  let held = 0;
  const close = () => {
    opened = new Promise<void>((r) => (gate = r));
  };
  return {
    fetch: async (url, init) => {
      if (url.endsWith('/putObjects')) {
        held++;
        // Held like a slow network, and abandoned like one when the caller aborts.
        const signal = init?.signal ?? undefined;
        const aborted = new Promise<never>((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }));
        try {
          await Promise.race([opened, aborted]);
        } finally {
          held--;
        }
      }
      return fetch(url, init);
    },
    release: () => gate?.(),
    held: () => {
      if (!gate) close();
      return held;
    },
  };
}

describe('VssStore.close() with writes queued (PGlite)', () => {
  const fx = useStoreServer(STORE_TEST_BACKENDS[0], SEED, FAST_RETRY, 'close-test');

  it('a second close() waits for the queued writes like the first one', async () => {
    const puts = gatedPuts();
    const store = await fx.open(fx.newStoreId(), { clientRuntime: { fetch: puts.fetch } });
    puts.held(); // from now on PutObjects wait for release()
    let written = false;
    const write = store.write('ns', '', 'k', Uint8Array.of(1)).then(() => (written = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(puts.held()).toBe(1);

    let firstClosed = false;
    let secondClosed = false;
    const first = store.close().then(() => (firstClosed = true));
    const second = store.close().then(() => (secondClosed = true));
    await new Promise((r) => setTimeout(r, 30));
    expect(written).toBe(false);
    expect(firstClosed).toBe(false);
    expect(secondClosed).toBe(false); // was true at once: the caller could exit with the write in flight
    await expect(store.write('ns', '', 'k2', Uint8Array.of(2))).rejects.toBeInstanceOf(StoreClosedError);

    puts.release();
    await Promise.all([first, second, write]);
    expect(written).toBe(true);
    expect(firstClosed && secondClosed).toBe(true);
  });

  it('abort() stops like a crash: the write on the wire is abandoned, the queued one never sent, new calls refused', async () => {
    const puts = gatedPuts();
    const storeId = fx.newStoreId();
    const store = await fx.open(storeId, { clientRuntime: { fetch: puts.fetch } });
    puts.held();
    const onTheWire = store.write('ns', '', 'k', Uint8Array.of(1)).catch((e: unknown) => e);
    const queued = store.write('ns', '', 'k', Uint8Array.of(2)).catch((e: unknown) => e); // same key: waits behind it
    await new Promise((r) => setTimeout(r, 20));
    expect(puts.held()).toBe(1);
    const aborted = store.abort();
    await expect(store.read('ns', '', 'k')).rejects.toBeInstanceOf(StoreClosedError);
    expect(await onTheWire).toBeInstanceOf(StoreError);
    expect(await queued).toBeInstanceOf(StoreError);
    await aborted; // settles without waiting for the held request
    puts.release();
    await new Promise((r) => setTimeout(r, 50));
    const view = await fx.open(storeId);
    expect(await view.list('ns', '')).toEqual([]); // the held request was abandoned before it was sent
    await view.close();
  });
});
