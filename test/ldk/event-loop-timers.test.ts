/**
 * LDK's periodic calls, which its Rust BackgroundProcessor makes and LdkEventLoop makes in its
 * place: ChannelManager.timer_tick_occurred() (60 s), PeerManager.timer_tick_occurred() (10 s),
 * the OnionMessenger's timer (10 s) and ChainMonitor.rebroadcast_pending_claims() (30 s).
 * Without the first, completed payments stayed in the ChannelManager for good, and the manager,
 * written whole at every step, grew with every payment.
 */
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import { LdkEventLoop, LdkPanicError, initLdk, silentLogger, type LdkEventLoopOptions } from '../../src/ldk/index.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { fakeLdkNode } from './helpers/fake-ldk-node.js';
import { capturingLogger } from './helpers/capturing-logger.js';
import { openPair, ownEventLoop, vssNode, type Pair } from './helpers/nodes.js';

beforeAll(async () => {
  await initLdk();
});

let pair: Pair | undefined;
afterEach(async () => {
  // In this order: the setInterval spy wraps the fake one, so the fakes go after it.
  vi.restoreAllMocks();
  vi.useRealTimers();
  await pair?.net.shutdown();
  pair = undefined;
});

/** The fake node with the periodic calls LDK offers, counted; `recent` is what list_recent_payments() returns. */
function fakeNodeWithTimers() {
  const node = fakeLdkNode();
  const ticks = { channelManager: 0, peerManager: 0, onionMessenger: 0, rebroadcastClaims: 0 };
  const hooks = {
    recent: 0,
    /** Runs inside the ChannelManager's tick (a trap, a change LDK asks to persist). */
    onChannelManagerTick: () => {},
  };
  Object.assign(node.channelManager, {
    timer_tick_occurred: () => {
      ticks.channelManager++;
      hooks.onChannelManagerTick();
    },
    list_recent_payments: () => new Array<unknown>(hooks.recent).fill(null),
  });
  Object.assign(node.chainMonitor, { rebroadcast_pending_claims: () => void ticks.rebroadcastClaims++ });
  const peerManager = { timer_tick_occurred: () => void ticks.peerManager++, process_events: () => {} } as unknown as ldk.PeerManager;
  const onionMessenger = { as_OnionMessageHandler: () => ({ timer_tick_occurred: () => void ticks.onionMessenger++ }) } as unknown as ldk.OnionMessenger;
  const loop = (options: Partial<LdkEventLoopOptions> = {}): LdkEventLoop =>
    new LdkEventLoop({
      channelManager: node.channelManager,
      chainMonitor: node.chainMonitor,
      peerManager,
      onionMessenger,
      store: new MemoryKVStore(),
      log: silentLogger,
      handleEvent: () => {},
      ...options,
    });
  return { ...node, ticks, hooks, loop };
}

