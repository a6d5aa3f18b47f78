/**
 * LdkEventLoop under constant traffic: LDK's manager changes (and queues events) while every
 * manager write is in flight. Events handed back must still go out, one write after another,
 * and never before a manager holding them is durable.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { LdkEventLoop, initLdk } from '../../src/ldk/index.js';
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
  it('events go out one write after another while the manager changes during every write, each only once a manager holding it is durable', async () => {
    const { state, channelManager, chainMonitor, queueEvent } = fakeLdkNode();
    const store = gatedStore();
    const handled: { tag: bigint; durableAtDelivery: number; serializedBefore: number }[] = [];
    const loop = new LdkEventLoop({
      channelManager,
      chainMonitor,
      store,
      handleEvent: (e) => {
        const tag = tagOf(e);
        handled.push({ tag, durableAtDelivery: store.durable, serializedBefore: state.serializedBefore.get(tag)! });
      },
    });

    queueEvent(0n);
    expect(loop.poll()).toBe(true); // handed back; the manager write starts
    const rounds = 6;
    for (let i = 1; i <= rounds; i++) {
      // Traffic: while this write is in flight, LDK queues another event (the manager changed).
      queueEvent(BigInt(i));
      store.release();
      await loop.idle();
      loop.poll();
    }

    // Every round's write is durable before the next poll, so at least one event per write goes
    // out (before the fix: none at all while the traffic lasted).
    expect(handled.length).toBeGreaterThanOrEqual(rounds);
    expect(handled.map((h) => h.tag)).toEqual(handled.map((_, i) => BigInt(i)));
    // And none before a manager serialized after it was queued was durable.
    for (const h of handled) expect(h.durableAtDelivery).toBeGreaterThan(h.serializedBefore);

    // Once the traffic stops, the rest goes out after one more write.
    store.release();
    await loop.idle();
    loop.poll();
    expect(handled.map((h) => h.tag)).toEqual(Array.from({ length: rounds + 1 }, (_, i) => BigInt(i)));
    for (const h of handled) expect(h.durableAtDelivery).toBeGreaterThan(h.serializedBefore);
    expect(state.pending).toHaveLength(0);
  });
  it('lets the handed-back head of each queue out (ChainMonitor and ChannelManager), and only those', async () => {
    const { state, channelManager, chainMonitor, queueEvent } = fakeLdkNode();
    const store = gatedStore();
    const handled: bigint[] = [];
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, handleEvent: (e) => void handled.push(tagOf(e)) });
    queueEvent(100n, true);
    queueEvent(0n);
    expect(loop.poll()).toBe(true); // both heads handed back; the manager write starts
    queueEvent(1n); // the manager changes while the write is in flight
    store.release();
    await loop.idle();
    loop.poll();
    expect(handled).toEqual([100n, 0n]);
    expect(state.pending.map(tagOf)).toEqual([1n]);
    expect(loop.persisting).toBe(true); // the newer write event 1 waits for
  });
});
