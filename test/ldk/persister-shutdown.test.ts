/**
 * VssPersister.close()/shutdown() with writes under way (stand-in LDK callbacks, a store whose
 * writes complete when the test says so): nothing LDK was told is in progress may be dropped
 * silently. Each update is either acknowledged durable before close() resolves, or listed as not
 * persisted.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initLdk, PersisterStoppedError } from '../../src/ldk/index.js';
import { connectionRefused, MemoryServer } from './helpers/memory-store.js';
import { drain, fakePersistSetup, HeldStore, settled } from './helpers/fake-persist.js';

beforeAll(async () => {
  await initLdk();
});

describe('VssPersister.close() with writes under way', () => {
  it('waits for a write on the wire: it lands and LDK is told before close() resolves; every call shares that wait, and a waiting flush() settles after it', async () => {
    const store = new HeldStore();
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    ldk.newChannel(1, 0n);
    await drain();
    expect(store.held).toHaveLength(1);
    const flush = persister.flush().catch((e: unknown) => e);
    const closed = persister.close();
    const again = persister.close();
    expect(await settled(closed)).toBe('pending');
    expect(await settled(again)).toBe('pending');
    // LDK hands over another update meanwhile: not queued (closed), so it can only be reported.
    ldk.update(1, 1n);
    await store.heldFor(name(1))[0].settle();
    await closed;
    await again;
    expect(completions.map((c) => [c.updateId, c.durable])).toEqual([[0n, true]]);
    const report = await persister.shutdown();
    expect(report).toEqual({ notPersisted: [{ monitorName: name(1), updateIds: [1n] }], notPersistedCount: 1, writesInFlight: 0, fatalError: undefined });
    // The waiting flush() learns the outcome once the wait is over: update 1 is not durable.
    expect(await flush).toBeInstanceOf(PersisterStoppedError);
    expect(store.held).toHaveLength(0);
  });

  it('lists writes retrying through an outage or waiting for a manager write (never sent afterwards), and a write still on the wire when the bound runs out', async () => {
    const store = new HeldStore();
    const { persister, completions, ldk, name } = fakePersistSetup(store, { backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
    persister.linkManagerWriter({ requestPersist: () => {} });
    ldk.newChannel(1, 0n); // waits for a manager write that never comes
    await drain();
    expect(store.held).toHaveLength(0);
    // Chain-sync persists of channels whose updates no manager needs to know go out at once.
    ldk.chainSync(2, 0n);
    ldk.chainSync(3, 0n);
    await drain();
    expect(store.held.map((h) => h.keys[0].key).sort()).toEqual([name(2), name(3)].sort());
    await store.heldFor(name(2))[0].settle(connectionRefused()); // now in backoff
    const report = await persister.shutdown({ timeoutMs: 30 });
    // Channel 3's write never answered within the bound.
    expect(report.writesInFlight).toBe(1);
    expect(report.notPersisted).toEqual([{ monitorName: name(1), updateIds: [0n] }]);
    expect(report.notPersistedCount).toBe(1);
    expect(completions).toEqual([]);
    await drain();
    // Nothing held is sent after close().
    expect(store.held.map((h) => h.keys[0].key)).toEqual([name(3)]);
    await store.heldFor(name(3))[0].settle();
  });

  it('waits for a manager batch on the wire that carries a monitor write: it lands and LDK is told (not left unacknowledged while durable)', async () => {
    const store = new HeldStore(new MemoryServer(), { atomicBatches: true });
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    const tracker = persister.linkManagerWriter({ requestPersist: () => {} });
    ldk.newChannel(1, 0n);
    await drain();
    const batch = tracker.writeManager(Uint8Array.of(1), tracker.tickNow());
    await drain();
    expect(store.held.map((h) => h.op)).toEqual(['batch']);
    const shutdown = persister.shutdown();
    expect(await settled(shutdown)).toBe('pending');
    await store.held[0].settle();
    await batch;
    expect(await shutdown).toEqual({ notPersisted: [], notPersistedCount: 0, writesInFlight: 0, fatalError: undefined });
    expect(completions.map((c) => [c.monitor, c.updateId, c.durable])).toEqual([[name(1), 0n, true]]);
    await persister.flush();
  });

  it('a manager batch on the wire that fails during close() ends its monitor writes unsent and listed', async () => {
    const store = new HeldStore(new MemoryServer(), { atomicBatches: true });
    const { persister, completions, ldk, name } = fakePersistSetup(store);
    const tracker = persister.linkManagerWriter({ requestPersist: () => {} });
    ldk.newChannel(1, 0n);
    await drain();
    const batch = tracker.writeManager(Uint8Array.of(1), tracker.tickNow()).catch((e: unknown) => e);
    await drain();
    const shutdown = persister.shutdown();
    await store.held[0].settle(connectionRefused());
    await batch;
    expect(await shutdown).toMatchObject({ notPersisted: [{ monitorName: name(1), updateIds: [0n] }], writesInFlight: 0 });
    expect(completions).toEqual([]);
    expect(store.server.has('monitors', '', name(1))).toBe(false);
  });

  it('refuses a timeoutMs a timer cannot wait (RangeError), before closing', async () => {
    const { persister } = fakePersistSetup(new HeldStore());
    for (const timeoutMs of [-1, Number.NaN, Infinity, 2 ** 31]) await expect(persister.shutdown({ timeoutMs })).rejects.toBeInstanceOf(RangeError);
    await expect(persister.close({ timeoutMs: -1 })).rejects.toBeInstanceOf(RangeError);
    expect(await persister.shutdown({ timeoutMs: 0 })).toMatchObject({ notPersistedCount: 0 });
  });
});
