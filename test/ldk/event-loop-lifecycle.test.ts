/**
 * LdkEventLoop's life cycle: starting after a stop, the app's shutdown call racing the loop,
 * and how failures reach the app (once, and never as an unhandled rejection).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { LdkEventLoop, LdkPanicError, PersisterStoppedError, initLdk, silentLogger } from '../../src/ldk/index.js';
import { ConcurrentWriterError } from '../../src/store/errors.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { fakeLdkNode } from './helpers/fake-ldk-node.js';
import { capturingLogger } from './helpers/capturing-logger.js';

beforeAll(async () => {
  await initLdk();
});

/** Manager writes that finish only when the test settles them; counts writes in flight at once. */
function gatedStore(): AsyncKVStore & { settle(err?: Error): void; inFlight: number; maxInFlight: number; durable: number } {
  const inner = new MemoryKVStore();
  const queue: { resolve: () => void; reject: (err: Error) => void }[] = [];
  const store = {
    read: (p: string, s: string, k: string) => inner.read(p, s, k),
    remove: (p: string, s: string, k: string, lazy: boolean) => inner.remove(p, s, k, lazy),
    list: (p: string, s: string) => inner.list(p, s),
    listAll: () => inner.listAll(),
    inFlight: 0,
    maxInFlight: 0,
    durable: 0,
    write: async (p: string, s: string, k: string, v: Uint8Array) => {
      store.inFlight++;
      store.maxInFlight = Math.max(store.maxInFlight, store.inFlight);
      try {
        await new Promise<void>((resolve, reject) => queue.push({ resolve, reject }));
        await inner.write(p, s, k, v);
        store.durable++;
      } finally {
        store.inFlight--;
      }
    },
    settle: (err?: Error) => {
      const next = queue.shift();
      if (err) next?.reject(err);
      else next?.resolve();
    },
  };
  return store;
}

describe('LdkEventLoop life cycle', () => {
  it('start() after stop() throws instead of silently doing nothing; after a fatal error it throws that error', async () => {
    const { channelManager, chainMonitor } = fakeLdkNode();
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), log: silentLogger, handleEvent: () => {} });
    loop.start();
    loop.start(); // while running: nothing more
    await loop.stop();
    expect(() => loop.start()).toThrow(PersisterStoppedError);
    expect(() => loop.start()).toThrow(/cannot be started again/);

    const node = fakeLdkNode();
    const store = gatedStore();
    const failed = new LdkEventLoop({ channelManager: node.channelManager, chainMonitor: node.chainMonitor, store, log: silentLogger, handleEvent: () => {}, coalesceMs: 0 });
    node.state.needsPersistence = true;
    failed.poll();
    store.settle(new ConcurrentWriterError('another writer'));
    await expect(failed.idle()).rejects.toBeInstanceOf(ConcurrentWriterError);
    expect(() => failed.start()).toThrow(ConcurrentWriterError);
  });

  it('persistIfNeeded() never starts a write next to one the loop started meanwhile: one manager write at a time', async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const store = gatedStore();
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, log: silentLogger, handleEvent: () => {}, coalesceMs: 0 });
    state.needsPersistence = true;
    expect(loop.poll()).toBe(true); // write #1 in flight

    // Whatever else drives the loop (start(), the app's pump) runs as soon as write #1 is done:
    // it starts write #2, and LDK asks again while #2 is in flight.
    const otherDriver = loop.idle().then(() => {
      state.needsPersistence = true;
      expect(loop.poll()).toBe(true);
      expect(loop.persisting).toBe(true);
      state.needsPersistence = true;
      loop.poll();
    });
    const shutdown = loop.persistIfNeeded();
    store.settle();
    await otherDriver;
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 0));
      store.settle();
    }
    await shutdown;
    await loop.idle();
    expect(store.maxInFlight).toBe(1);
    expect(loop.persisting).toBe(false);
  });

  it("'fatal' goes out once: a write that fails for good after LDK panicked does not replace the panic", async () => {
    const { state, channelManager, chainMonitor } = fakeLdkNode();
    const provider = channelManager.as_EventsProvider();
    let trap = false;
    (channelManager as unknown as { as_EventsProvider: () => unknown }).as_EventsProvider = () => ({
      process_pending_events: (handler: ldk.EventHandler) => {
        if (trap) throw new WebAssembly.RuntimeError('unreachable');
        provider.process_pending_events(handler);
      },
    });
    const store = gatedStore();
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store, log: silentLogger, handleEvent: () => {}, coalesceMs: 0 });
    const fatal: Error[] = [];
    loop.on('fatal', (err) => fatal.push(err));
    state.needsPersistence = true;
    expect(loop.poll()).toBe(true); // a write in flight
    trap = true;
    state.needsPersistence = true;
    expect(() => loop.poll()).toThrow(LdkPanicError); // LDK traps during the in-flight pass
    store.settle(new ConcurrentWriterError('another writer'));
    await expect(loop.idle()).rejects.toBeInstanceOf(LdkPanicError);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toBeInstanceOf(LdkPanicError);
    expect(loop.fatalError).toBe(fatal[0]);
  });

  it('a loop running by itself stops with fatal when a pass throws an unexpected error (no unhandled rejection)', { timeout: 10_000 }, async () => {
    const { channelManager, chainMonitor } = fakeLdkNode();
    const bug = new TypeError('a bug in the peer handler');
    (chainMonitor as unknown as { as_EventsProvider: () => unknown }).as_EventsProvider = () => ({
      process_pending_events: () => {
        throw bug;
      },
    });
    const log = capturingLogger();
    const loop = new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), log, handleEvent: () => {} });
    const fatal = new Promise<Error>((resolve) => loop.once('fatal', resolve));
    loop.start();
    expect(await fatal).toBe(bug);
    expect(loop.fatalError).toBe(bug);
    await expect(loop.managerDurable()).rejects.toBe(bug);
    await loop.stop(); // resolves: the failure was reported, not thrown again
    expect(log.lines.some((l) => l.level === 'error' && /processing events threw/.test(l.message))).toBe(true);
  });

  it('refuses a coalesceMs that is not a finite number >= 0 (NaN would never make an owed write due)', () => {
    const { channelManager, chainMonitor } = fakeLdkNode();
    for (const coalesceMs of [Number.NaN, -1, Infinity]) {
      expect(() => new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), log: silentLogger, handleEvent: () => {}, coalesceMs })).toThrow(RangeError);
    }
  });

  it('refuses a backoff that would not wait between attempts (a refused event or failed write would spin)', () => {
    const { channelManager, chainMonitor } = fakeLdkNode();
    for (const backoff of [{ initialDelayMs: 0 }, { initialDelayMs: Number.NaN }, { factor: 0.5 }, { maxDelayMs: 2 ** 31 }]) {
      expect(() => new LdkEventLoop({ channelManager, chainMonitor, store: new MemoryKVStore(), log: silentLogger, handleEvent: () => {}, backoff })).toThrow(/backoff\./);
    }
  });
});
