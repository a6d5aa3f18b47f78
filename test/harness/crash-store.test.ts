/**
 * CrashableStore over a real VssStore on a real server (memory backend): single writes and
 * atomic batches pass through, batches count write by write against a crash point, and a
 * crash at one write of a batch crashes the whole request at that timing, with nothing
 * reaching the server afterwards.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { StartedVssServer } from '../../src/server/index.js';
import { InvalidKeyError, KeyNotFoundError, supportsAtomicBatch, type VssStore } from '../../src/store/index.js';
import type { AsyncKVStore, KeyValueWrite } from '../../src/store/types.js';
import { CrashableStore, CrashPointCancelledError, SimulatedCrashError, type CrashEvent, type CrashPoint } from '../../harness/crash-store.js';
import { openVssWalletStore } from '../../harness/vss-wallet.js';
import { startServer } from './helpers/e2e.js';

let server: StartedVssServer;
const opened: VssStore[] = [];

beforeAll(async () => {
  server = await startServer('memory');
});
afterAll(async () => {
  await server?.close();
});
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => {});
});

async function openStore(storeId: string, seed: Uint8Array): Promise<VssStore> {
  const store = await openVssWalletStore({ storeId, seed }, { serverUrl: server.url, retry: 'none' });
  opened.push(store);
  return store;
}

/** A crashable store on a fresh store id, and a second client ("another device") to look at the server. */
async function fixture(options: { atomicBatches?: boolean } = {}): Promise<{ store: CrashableStore; server: () => Promise<VssStore> }> {
  const storeId = `crash-store-${randomBytes(4).toString('hex')}`;
  const seed = randomBytes(64);
  const store = new CrashableStore(await openStore(storeId, seed), options);
  return { store, server: () => openStore(storeId, seed) };
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const manager = (v: string): KeyValueWrite => ({ primaryNamespace: '', secondaryNamespace: '', key: 'manager', value: text(v) });
const update = (id: number, v = `u${id}`): KeyValueWrite => ({ primaryNamespace: 'monitor_updates', secondaryNamespace: 'chan_0', key: String(id), value: text(v) });

async function valueOf(store: AsyncKVStore, w: KeyValueWrite): Promise<string | undefined> {
  try {
    return new TextDecoder().decode(await store.read(w.primaryNamespace, w.secondaryNamespace, w.key));
  } catch (err) {
    if (err instanceof KeyNotFoundError) return undefined;
    throw err;
  }
}

function arm(store: CrashableStore, point: CrashPoint): CrashEvent[] {
  const events: CrashEvent[] = [];
  store.crashAt(point, (e) => events.push(e));
  return events;
}

describe('CrashableStore and atomic batches', () => {
  it('offers writeBatch exactly when the store underneath does and batching is not turned off', async () => {
    const { store } = await fixture();
    expect(supportsAtomicBatch(store)).toBe(true);
    expect(store.atomicBatches).toBe(true);
    const hidden = new CrashableStore(store.inner, { atomicBatches: false });
    expect(supportsAtomicBatch(hidden)).toBe(false);
    expect(hidden.atomicBatches).toBe(false);
    // A store without batches underneath: nothing to offer, whatever is asked.
    const plain: AsyncKVStore = {
      read: (p, s, k) => store.inner.read(p, s, k),
      write: (p, s, k, v) => store.inner.write(p, s, k, v),
      remove: (p, s, k, l) => store.inner.remove(p, s, k, l),
      list: (p, s) => store.inner.list(p, s),
      listAll: () => store.inner.listAll(),
    };
    expect(supportsAtomicBatch(new CrashableStore(plain))).toBe(false);
  });

  it('passes a batch through as one request and records each write and the batch', async () => {
    const { store, server: other } = await fixture();
    await store.write('', '', 'manager', text('m1'));
    await store.writeBatch!([manager('m2'), update(1), update(2)]);
    const view = await other();
    expect(await valueOf(view, manager(''))).toBe('m2');
    expect(await valueOf(view, update(1))).toBe('u1');
    expect(await valueOf(view, update(2))).toBe('u2');
    expect(store.writes.map((w) => [w.kind, w.key.key, w.batchSeq, w.requestSize])).toEqual([
      ['manager', 'manager', undefined, 1],
      ['manager', 'manager', 1, 3],
      ['monitor-update', '1', 1, 3],
      ['monitor-update', '2', 1, 3],
    ]);
    expect(store.batches).toHaveLength(1);
    expect(store.batches[0].items.map((i) => i.kind)).toEqual(['manager', 'monitor-update', 'monitor-update']);
    // A refused batch (the same key twice) is not recorded as durable.
    await expect(store.writeBatch!([update(3), update(3, 'again')])).rejects.toBeInstanceOf(InvalidKeyError);
    expect(store.batches).toHaveLength(1);
  });

  it('counts the writes of a batch one by one: the n-th monitor update may travel inside a batch', async () => {
    const { store } = await fixture();
    const events = arm(store, { kind: 'monitor-update', ordinal: 3, timing: 'after-durable' });
    await store.write('monitor_updates', 'chan_0', '1', text('u1'));
    await store.writeBatch!([manager('m'), update(2)]);
    expect(events).toEqual([]);
    const crashed = store.writeBatch!([manager('m2'), update(3), update(4)]);
    await expect(crashed).rejects.toBeInstanceOf(SimulatedCrashError);
    expect(events).toHaveLength(1);
    expect(events[0].key.key).toBe('3');
    expect(events[0].request.map((i) => `${i.kind}:${i.key.key}`)).toEqual(['manager:manager', 'monitor-update:3', 'monitor-update:4']);
  });

  it('before-durable at one write of a batch: none of the batch reaches the server, nor anything after it', async () => {
    const { store, server: other } = await fixture();
    await store.writeBatch!([manager('m1'), update(1)]);
    const events = arm(store, { kind: 'monitor-update', ordinal: 2, timing: 'before-durable' });
    await expect(store.writeBatch!([manager('m2'), update(2), update(3)])).rejects.toBeInstanceOf(SimulatedCrashError);
    expect(events.map((e) => e.key.key)).toEqual(['3']);
    expect(store.crashed).toBe(true);
    await expect(store.write('', '', 'manager', text('m3'))).rejects.toBeInstanceOf(SimulatedCrashError);
    await expect(store.writeBatch!([manager('m3')])).rejects.toBeInstanceOf(SimulatedCrashError);
    const view = await other();
    expect(await valueOf(view, manager(''))).toBe('m1');
    expect(await valueOf(view, update(2))).toBeUndefined();
    expect(await valueOf(view, update(3))).toBeUndefined();
    expect(store.batches).toHaveLength(1);
  });

  it('a crash aborts the store underneath at once: a write still queued in it is never sent', async () => {
    const { store, server: other } = await fixture();
    // m1 goes on the wire; m2 waits in VssStore's per-key queue behind it. Then the crash.
    const first = store.write('', '', 'manager', text('m1')).catch((err: unknown) => err);
    const second = store.write('', '', 'manager', text('m2')).catch((err: unknown) => err);
    store.crash();
    expect(await first).toBeInstanceOf(SimulatedCrashError);
    expect(await second).toBeInstanceOf(SimulatedCrashError);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // m1 was on the wire and may have landed, as after a real crash; m2 was never sent.
    expect([undefined, 'm1']).toContain(await valueOf(await other(), manager('')));
  });

  it('after-durable at the manager of a batch: the whole batch is durable, the wallet never hears back, what it sends next fails', async () => {
    const { store, server: other } = await fixture();
    const events = arm(store, { kind: 'manager', ordinal: 1, timing: 'after-durable' });
    const heard: string[] = [];
    const batch = store.writeBatch!([manager('m1'), update(1), update(2)]).then(
      () => heard.push('resolved'),
      (err: unknown) => heard.push(err instanceof SimulatedCrashError ? 'crashed' : String(err)),
    );
    // A write made while the batch is on the wire is parked and fails with the crash.
    const parked = store.write('monitors', '', 'chan_0', text('full')).catch((err: unknown) => err);
    await batch;
    expect(heard).toEqual(['crashed']);
    expect(events).toHaveLength(1);
    expect(events[0].kind).toBe('manager');
    expect(await parked).toBeInstanceOf(SimulatedCrashError);
    const view = await other();
    expect(await valueOf(view, manager(''))).toBe('m1');
    expect(await valueOf(view, update(1))).toBe('u1');
    expect(await valueOf(view, update(2))).toBe('u2');
    expect(store.batches).toHaveLength(1);
  });

  it('a `when` filter sees the whole request, so a crash can avoid batches that carry a given write', async () => {
    const { store } = await fixture();
    // Count managers only when they travel without a monitor update.
    const events = arm(store, { kind: 'manager', ordinal: 1, timing: 'before-durable', when: (_kind, _key, request) => !request.some((i) => i.kind === 'monitor-update') });
    await store.writeBatch!([manager('m1'), update(1)]);
    expect(events).toEqual([]);
    await expect(store.writeBatch!([manager('m2')])).rejects.toBeInstanceOf(SimulatedCrashError);
    expect(events).toHaveLength(1);
    expect(events[0].request).toHaveLength(1);
  });

  it('pauseWrites holds batches as well as single writes', async () => {
    const { store, server: other } = await fixture();
    const release = store.pauseWrites();
    let done = false;
    const batch = store.writeBatch!([manager('m1'), update(1)]).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false);
    expect(await valueOf(await other(), manager(''))).toBeUndefined();
    release();
    await batch;
    expect(await valueOf(await other(), update(1))).toBe('u1');
  });
});

