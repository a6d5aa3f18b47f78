/**
 * LdkEventLoop.start() sleeps on LDK's futures. LDK keeps each callback registered on a future
 * until that future completes, so a loop that registered new ones on every idle wake-up (once a
 * second) piled them up, in LDK's memory and the bindings' object table, for as long as LDK had
 * nothing to report.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { initLdk } from '../../src/ldk/index.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { openPair, ownEventLoop, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
let restore: (() => void) | undefined;
afterEach(async () => {
  restore?.();
  restore = undefined;
  await pair?.net.shutdown();
  pair = undefined;
});

/** Counts the FutureCallbacks created from now on and how many of them LDK has called. */
function countFutureCallbacks(): { created: number; called: number } {
  const counts = { created: 0, called: 0 };
  const original = ldk.FutureCallback.new_impl;
  const patched: typeof original = (impl) => {
    counts.created++;
    let called = false;
    return original({
      call: () => {
        if (!called) counts.called++;
        called = true;
        impl.call();
      },
    });
  };
  (ldk.FutureCallback as unknown as { new_impl: typeof original }).new_impl = patched;
  restore = () => void ((ldk.FutureCallback as unknown as { new_impl: typeof original }).new_impl = original);
  return counts;
}

describe('LdkEventLoop sleeping on LDK futures (real LDK)', () => {
  it('keeps at most one callback per future pending while idle, and still wakes when LDK has news', async () => {
    await initLdk();
    const store = new MemoryKVStore();
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a } = pair;
    await net.stop(); // nothing happens to A from here on unless the test does it
    const counts = countFutureCallbacks();
    const loop = ownEventLoop(a, store, {
      handleEvent: () => {},
    });
    a.eventLoop = loop;
    loop.start();
    // Idle for several of the loop's 1 s wake-ups.
    await new Promise((r) => setTimeout(r, 3_500));
    expect(counts.created - counts.called).toBeLessThanOrEqual(2);

    // LDK has news (a block: the manager must be persisted): the pending callback fires and
    // the loop writes the manager.
    const written = new Promise<void>((resolve) => loop.once('manager-persisted', () => resolve()));
    const calledBefore = counts.called;
    net.mine(1);
    await written;
    expect(counts.called).toBeGreaterThan(calledBefore);
    expect(counts.created - counts.called).toBeLessThanOrEqual(2);
    await loop.stop();
  }, 60_000);
});