describe("LdkEventLoop runs LDK's periodic calls", () => {
  it("start() makes them at LDK's BackgroundProcessor intervals on unref'd timers, and stop() ends them", async () => {
    vi.useFakeTimers();
    const setInterval = vi.spyOn(globalThis, 'setInterval');
    const { ticks, loop } = fakeNodeWithTimers();
    const l = loop();
    l.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ticks).toEqual({ channelManager: 1, peerManager: 6, onionMessenger: 6, rebroadcastClaims: 2 });
    // The node's timers alone do not keep the process alive.
    const handles = setInterval.mock.results.map((r) => r.value as { hasRef(): boolean });
    expect(handles).toHaveLength(4);
    for (const h of handles) expect(h.hasRef()).toBe(false);

    await l.stop();
    await vi.advanceTimersByTimeAsync(180_000);
    expect(ticks).toEqual({ channelManager: 1, peerManager: 6, onionMessenger: 6, rebroadcastClaims: 2 });
  });

  it('takes other intervals, leaves out a timer set to false, and runs none with timers: false', async () => {
    vi.useFakeTimers();
    const some = fakeNodeWithTimers();
    const l = some.loop({ timers: { channelManagerMs: 5_000, peerManagerMs: false } });
    l.start();
    await vi.advanceTimersByTimeAsync(30_000);
    expect(some.ticks).toEqual({ channelManager: 6, peerManager: 0, onionMessenger: 3, rebroadcastClaims: 1 });
    await l.stop();

    const none = fakeNodeWithTimers();
    const quiet = none.loop({ timers: false });
    quiet.start();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(quiet.timerTick()).toBe(false);
    expect(none.ticks).toEqual({ channelManager: 0, peerManager: 0, onionMessenger: 0, rebroadcastClaims: 0 });
    await quiet.stop();
  });

  it('a panic in a tick stops the loop with LdkPanicError (fatal, once) and no timer runs after it', async () => {
    vi.useFakeTimers();
    const node = fakeNodeWithTimers();
    node.hooks.onChannelManagerTick = () => {
      throw new WebAssembly.RuntimeError('unreachable');
    };
    const l = node.loop();
    const fatal: Error[] = [];
    l.on('fatal', (err) => fatal.push(err));
    l.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toBeInstanceOf(LdkPanicError);
    expect(fatal[0].message).toMatch(/channelManager timer/);
    const after = { ...node.ticks };
    await vi.advanceTimersByTimeAsync(300_000);
    expect(node.ticks).toEqual(after);
    await l.stop();
  });

  it('an unexpected error thrown by a tick stops the loop with fatal instead of an uncaught exception', async () => {
    vi.useFakeTimers();
    const node = fakeNodeWithTimers();
    const bug = new TypeError('a bug in the fee estimator');
    node.hooks.onChannelManagerTick = () => {
      throw bug;
    };
    const log = capturingLogger();
    const l = node.loop({ log });
    const fatal = new Promise<Error>((resolve) => l.once('fatal', resolve));
    l.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(await fatal).toBe(bug);
    expect(l.fatalError).toBe(bug);
    expect(log.lines.some((line) => line.level === 'error' && /channelManager timer threw/.test(line.message))).toBe(true);
    const after = { ...node.ticks };
    await vi.advanceTimersByTimeAsync(300_000);
    expect(node.ticks).toEqual(after);
    await l.stop();
  });

  it('timerTick() (for apps that drive poll() themselves) runs each timer only once its interval has passed, and nothing after stop()', async () => {
    vi.useFakeTimers();
    const node = fakeNodeWithTimers();
    const l = node.loop();
    expect(l.timerTick()).toBe(false); // nothing due yet
    vi.advanceTimersByTime(10_000);
    expect(l.timerTick()).toBe(true);
    expect(node.ticks).toEqual({ channelManager: 0, peerManager: 1, onionMessenger: 1, rebroadcastClaims: 0 });
    // Called as often as the app's pump runs: each timer still keeps its own interval.
    for (let s = 0; s < 50; s++) {
      vi.advanceTimersByTime(1_000);
      l.timerTick();
    }
    expect(node.ticks).toEqual({ channelManager: 1, peerManager: 6, onionMessenger: 6, rebroadcastClaims: 2 });

    await l.stop();
    vi.advanceTimersByTime(120_000);
    expect(l.timerTick()).toBe(false);
    expect(node.ticks.channelManager).toBe(1);
  });

  it('timerTick() throws a panic in a tick as LdkPanicError and stops the loop', () => {
    vi.useFakeTimers();
    const node = fakeNodeWithTimers();
    node.hooks.onChannelManagerTick = () => {
      throw new WebAssembly.RuntimeError('unreachable');
    };
    const l = node.loop();
    vi.advanceTimersByTime(60_000);
    expect(() => l.timerTick()).toThrow(LdkPanicError);
    expect(l.fatalError).toBeInstanceOf(LdkPanicError);
    expect(l.poll()).toBe(false);
  });

  it('a ChannelManager tick that only forgot completed payments owes a manager write (LDK does not ask for one); a tick that changed nothing does not', async () => {
    vi.useFakeTimers();
    const node = fakeNodeWithTimers();
    const l = node.loop({ coalesceMs: 0 });
    node.hooks.recent = 3;
    vi.advanceTimersByTime(60_000);
    l.timerTick();
    expect(l.owesManagerWrite).toBe(false); // all three still kept

    node.hooks.onChannelManagerTick = () => void (node.hooks.recent = 0);
    vi.advanceTimersByTime(60_000);
    l.timerTick();
    expect(l.owesManagerWrite).toBe(true);
    expect(l.poll()).toBe(true);
    await l.idle();
    expect(l.stats.managerWrites).toBe(1);
  });

  it('refuses intervals that are not false or 1 ms to 2^31 - 1 ms, and unknown timer names, at construction', () => {
    const node = fakeNodeWithTimers();
    for (const ms of [0, -1, 0.5, Number.NaN, Infinity, 2 ** 31, '1000' as unknown as number, true as unknown as number]) {
      expect(() => node.loop({ timers: { channelManagerMs: ms } })).toThrow(RangeError);
      expect(() => node.loop({ timers: { rebroadcastClaimsMs: ms } })).toThrow(/timers\.rebroadcastClaimsMs/);
    }
    expect(() => node.loop({ timers: { channelManagerMS: 1_000 } as unknown as LdkEventLoopOptions['timers'] })).toThrow(/timers\.channelManagerMS is not a timer/);
    expect(() => node.loop({ timers: true as unknown as LdkEventLoopOptions['timers'] })).toThrow(RangeError);
    expect(() => node.loop({ timers: null as unknown as LdkEventLoopOptions['timers'] })).toThrow(RangeError);
    expect(() => node.loop({ timers: { channelManagerMs: 1, peerManagerMs: false, onionMessengerMs: 2 ** 31 - 1 } })).not.toThrow();
  });
});