describe('CrashableStore: a crash point that can no longer be reached', () => {
  /** Records what became of one armed point: hit, cancelled (and why), or neither yet. */
  function armTracked(store: CrashableStore, point: CrashPoint): { hit: CrashEvent[]; cancelled: CrashPointCancelledError[] } {
    const outcome = { hit: [] as CrashEvent[], cancelled: [] as CrashPointCancelledError[] };
    store.crashAt(
      point,
      (e) => outcome.hit.push(e),
      (err) => outcome.cancelled.push(err),
    );
    return outcome;
  }

  it('is cancelled with a reason when re-armed, disarmed, or the store crashes another way; arming a crashed store throws', async () => {
    const { store } = await fixture();
    const first = armTracked(store, { kind: 'manager', ordinal: 1, timing: 'before-durable' });
    const second = armTracked(store, { kind: 'monitor-update', ordinal: 5, timing: 'after-durable' });
    expect(first.cancelled.map((e) => [e.reason, e.message])).toEqual([['superseded', 'crash point (before-durable at write #1 of kind manager) was superseded by another crashAt before it was reached']]);
    expect(second.cancelled).toEqual([]);
    store.disarm();
    expect(second.cancelled.map((e) => e.reason)).toEqual(['disarmed']);
    const third = armTracked(store, { ordinal: 3, timing: 'after-durable' });
    store.crash();
    expect(third.cancelled.map((e) => [e.reason, e.message])).toEqual([['crashed', 'the store crashed another way before crash point (after-durable at write #3 of kind any) was reached']]);
    for (const outcome of [first, second, third]) expect(outcome.hit).toEqual([]);
    expect(() => store.crashAt({ ordinal: 1, timing: 'before-durable' }, () => {})).toThrow(CrashPointCancelledError);
  });

  it('a point cancelled while the write it counted is on the wire does not fire when that write lands', async () => {
    const { store } = await fixture();
    const old = armTracked(store, { kind: 'manager', ordinal: 1, timing: 'after-durable' });
    const release = store.pauseWrites();
    const write = store.writeBatch!([manager('m1')]); // counted: the point is hit once it is durable
    const next = armTracked(store, { kind: 'manager', ordinal: 9, timing: 'after-durable' });
    release();
    await write;
    expect(old.hit).toEqual([]);
    expect(old.cancelled.map((e) => e.reason)).toEqual(['superseded']);
    expect(store.crashed).toBe(false);
    expect(next.cancelled).toEqual([]);
  });
});
