/**
 * Review findings on VssPersister, driven through its LDK callbacks with stand-in monitors
 * (helpers/fake-persist.ts): the stall report follows the updates LDK waits for, not just the
 * write that happens to carry them; one batch never names a key twice.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initLdk, type PendingWriteInfo } from '../../src/ldk/index.js';
import { InvalidKeyError } from '../../src/store/errors.js';
import type { KeyValueWrite } from '../../src/store/types.js';
import { connectionRefused, MemoryServer } from './helpers/memory-store.js';
import { drain, fakePersistSetup, HeldStore } from './helpers/fake-persist.js';

beforeAll(async () => {
  await initLdk();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('VssPersister review: stalls', () => {
  it("a full monitor that takes over a stalled update during an outage does not report 'recovered' while that update is still not durable", async () => {
    const store = new HeldStore();
    const { persister, completions, ldk, name } = fakePersistSetup(store, { stallThresholdMs: 40 });
    const events: string[] = [];
    persister.on('stalled', (e) => events.push(`stalled ${e.monitorName}`));
    persister.on('recovered', (e) => events.push(`recovered ${e.monitorName}`));
    store.auto = true;
    ldk.newChannel(1, 0n);
    await persister.flush();
    store.auto = false;
    // The server goes down: update 1 cannot be written and is retried.
    ldk.update(1, 1n);
    await drain();
    const failAll = async () => {
      for (const h of [...store.held]) await h.settle(connectionRefused());
    };
    for (let i = 0; i < 20 && events.length === 0; i++) {
      await failAll();
      await sleep(10);
    }
    expect(events).toEqual([`stalled ${name(1)}`]);
    const stalledAt = persister.pending()[0].pendingMs;
    // A block arrives: the whole monitor (containing update 1) is written instead. The outage
    // goes on, so update 1 is still not durable and LDK still holds the channel.
    ldk.chainSync(1, 1n);
    for (let i = 0; i < 6; i++) {
      await failAll();
      await sleep(10);
    }
    expect(completions.map((c) => c.updateId)).toEqual([0n]);
    expect(persister.pending()[0].awaitingUpdateIds).toEqual([1n]);
    expect(events).toEqual([`stalled ${name(1)}`]);
    expect(persister.pending()[0].pendingMs).toBeGreaterThanOrEqual(stalledAt);
    expect(persister.blocked).toBe(true);
    // The server returns: now the channel has recovered.
    store.auto = true;
    await failAll();
    await persister.flush();
    await sleep(60);
    expect(completions.map((c) => [c.updateId, c.durable])).toEqual([[0n, true], [1n, true]]);
    expect(events).toEqual([`stalled ${name(1)}`, `recovered ${name(1)}`]);
    await persister.close();
  });
});

describe('VssPersister review: stalls end only when the updates are durable', () => {
  for (const how of ['close()', 'a fatal error'] as const) {
    it(`a channel stalled through an outage does not report 'recovered' when ${how} ends its retries with the update still not durable`, async () => {
      const store = new HeldStore();
      const { persister, completions, ldk, name } = fakePersistSetup(store, { stallThresholdMs: 30, backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
      const events: string[] = [];
      persister.on('stalled', (e) => events.push(`stalled ${e.monitorName}`));
      persister.on('recovered', (e) => events.push(`recovered ${e.monitorName}`));
      persister.on('fatal', () => events.push('fatal'));
      ldk.newChannel(1, 0n);
      ldk.newChannel(2, 0n);
      await drain();
      // Channel 1's write fails like an outage and waits a long backoff; it stalls.
      await store.heldFor(name(1))[0].settle(connectionRefused());
      for (let i = 0; i < 50 && !events.includes(`stalled ${name(1)}`); i++) await sleep(10);
      expect(events).toContain(`stalled ${name(1)}`);
      if (how === 'close()') await persister.close({ timeoutMs: 0 });
      else await store.heldFor(name(2))[0].settle(new InvalidKeyError('refused for good'));
      await drain();
      expect(completions.filter((c) => c.monitor === name(1))).toEqual([]);
      expect(events.filter((e) => e.startsWith('recovered'))).toEqual([]);
      await persister.close({ timeoutMs: 0 });
    });
  }
});

/** Refuses a batch that names one key twice, as VssStore does (InvalidKeyError, nothing sent). */
class StrictBatchStore extends HeldStore {
  constructor(server: MemoryServer) {
    super(server, { atomicBatches: true });
    const inner = this.writeBatch!;
    (this as { writeBatch: (writes: readonly KeyValueWrite[]) => Promise<void> }).writeBatch = (writes) => {
      const keys = new Set(writes.map((w) => `${w.primaryNamespace}/${w.secondaryNamespace}/${w.key}`));
      if (keys.size !== writes.length) return Promise.reject(new InvalidKeyError('a batch names the same key more than once (one request cannot write a key twice)'));
      return inner(writes);
    };
  }
}

