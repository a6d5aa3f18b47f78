/**
 * VssPersister under concurrency and failure, driven through its LDK callbacks with stand-in
 * monitors (see helpers/fake-persist.ts) and a store whose writes complete when the test says
 * so: many channels in flight, outages in the middle, fatal errors mid-stream, close and flush
 * with writes under way, status events.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initLdk, LdkEventLoop, PersisterStoppedError, silentLogger, type ManagerWriteTracker, type PendingWriteInfo, type VssPersister } from '../../src/ldk/index.js';
import { ConcurrentWriterError, RollbackDetectedError } from '../../src/store/errors.js';
import { connectionRefused, MemoryServer } from './helpers/memory-store.js';
import { drain, fakePersistSetup, HeldStore, settled } from './helpers/fake-persist.js';
import { fakeLdkNode } from './helpers/fake-ldk-node.js';

beforeAll(async () => {
  await initLdk();
});

/** A small deterministic PRNG, so a failing interleaving can be replayed by its seed. */
function prng(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return state / 0x7fffffff;
  };
}

const nextEvent = <T>(persister: VssPersister, event: 'stalled' | 'fatal'): Promise<T> =>
  new Promise((resolve) => persister.once(event, (arg: unknown) => resolve(arg as T)));

describe('VssPersister: fail closed', () => {
  it('after a fatal error nothing is acknowledged, not even a write of another channel that lands afterwards; fatal is emitted once, with the first error', async () => {
    const store = new HeldStore();
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    const fatal: Error[] = [];
    const durable: string[] = [];
    let retries = 0;
    persister.on('fatal', (e) => fatal.push(e));
    persister.on('durable', (e) => durable.push(e.monitorName));
    persister.on('retry', () => retries++);
    for (const c of [1, 2, 3, 4]) ldk.newChannel(c, 0n);
    await drain();
    expect(store.held).toHaveLength(4);

    const first = new ConcurrentWriterError('another device wrote this monitor');
    await store.heldFor(name(1))[0].settle(first);
    expect(fatal).toEqual([first]);
    // The other writes were already on the wire: one is refused too, one fails like an outage,
    // one lands.
    await store.heldFor(name(2))[0].settle(new RollbackDetectedError('the server went back in time'));
    await store.heldFor(name(3))[0].settle(connectionRefused());
    await store.heldFor(name(4))[0].settle();

    expect(completions).toEqual([]);
    expect(durable).toEqual([]);
    expect(fatal).toEqual([first]);
    expect(persister.fatalError).toBe(first);
    expect(retries).toBe(0);
    await expect(persister.flush()).rejects.toBe(first);
    await persister.close();
  });

  it('a batch refused with ConcurrentWriterError stops the persister: the write of another channel landing afterwards is not acknowledged', async () => {
    const store = new HeldStore(new MemoryServer(), { atomicBatches: true });
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    const fatal: Error[] = [];
    persister.on('fatal', (e) => fatal.push(e));
    // Channel 2's first write started before the manager writer was linked: it goes on its own.
    ldk.newChannel(2, 0n);
    const tracker = persister.linkManagerWriter({ requestPersist: () => {} });
    ldk.newChannel(1, 0n);
    await drain();
    const batch = tracker.writeManager(Uint8Array.of(1), tracker.tickNow()).catch((e: unknown) => e);
    await drain();
    expect(store.held.map((h) => h.op).sort()).toEqual(['batch', 'write']);
    const refused = new ConcurrentWriterError('another writer');
    await store.held.find((h) => h.op === 'batch')!.settle(refused);
    expect(await batch).toBe(refused);
    await store.heldFor(name(2))[0].settle();
    expect(completions).toEqual([]);
    expect(fatal).toEqual([refused]);
    await persister.close();
  });
});

