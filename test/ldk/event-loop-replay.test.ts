/**
 * An app handler that refuses an event (returns false or throws) gets it again from LDK, but
 * not at once: the queue it came from waits out a backoff. Offered again on every pass, a
 * refused ChainMonitor event made each pass "do work" with no await between passes, so a loop
 * run by `start()` never yielded and the whole process froze; a refused ChannelManager event
 * cost one manager write per attempt.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import { LdkEventLoop, initLdk, silentLogger } from '../../src/ldk/index.js';
import { forceCloseChannel, mineUntil } from '../../harness/wallet-ops.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { fakeLdkNode } from './helpers/fake-ldk-node.js';
import { capturingLogger } from './helpers/capturing-logger.js';
import { openPair, ownEventLoop, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
afterEach(async () => {
  await pair?.net.shutdown();
  pair = undefined;
});

describe('an event the app refuses (real LDK)', () => {
  it('a refused SpendableOutputs (a ChainMonitor event) is offered again only after a backoff: poll() does not spin, start() does not freeze the process, and the event is not lost', async () => {
    await initLdk();
    const store = new MemoryKVStore();
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b, channel } = pair;
    // A's own loop, with a handler that refuses SpendableOutputs until told otherwise (as one
    // whose wallet database is down would); everything else is handled as the harness does.
    let accept = false;
    let refusals = 0;
    let callsThisTurn = 0;
    let spun = false;
    const accepted: ldk.SpendableOutputDescriptor[] = [];
    const loop: LdkEventLoop = ownEventLoop(a, store, {
      backoff: { initialDelayMs: 2_000, maxDelayMs: 2_000 },
      handleEvent: (event) => {
        if (!(event instanceof ldk.Event_SpendableOutputs)) {
          (a as unknown as { handleEvent(e: ldk.Event): void }).handleEvent(event);
          return;
        }
        if (accept) {
          accepted.push(...event.outputs);
          return;
        }
        refusals++;
        // Guard for the test itself: a loop that never yields would otherwise hang the worker.
        if (callsThisTurn++ === 0) setImmediate(() => (callsThisTurn = 0));
        if (callsThisTurn > 20) {
          spun = true;
          void loop.stop();
        }
        return false;
      },
    });
    a.eventLoop = loop; // the harness pump polls this loop from now on

    // B force-closes: A's output on B's commitment becomes spendable a few blocks later.
    await forceCloseChannel(net, b, channel, a.nodeId, [a]);
    await mineUntil(net, () => refusals > 0, { maxBlocks: 30, what: 'SpendableOutputs offered to A' });
    await net.stop();

    // Refused once: the passes right after it do not offer it again (they did, every pass).
    const before = refusals;
    for (let i = 0; i < 10; i++) loop.poll();
    expect(refusals - before).toBeLessThanOrEqual(1);

    // Running by itself, the loop waits for the backoff instead of spinning.
    loop.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(spun).toBe(false);
    expect(loop.fatalError).toBeUndefined();

    // The event was kept: once the handler takes it, it arrives.
    accept = true;
    await vi.waitFor(() => expect(accepted.length).toBeGreaterThan(0), { timeout: 15_000, interval: 20 });
    expect(spun).toBe(false);
    await loop.stop();
  }, 60_000);
});

describe('an event the app refuses (ChannelManager queue)', () => {
  it.each(['returns false', 'throws'] as const)('an event the handler refuses (%s) is not offered again, nor the manager rewritten for it, on every pass, but after a backoff', async (how) => {
    const { state, channelManager, chainMonitor, queueEvent } = fakeLdkNode();
    const calls: string[] = [];
    const log = capturingLogger();
    const loop = new LdkEventLoop({
      channelManager,
      chainMonitor,
      store: new MemoryKVStore(),
      log,
      backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
      handleEvent: (e) => {
        calls.push(e.constructor.name);
        if (how === 'throws') throw new Error('wallet database unreachable');
        return false;
      },
    });
    queueEvent(0n);
    expect(loop.poll()).toBe(true); // handed back: the manager write LDK asked for goes first
    await loop.idle();
    expect(loop.poll()).toBe(true); // offered: refused
    expect(calls).toHaveLength(1);
    const writes = loop.stats.managerWrites;
    for (let i = 0; i < 5; i++) {
      loop.poll();
      await loop.idle();
    }
    expect(calls).toHaveLength(1);
    expect(loop.stats.managerWrites).toBe(writes);
    expect(state.pending).toHaveLength(1); // kept by LDK, not lost
    const said = log.lines.filter((l) => /event handler (threw|asked for a replay)/.test(l.message));
    expect(said).toEqual([expect.objectContaining({ level: how === 'throws' ? 'error' : 'debug', fields: expect.objectContaining({ refusals: 1 }) })]);
  });

  it('a refused ChainMonitor event does not hold back a PaymentSent in the ChannelManager queue', () => {
    const { state, channelManager, chainMonitor, queueEvent } = fakeLdkNode();
    const handled: string[] = [];
    const loop = new LdkEventLoop({
      channelManager,
      chainMonitor,
      store: new MemoryKVStore(),
      log: silentLogger,
      backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
      handleEvent: (e) => {
        if (e instanceof ldk.Event_PendingHTLCsForwardable) return false;
        handled.push(e.constructor.name);
      },
    });
    queueEvent(1n, true);
    state.needsPersistence = false;
    expect(loop.poll()).toBe(true); // the chain event is refused
    const bytes = (fill: number) => new Uint8Array(32).fill(fill);
    state.pending.push(ldk.Event.constructor_payment_sent(ldk.Option_ThirtyTwoBytesZ.constructor_some(bytes(1)), bytes(2), bytes(3), ldk.Option_u64Z.constructor_none()));
    loop.poll();
    expect(handled).toEqual(['Event_PaymentSent']);
    expect(state.chainPending).toHaveLength(1);
  });
});