describe("LDK's periodic calls between two real nodes", () => {
  /** A pair after three payments from A to B, with the harness's pump (and its own timer ticks) stopped. */
  async function afterPayments(): Promise<{ pair: Pair; store: MemoryKVStore; storedBefore: number }> {
    const store = new MemoryKVStore();
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b } = pair;
    for (let i = 0; i < 3; i++) await net.pay(a, b, 50_000n, { settled: true });
    await net.runFor(100);
    await net.stop();
    expect(a.channelManager.list_recent_payments()).toHaveLength(3);
    const stored = await store.read('', '', 'manager');
    return { pair, store, storedBefore: stored.length };
  }

  it('start() forgets completed payments after their 7 ticks and writes the smaller manager', async () => {
    const { pair: { a }, store, storedBefore } = await afterPayments();
    const writes: number[] = [];
    const loop = ownEventLoop(a, store, {
      handleEvent: () => {},
      // LDK's 60 s tick, sped up: the payments are forgotten on the 8th.
      timers: { channelManagerMs: 20, peerManagerMs: false, rebroadcastClaimsMs: false },
    });
    loop.on('manager-persisted', (e) => writes.push(e.bytes));
    a.eventLoop = loop;
    loop.start();
    await vi.waitFor(() => expect(a.channelManager.list_recent_payments()).toHaveLength(0), { timeout: 10_000, interval: 20 });
    await vi.waitFor(() => expect(writes.length).toBeGreaterThan(0), { timeout: 10_000, interval: 20 });
    await loop.stop();
    const stored = await store.read('', '', 'manager');
    expect(stored.length).toBeLessThan(storedBefore);
    expect(stored.length).toBe(a.channelManager.write().length);
    expect(loop.fatalError).toBeUndefined();
  }, 60_000);

  it('timerTick() and poll() do the same for an app that drives the loop itself', async () => {
    const { pair: { a }, store, storedBefore } = await afterPayments();
    const loop = ownEventLoop(a, store, { handleEvent: () => {}, coalesceMs: 0, timers: { channelManagerMs: 1 } });
    a.eventLoop = loop;
    for (let tick = 0; tick < 8; tick++) {
      await new Promise((r) => setTimeout(r, 5));
      expect(loop.timerTick()).toBe(true);
      loop.poll();
      await loop.idle();
    }
    expect(a.channelManager.list_recent_payments()).toHaveLength(0);
    loop.poll();
    await loop.idle();
    expect((await store.read('', '', 'manager')).length).toBeLessThan(storedBefore);
    await loop.stop();
  }, 60_000);
});