describe('VssPersister review: the same update id handed over twice', () => {
  it('two writes of one delta waiting for the manager go out without a batch naming the key twice; both hand-overs are acknowledged once durable', async () => {
    const store = new StrictBatchStore(new MemoryServer());
    store.auto = true;
    const { persister, completions, ldk } = fakePersistSetup(store);
    const fatal: Error[] = [];
    persister.on('fatal', (e) => fatal.push(e));
    const tracker = persister.linkManagerWriter({ requestPersist: () => {} });
    ldk.newChannel(1, 0n);
    await drain();
    await tracker.writeManager(Uint8Array.of(1), tracker.tickNow());
    await persister.flush();
    // LDK hands update 1 over, and again (a ChannelManager reloaded in this process re-issues
    // the update it holds as in flight) before any manager write.
    ldk.update(1, 1n);
    ldk.update(1, 1n);
    await drain();
    await tracker.writeManager(Uint8Array.of(2), tracker.tickNow());
    await drain();
    await tracker.writeManager(Uint8Array.of(3), tracker.tickNow()).catch(() => {});
    await persister.flush();
    expect(fatal).toEqual([]);
    expect(completions.filter((c) => c.updateId === 1n).every((c) => c.durable)).toBe(true);
    expect(completions.some((c) => c.updateId === 1n)).toBe(true);
    expect(persister.monitors()[0].awaitingUpdateIds).toEqual([]);
    await persister.close();
  });
});

