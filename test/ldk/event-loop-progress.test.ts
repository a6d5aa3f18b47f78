/**
 * LdkEventLoop under constant traffic: LDK's manager changes (and queues events) while every
 * manager write is in flight. Waiting events are held for a newer write each time, but only a
 * bounded number of times in a row: the app's events cannot be held back for good.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LdkEventLoop, MAX_REWRITES_FOR_EVENTS, initLdk, silentLogger } from '../../src/ldk/index.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { fakeLdkNode, tagOf } from './helpers/fake-ldk-node.js';

beforeAll(async () => {
  await initLdk();
});

/** Manager writes that become durable only when the test releases them, counting the durable ones. */
function gatedStore(): AsyncKVStore & { release(): void; durable: number } {
  const inner = new MemoryKVStore();
  const queue: (() => void)[] = [];
  const store = {
    read: (p: string, s: string, k: string) => inner.read(p, s, k),
    remove: (p: string, s: string, k: string, lazy: boolean) => inner.remove(p, s, k, lazy),
    list: (p: string, s: string) => inner.list(p, s),
    listAll: () => inner.listAll(),
    durable: 0,
    write: async (p: string, s: string, k: string, v: Uint8Array) => {
      await new Promise<void>((resolve) => queue.push(resolve));
      await inner.write(p, s, k, v);
      store.durable++;
    },
    release: () => queue.shift()?.(),
  };
  return store;
}

describe('LdkEventLoop under constant traffic', () => {
  it('holds events for a newer write while the manager changes during each one, then, after MAX_REWRITES_FOR_EVENTS in a row, lets them out', async () => {
    const { state, channelManager, chainMonitor, queueEvent } = fakeLdkNode();
    const store = gatedStore();
    const handled: { tag: bigint; durableAtDelivery: number; serializedBefore: number }[] = [];
    const loop = new LdkEventLoop({
      channelManager,
      chainMonitor,
      store,
      log: silentLogger,
      handleEvent: (e) => {
        const tag = tagOf(e);
        handled.push({ tag, durableAtDelivery: store.durable, serializedBefore: state.serializedBefore.get(tag)! });
      },
    });

    queueEvent(0n);
    expect(loop.poll()).toBe(true); // handed back; the manager write starts
    // Traffic: while each write is in flight, LDK queues another event (the manager changed).
    for (let i = 1; i <= MAX_REWRITES_FOR_EVENTS; i++) {
      queueEvent(BigInt(i));
      store.release();
      await loop.idle();
      expect(loop.poll()).toBe(true); // written again: nothing out yet
      expect(handled).toEqual([]);
    }
    expect(loop.stats.rewritesForEvents).toBe(MAX_REWRITES_FOR_EVENTS);

    // One more change during the last write: the waiting events go out now all the same.
    queueEvent(BigInt(MAX_REWRITES_FOR_EVENTS + 1));
    store.release();
    await loop.idle();
    loop.poll();
    expect(handled.map((h) => h.tag)).toEqual(Array.from({ length: MAX_REWRITES_FOR_EVENTS + 2 }, (_, i) => BigInt(i)));
    // All but the one queued during the last write were in a durable manager when they went out.
    for (const h of handled.slice(0, -1)) expect(h.durableAtDelivery).toBeGreaterThan(h.serializedBefore);
    expect(state.pending).toHaveLength(0);

    // The count starts again: the next event waits for its write as usual.
    queueEvent(100n);
    expect(loop.poll()).toBe(true);
    expect(handled).toHaveLength(MAX_REWRITES_FOR_EVENTS + 2);
    store.release();
    await loop.idle();
    loop.poll();
    expect(handled.at(-1)).toMatchObject({ tag: 100n });
    expect(handled.at(-1)!.durableAtDelivery).toBeGreaterThan(handled.at(-1)!.serializedBefore);
  });
});
