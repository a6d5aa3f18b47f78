/**
 * LdkEventLoop under constant traffic: LDK's manager changes (and queues events) while every
 * manager write is in flight. Waiting events are held for a newer write each time, but only a
 * bounded number of times in a row: the app's events cannot be held back for good.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { LdkEventLoop, LdkPanicError, MAX_REWRITES_FOR_EVENTS, initLdk, isDeliveredWithoutManagerWrite, silentLogger } from '../../src/ldk/index.js';
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

describe('payment outcomes while a manager write is owed', () => {
  const bytes = (fill: number) => new Uint8Array(32).fill(fill);
  const paymentSent = () =>
    ldk.Event.constructor_payment_sent(ldk.Option_ThirtyTwoBytesZ.constructor_some(bytes(1)), bytes(2), bytes(3), ldk.Option_u64Z.constructor_none());
  const paymentFailed = () =>
    ldk.Event.constructor_payment_failed(bytes(4), ldk.Option_ThirtyTwoBytesZ.constructor_some(bytes(5)), ldk.Option_PaymentFailureReasonZ.constructor_none());

  /** A loop over a fake node whose manager writes wait for `store.release()`; `handled` records what reached the app and how many writes were durable then. */
  const recordingLoop = (coalesceMs?: number) => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = gatedStore();
    const handled: { kind: string; durableAtDelivery: number }[] = [];
    const loop = new LdkEventLoop({
      channelManager,
      chainMonitor,
      store,
      log: silentLogger,
      coalesceMs,
      handleEvent: (e) => void handled.push({ kind: e.constructor.name, durableAtDelivery: store.durable }),
    });
    return { state, store, handled, loop };
  };

  it('hands out PaymentSent at once (LDK may hold a monitor update until it is handled) and holds the rest for the write', async () => {
    // Not yet due by time: only waiting events make the write start now.
    const { state, store, handled, loop } = recordingLoop(60_000);
    state.pending.push(paymentSent(), ldk.Event.constructor_pending_htlcs_forwardable(7n), paymentSent());
    state.needsPersistence = true;

    expect(loop.poll()).toBe(true);
    // The first PaymentSent went out before any manager was durable; the event after it was
    // handed back (and, as in LDK, so was everything behind it), and the write started for it.
    expect(handled).toEqual([{ kind: 'Event_PaymentSent', durableAtDelivery: 0 }]);
    expect(state.pending.map((e) => e.constructor.name)).toEqual(['Event_PendingHTLCsForwardable', 'Event_PaymentSent']);
    expect(loop.persisting).toBe(true);

    store.release();
    await loop.idle();
    loop.poll();
    expect(handled.slice(1)).toEqual([
      { kind: 'Event_PendingHTLCsForwardable', durableAtDelivery: 1 },
      { kind: 'Event_PaymentSent', durableAtDelivery: 1 },
    ]);
  });

  it('while a manager write is in flight, hands out a PaymentSent LDK queues meanwhile; other events wait for a newer write', async () => {
    const { state, store, handled, loop } = recordingLoop();
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(1n));
    state.needsPersistence = true;
    expect(loop.poll()).toBe(true); // handed back; write #1 starts
    expect(loop.persisting).toBe(true);
    // Nothing changed since the write began: a pass now would only hand the event back again.
    expect(loop.poll()).toBe(false);
    expect(handled).toEqual([]);

    // During write #1, LDK learns a preimage: a PaymentSent joins the queue (behind the event
    // already waiting, so LDK would hand it out only after that one; put it first, as LDK does
    // when the waiting event is handled by then) and LDK asks for persistence.
    state.pending.unshift(paymentSent());
    state.needsPersistence = true;
    expect(loop.poll()).toBe(true);
    expect(handled).toEqual([{ kind: 'Event_PaymentSent', durableAtDelivery: 0 }]);
    expect(loop.persisting).toBe(true);

    // The other event waits for a manager written after the change: write #1, then a newer one.
    store.release();
    await loop.idle();
    expect(loop.poll()).toBe(true);
    expect(handled).toHaveLength(1);
    store.release();
    await loop.idle();
    expect(loop.poll()).toBe(true);
    expect(handled.slice(1)).toEqual([{ kind: 'Event_PendingHTLCsForwardable', durableAtDelivery: 2 }]);
    expect(loop.stats.managerWrites).toBe(2);
  });

  it('classifies only payment outcomes as deliverable before the write: a failed payment still waits', () => {
    expect(isDeliveredWithoutManagerWrite(paymentSent())).toBe(true);
    expect(isDeliveredWithoutManagerWrite(paymentFailed())).toBe(false);
    expect(isDeliveredWithoutManagerWrite(ldk.Event.constructor_pending_htlcs_forwardable(1n))).toBe(false);
  });
});

describe('a panic inside LDK', () => {
  const trap = () => new WebAssembly.RuntimeError('unreachable');

  it('stops the loop for good with LdkPanicError (emitted as fatal) when LDK traps while processing events; other errors pass through', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    let failWith: Error | undefined;
    const provider = channelManager.as_EventsProvider();
    (channelManager as unknown as { as_EventsProvider: () => unknown }).as_EventsProvider = () => ({
      process_pending_events: (handler: ldk.EventHandler) => {
        if (failWith) throw failWith;
        provider.process_pending_events(handler);
      },
    });
    const fatal: Error[] = [];
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), log: silentLogger, handleEvent: () => {} });
    loop.on('fatal', (err) => fatal.push(err));

    failWith = new TypeError('a bug in the caller');
    expect(() => loop.poll()).toThrow(TypeError);
    expect(loop.fatalError).toBeUndefined();

    failWith = trap();
    state.pending.push(ldk.Event.constructor_pending_htlcs_forwardable(1n));
    let thrown: unknown;
    try {
      loop.poll();
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(LdkPanicError);
    expect((thrown as Error).message).toMatch(/LDK panicked while processing events .*restart and restore from the store/);
    expect((thrown as Error).cause).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(fatal).toEqual([thrown]);
    expect(loop.fatalError).toBe(thrown);
    // Nothing more is attempted, and whoever waits for a durable manager learns why.
    expect(loop.poll()).toBe(false);
    await expect(loop.managerDurable()).rejects.toBe(thrown);
  });

  it('a loop running by itself ends with fatal (no unhandled rejection) when LDK traps while serializing the manager', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    (channelManager as unknown as { write: () => Uint8Array }).write = () => {
      throw trap();
    };
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), log: silentLogger, handleEvent: () => {}, coalesceMs: 0 });
    const fatal = new Promise<Error>((resolve) => loop.once('fatal', resolve));
    state.needsPersistence = true;
    loop.start();
    const error = await fatal;
    expect(error).toBeInstanceOf(LdkPanicError);
    expect(error.message).toMatch(/while serializing the ChannelManager/);
    await loop.stop();
    expect(loop.fatalError).toBe(error);
  });
});