describe('VssPersister review: checked and found fine (regression guards)', () => {
  it('a full monitor that replaced queued deltas and then fails acknowledges none of them; a permanent failure stops the persister with them unacknowledged', async () => {
    const store = new HeldStore();
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    const fatal: Error[] = [];
    persister.on('fatal', (e) => fatal.push(e));
    store.auto = true;
    ldk.newChannel(1, 0n);
    await persister.flush();
    store.auto = false;
    ldk.update(1, 1n); // unlinked: on the wire
    ldk.update(1, 2n); // queued behind it
    ldk.update(1, 3n);
    await drain();
    ldk.chainSync(1, 3n); // replaces the queued deltas 2 and 3
    await drain();
    expect(store.held.map((h) => h.keys[0].key).sort()).toEqual(['1', name(1)].sort());
    for (let i = 0; i < 3; i++) {
      for (const h of [...store.held]) await h.settle(connectionRefused());
      await sleep(5);
    }
    expect(completions.map((c) => c.updateId)).toEqual([0n]);
    await store.heldFor(name(1))[0].settle(new InvalidKeyError('refused for good'));
    for (const h of [...store.held]) await h.settle();
    await drain();
    expect(fatal).toHaveLength(1);
    expect(completions.map((c) => c.updateId)).toEqual([0n]);
    expect(store.server.has('monitor_updates', name(1), '2')).toBe(false);
    await persister.close();
  });

  it('an archive waits for the writes in flight before it: nothing is read or removed before the delta is durable', async () => {
    const store = new HeldStore();
    const { persister, completions, ldk } = fakePersistSetup(store);
    ldk.newChannel(1, 0n);
    await drain();
    await store.held[0].settle();
    ldk.update(1, 1n);
    await drain();
    ldk.archive(1);
    await drain();
    // Only the delta is on the wire: the archive has not read or removed anything yet.
    expect(store.held.map((h) => [h.op, h.keys[0].key])).toEqual([['write', '1']]);
    await store.held[0].settle();
    expect(completions.map((c) => [c.updateId, c.durable])).toEqual([[0n, true], [1n, true]]);
    await drain();
    // The archive runs now (stand-in monitors do not decode, so it stops the persister: what
    // matters here is that it started only after the delta was durable).
    expect(persister.fatalError?.name).toBe('CorruptStateError');
    await persister.close({ timeoutMs: 0 });
  });

  it('after a restart, deltas the store holds are removed only once a full monitor containing them is durable, and never one above it', async () => {
    const server = new MemoryServer();
    const store = new HeldStore(server);
    const { persister, completions, ldk, name } = fakePersistSetup(store, { maximumPendingUpdates: 4 });
    // What restore read: deltas 5..7 on top of the full monitor at 4; 9 is a leftover above.
    for (const id of [5, 6, 7, 9]) await store.inner.write('monitor_updates', name(1), String(id), Uint8Array.of(id));
    persister.noteStoredUpdates(name(1), [5n, 6n, 7n, 9n]);
    ldk.newChannel(1, 7n); // watch_channel re-persists the restored monitor
    await drain();
    ldk.update(1, 8n); // a full monitor (8 % 4 == 0)
    await drain();
    // Nothing is removed while the full monitor containing 5..7 is not durable.
    expect(store.held.map((h) => h.op)).toEqual(['write']);
    await store.held[0].settle(); // full monitor at 7
    expect(completions.map((c) => c.updateId)).toEqual([7n]);
    const removes = () => store.held.filter((h) => h.op === 'remove').map((h) => h.keys[0].key).sort();
    expect(removes()).toEqual(['5', '6', '7']);
    for (const h of store.held.filter((x) => x.op === 'remove')) await h.settle();
    await store.held[0].settle(); // full monitor at 8
    expect(completions.map((c) => [c.updateId, c.durable])).toEqual([[7n, true], [8n, true]]);
    expect(removes()).toEqual([]);
    expect(server.has('monitor_updates', name(1), '9')).toBe(true);
    await persister.close({ timeoutMs: 0 });
  });

  it('deltas stored after a gap (orphans restore reports) are removed by a covering full monitor but never counted as durable state', async () => {
    const server = new MemoryServer();
    const store = new HeldStore(server);
    store.auto = true;
    const { persister, ldk, name } = fakePersistSetup(store, { maximumPendingUpdates: 8 });
    // What restore read: the full monitor at 5; 7 and 8 are on the store after a gap (6 was lost).
    for (const id of [7, 8]) await store.inner.write('monitor_updates', name(1), String(id), Uint8Array.of(id));
    persister.noteStoredUpdates(name(1), [], [7n, 8n]);
    ldk.newChannel(1, 5n);
    await persister.flush();
    await drain();
    const durable = () => persister.monitors().find((m) => m.monitorName === name(1))?.durableUpdateId;
    expect(durable()).toBe(5n);
    // LDK re-issues 6: durable up to 6, not up to the orphans 7 and 8 (they are not this run's updates).
    ldk.update(1, 6n);
    await persister.flush();
    await drain();
    expect(durable()).toBe(6n);
    ldk.update(1, 7n);
    await persister.flush();
    await drain();
    expect(durable()).toBe(7n);
    // 8 is a full monitor (8 % 8 == 0): it covers the orphan 8, which is removed, like the delta 6 and 7.
    ldk.update(1, 8n);
    await persister.flush();
    await drain();
    expect(durable()).toBe(8n);
    expect(server.keys().filter((k) => k.primaryNamespace === 'monitor_updates').map((k) => k.key)).toEqual([]);
    await persister.close();
  });

  it('with maximumPendingUpdates N, at most N - 1 deltas are stored after the full monitor, across a restart', async () => {
    const server = new MemoryServer();
    const store = new HeldStore(server);
    store.auto = true;
    const deltas = () => server.keys().filter((k) => k.primaryNamespace === 'monitor_updates').length;
    let max = 0;
    {
      const { persister, ldk } = fakePersistSetup(store, { maximumPendingUpdates: 4 });
      ldk.newChannel(1, 0n);
      for (let id = 1n; id <= 10n; id++) {
        ldk.update(1, id);
        await persister.flush();
        await drain();
        max = Math.max(max, deltas());
      }
      await persister.close();
    }
    // Restart: restore read the full monitor at 8 plus deltas 9 and 10.
    const { persister, ldk, name } = fakePersistSetup(store, { maximumPendingUpdates: 4 });
    persister.noteStoredUpdates(name(1), [9n, 10n]);
    ldk.newChannel(1, 10n);
    await persister.flush();
    await drain();
    expect(deltas()).toBe(0);
    for (let id = 11n; id <= 20n; id++) {
      ldk.update(1, id);
      await persister.flush();
      await drain();
      max = Math.max(max, deltas());
    }
    expect(max).toBe(3);
    await persister.close();
  });
});