describe('VssPersister: close() and flush()', () => {
  it('flush() waits for writes retrying through an outage and resolves once each is durable and acknowledged', async () => {
    const store = new HeldStore();
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    ldk.newChannel(1, 0n);
    ldk.newChannel(2, 0n);
    await drain();
    let flushed = false;
    const flush = persister.flush().then(() => (flushed = true));
    for (let i = 0; i < 3; i++) {
      for (const h of [...store.held]) await h.settle(connectionRefused());
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(flushed).toBe(false);
    await store.heldFor(name(1))[0].settle();
    expect(flushed).toBe(false);
    await store.heldFor(name(2))[0].settle();
    await flush;
    expect(completions.map((c) => [c.monitor, c.updateId, c.durable])).toEqual([
      [name(1), 0n, true],
      [name(2), 0n, true],
    ]);
    await persister.close();
  });

  it('close() during retries rejects a waiting flush(); after close(), flush() rejects while an update LDK handed over is not durable, even one never queued', async () => {
    const store = new HeldStore();
    store.auto = true;
    const { persister, completions, ldk } = fakePersistSetup(store);
    ldk.newChannel(1, 0n);
    await persister.flush();
    expect(completions).toHaveLength(1);
    await persister.close();
    await persister.flush(); // nothing owed: fine
    // The node still runs (a peer message) and LDK hands over an update: it cannot be written.
    ldk.update(1, 1n);
    await expect(persister.flush()).rejects.toBeInstanceOf(PersisterStoppedError);
    expect(completions).toHaveLength(1);

    const held = new HeldStore();
    const second = fakePersistSetup(held);
    second.ldk.newChannel(1, 0n);
    await drain();
    const flush = second.persister.flush();
    await held.held[0].settle(connectionRefused());
    await second.persister.close();
    await expect(flush).rejects.toBeInstanceOf(PersisterStoppedError);
    await expect(second.persister.flush()).rejects.toBeInstanceOf(PersisterStoppedError);
  });
});

describe('VssPersister linked to an event loop that stops gracefully', () => {
  it('flush() rejects with PersisterStoppedError (not a hang) for updates that waited for a manager write the stopped loop will never make; the write stays held (neither sent nor acknowledged) and goes out with a loop linked later', async () => {
    for (const atomicBatches of [false, true]) {
      const store = new HeldStore(new MemoryServer(), { atomicBatches });
      store.auto = true;
      const { persister, completions, ldk, name } = fakePersistSetup(store);
      const node = fakeLdkNode();
      const loop = new LdkEventLoop({ channelManager: node.channelManager, chainMonitor: node.chainMonitor, store, persister, handleEvent: () => {}, coalesceMs: 0, log: silentLogger });
      ldk.newChannel(1, 0n);
      await drain();
      loop.poll(); // the manager the new channel waits for
      await loop.idle();
      await persister.flush();
      expect(completions.map((c) => [c.updateId, c.durable])).toEqual([[0n, true]]);

      // LDK hands over an update; the app stops the loop before the manager that knows it is
      // written. A flush() already waiting, and one called afterwards, both learn it at once.
      ldk.update(1, 1n);
      await drain();
      const waiting = persister.flush();
      await loop.stop();
      const outcome = await settled(waiting);
      expect(outcome, `atomicBatches: ${atomicBatches}`).toBeInstanceOf(PersisterStoppedError);
      expect((outcome as Error).message).toMatch(/ChannelManager writer .*stopped.*1 monitor update\(s\) not durable/);
      await expect(persister.flush()).rejects.toBeInstanceOf(PersisterStoppedError);
      // Fail closed: neither on the server without a manager that knows it, nor reported to LDK.
      expect(store.server.has('monitor_updates', name(1), '1')).toBe(false);
      expect(completions).toHaveLength(1);
      expect(persister.monitors()[0].awaitingUpdateIds).toEqual([1n]);
      expect(persister.fatalError).toBeUndefined(); // a graceful stop, not a failure

      // The write is held, not dropped: a new loop linked to the persister writes the manager it
      // needs, and only then is the update stored and reported.
      const again = new LdkEventLoop({ channelManager: node.channelManager, chainMonitor: node.chainMonitor, store, persister, handleEvent: () => {}, coalesceMs: 0, log: silentLogger });
      expect(again.owesManagerWrite).toBe(true);
      const flushed = persister.flush();
      again.poll();
      await again.idle();
      await flushed;
      expect(completions.map((c) => [c.updateId, c.durable])).toEqual([
        [0n, true],
        [1n, true],
      ]);
      await again.stop();
      await persister.flush(); // nothing owed: a stopped loop changes nothing
      await persister.close();
    }
  });

  it('after the loop stops, flush() still resolves when nothing is owed, and writes a durable manager covers still go out', async () => {
    const store = new HeldStore();
    store.auto = true;
    const { persister, completions, ldk } = fakePersistSetup(store);
    const node = fakeLdkNode();
    const loop = new LdkEventLoop({ channelManager: node.channelManager, chainMonitor: node.chainMonitor, store, persister, handleEvent: () => {}, coalesceMs: 0, log: silentLogger });
    ldk.newChannel(1, 0n);
    await drain();
    await loop.persistIfNeeded();
    await persister.flush();
    await loop.stop();
    expect(await settled(persister.flush())).toBe('resolved');
    // A chain-sync persist of a monitor whose updates a durable manager knows needs no manager write.
    ldk.chainSync(1, 0n);
    expect(await settled(persister.flush())).toBe('resolved');
    expect(completions.map((c) => [c.updateId, c.durable])).toEqual([[0n, true]]);
    await persister.close();
  });
});

describe('VssPersister: options', () => {
  it('refuses settings that would retry without waiting or run its timers every millisecond (RangeError), before any write', () => {
    const store = new HeldStore();
    for (const bad of [
      { backoff: { initialDelayMs: 0 } }, // every retry at once: an outage floods the server and the log
      { backoff: { initialDelayMs: Number.NaN } },
      { backoff: { maxDelayMs: Number.POSITIVE_INFINITY } }, // past 2^31 - 1 ms Node fires a timer after 1 ms
      { backoff: { initialDelayMs: 100, maxDelayMs: 50 } },
      { backoff: { factor: 0 } },
      { stallThresholdMs: Number.NaN },
      { stallThresholdMs: -1 },
      { maxConcurrentWritesPerChannel: 0 },
      { maxConcurrentWritesPerChannel: 1.5 },
    ]) {
      expect(() => fakePersistSetup(store, bad), JSON.stringify(bad)).toThrow(RangeError);
    }
    // The defaults and ordinary values are fine (Infinity: never report a stall).
    fakePersistSetup(store, { backoff: { initialDelayMs: 50, maxDelayMs: 60_000, factor: 1.5 }, stallThresholdMs: Number.POSITIVE_INFINITY, maxConcurrentWritesPerChannel: 1 }).persister.close();
  });
});

describe('VssPersister: status events', () => {
  it("a channel stalled on its archive reports 'recovered' once the archive is durable (the channel is then forgotten)", async () => {
    const store = new HeldStore();
    store.auto = true;
    const { persister, ldk, name } = fakePersistSetup(store, { stallThresholdMs: 20 });
    // The live monitor is not in the store (an earlier attempt removed it): the archive only
    // removes leftover deltas, which is enough to exercise its stall and recovery.
    store.inner.outage = true;
    const stalled = nextEvent<PendingWriteInfo>(persister, 'stalled');
    ldk.archive(1);
    expect((await stalled).monitorName).toBe(name(1));
    const recovered: string[] = [];
    persister.on('recovered', (e) => recovered.push(e.monitorName));
    store.inner.outage = false;
    await persister.flush();
    expect(recovered).toEqual([name(1)]);
    expect(persister.monitors()).toEqual([]);
    await persister.close();
  });
});

describe('VssPersister: many channels, outages in the middle', () => {
  for (const mode of ['unlinked', 'linked, manager written first', 'linked, batched with the manager'] as const) {
    for (let seed = 1; seed <= 6; seed++) {
      it(`every update is acknowledged exactly once and only once durable, never on the server before a manager that knows it (${mode}, seed ${seed})`, async () => {
        const rand = prng(seed * 7919);
        const server = new MemoryServer();
        const store = new HeldStore(server, { atomicBatches: mode === 'linked, batched with the manager' });
        const { persister, completions, ldk, name } = fakePersistSetup(store, { maximumPendingUpdates: 7, maxConcurrentWritesPerChannel: 3 });
        const fatal: Error[] = [];
        persister.on('fatal', (e) => fatal.push(e));

        // The ChannelManager's writer: one write at a time, retried until it lands.
        let tracker: ManagerWriteTracker | undefined;
        let managerInFlight = false;
        let managerRequested = false;
        const writeManager = (): void => {
          if (!tracker || managerInFlight) return;
          managerInFlight = true;
          managerRequested = false;
          const tick = tracker.tickNow();
          const attempt = (): void => {
            tracker!.writeManager(Uint8Array.of(tick & 0xff, tick >> 8), tick).then(
              () => {
                managerInFlight = false;
                if (managerRequested) writeManager();
              },
              attempt,
            );
          };
          attempt();
        };
        if (mode !== 'unlinked') tracker = persister.linkManagerWriter({ requestPersist: () => void (managerRequested = true) });

        // Checked as each key reaches the server: the stored manager must know the update.
        const tickOf = new Map<string, number>();
        let storedManagerTick = 0;
        const violations: string[] = [];
        const commit = server.commitWrite.bind(server);
        server.commitWrite = (k, value, expected) => {
          const [primary, secondary, key] = k.split('\u0000');
          if (primary === '' && key === 'manager') storedManagerTick = value[0] + (value[1] << 8);
          else if (tracker) {
            const id = primary === 'monitors' ? BigInt(value[value.length - 1]) : BigInt(key);
            const monitor = primary === 'monitors' ? key : secondary;
            const tick = tickOf.get(`${monitor}#${id}`);
            if (tick !== undefined && tick > storedManagerTick) violations.push(`${monitor}#${id} (tick ${tick}) before a manager that knows it (tick ${storedManagerTick})`);
          }
          return commit(k, value, expected);
        };

        const channels = 5;
        const updatesPerChannel = 25;
        const handed: string[] = [];
        const hand = (c: number, id: bigint): void => {
          handed.push(`${name(c)}#${id}`);
          if (tracker) tickOf.set(`${name(c)}#${id}`, tracker.tickNow());
        };
        const latest = new Array<number>(channels).fill(0);
        for (let c = 0; c < channels; c++) {
          ldk.newChannel(c, 0n);
          hand(c, 0n);
        }
        const busy = (): boolean => store.held.length > 0 || managerRequested || managerInFlight || persister.pending().length > 0;
        for (let step = 0; step < 3_000; step++) {
          const r = rand();
          const more = latest.some((n) => n < updatesPerChannel);
          if (r < 0.3 && more) {
            const c = Math.floor(rand() * channels);
            if (latest[c] < updatesPerChannel) {
              const id = BigInt(++latest[c]);
              ldk.update(c, id);
              hand(c, id);
            }
          } else if (r < 0.35) {
            // A block: the whole monitor, as up to date as LDK's.
            const c = Math.floor(rand() * channels);
            ldk.chainSync(c, BigInt(latest[c]));
          } else if (r < 0.45 && managerRequested) {
            writeManager();
          } else if (store.held.length > 0) {
            // A quarter of all requests fail like an outage; they are retried.
            await store.held[Math.floor(rand() * store.held.length)].settle(rand() < 0.25 ? connectionRefused() : undefined);
          } else if (!more && !busy()) {
            break;
          } else if (managerRequested) {
            writeManager();
          } else {
            await new Promise((resolve) => setTimeout(resolve, 2)); // a retry's backoff
          }
          await drain();
        }
        // The server recovers for good: everything settles.
        for (let i = 0; i < 2_000 && busy(); i++) {
          if (managerRequested) writeManager();
          if (store.held.length > 0) await store.held[0].settle();
          else await new Promise((resolve) => setTimeout(resolve, 2));
        }
        store.auto = true;
        await persister.flush();

        expect(fatal).toEqual([]);
        expect(violations).toEqual([]);
        expect(completions.filter((c) => !c.durable)).toEqual([]);
        expect(completions.map((c) => `${c.monitor}#${c.updateId}`).sort()).toEqual(handed.sort());
        if (mode === 'unlinked') {
          // One write per channel at a time: acknowledgements come in order.
          for (let c = 0; c < channels; c++) {
            const ids = completions.filter((x) => x.monitor === name(c)).map((x) => x.updateId);
            expect(ids).toEqual([...ids].sort((a, b) => (a < b ? -1 : 1)));
          }
        }
        await persister.close();
      });
    }
  }
});
