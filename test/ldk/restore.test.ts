/**
 * Restoring LDK nodes from a store alone (real WASM): parallel reads, LDK's own
 * MonitorUpdatingPersister over the sync KVStore, and every way restore must fail closed.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  CorruptStateError,
  MissingChannelManagerError,
  MissingMonitorError,
  NothingToRestoreError,
  StaleMonitorError,
  LdkVssStore,
  migrateStore,
} from '../../src/ldk/index.js';
import type { VssStore } from '../../src/store/index.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { DataIntegrityError, StoreIOError, StoreOpenError } from '../../src/store/errors.js';
import { WalletNetwork } from '../../harness/network.js';
import { ldkMonitorUpdatingPersistence } from '../../harness/persistence.js';
import { storeSeed } from './helpers/backends.js';
import { RecordingStore } from './helpers/recording-store.js';
import { useVssBackend } from './helpers/fixture.js';
import { openPair, readMonitorsAsNewDevice, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore', () => pair, () => {
  pair = undefined;
});

/** Every key and value of a store (what a server backup would hold). */
async function snapshot(store: AsyncKVStore): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const k of await store.listAll()) out.set([k.primaryNamespace, k.secondaryNamespace, k.key].join('/'), await store.read(k.primaryNamespace, k.secondaryNamespace, k.key));
  return out;
}

/** A with a VssPersister and one channel to B, `payments` payments made, then crashed. */
async function crashedAfterPayments(storeId: string, payments: number): Promise<Pair> {
  const store = await fx.backend.open(storeId);
  const p = await openPair({ persistenceA: vssNode(store) });
  for (let i = 0; i < payments; i++) await p.net.pay(p.a, p.b, 10_000n, { settled: true });
  await p.a.eventLoop!.persistIfNeeded();
  await p.net.crash(p.a);
  await (store as { flush?: () => Promise<void> }).flush?.();
  return p;
}

const restoreA = async (p: Pair, store: AsyncKVStore) => p.net.restoreNode({ name: 'A', seed: p.a.seed, persistence: vssNode(store) });

describe('restoreNode', () => {
  it('restores a node with several channels, reading in parallel, and every channel pays again', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b } = pair;
    await net.openChannel(a, b);
    await net.openChannel(a, b, { zeroConf: true });
    const channelIds = a.channels().map((c) => Buffer.from(c.get_channel_id().get_a()).toString('hex'));
    expect(channelIds).toHaveLength(3);
    for (let i = 0; i < 3; i++) await net.pay(a, b, 20_000n, { settled: true });
    const balance = a.outboundCapacityMsat();
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);

    const recording = new RecordingStore(await fx.backend.open(storeId));
    const { node: a2, restored } = await restoreA(pair, recording);
    expect(restored.monitors).toHaveLength(3);
    expect(recording.maxReadsInFlight).toBeGreaterThanOrEqual(4); // not key-by-key
    expect(restored.stats.updatesApplied).toBeGreaterThan(0);
    await net.connect(a2, b);
    await net.waitFor(() => a2.channelManager.list_usable_channels().length === 3, { what: 'three usable channels' });
    expect(a2.outboundCapacityMsat()).toBe(balance);
    for (let i = 0; i < 3; i++) await net.pay(a2, b, 20_000n, { settled: true });
    expect(a2.outboundCapacityMsat()).toBe(balance - 60_000n);
    expect(a2.closures).toEqual([]);
    expect(b.closures).toEqual([]);
  });

  it("works with LDK's MonitorUpdatingPersister over the sync KVStore: restore with LDK's reader, pay again", async () => {
    const storeId = fx.nextStoreId();
    // One VssStore serves both: its blocking view (worker thread) for LDK's persister, the
    // async API for the manager.
    const persistence = async () => {
      const store = (await fx.backend.open(storeId)) as VssStore;
      return ldkMonitorUpdatingPersistence(new LdkVssStore(store, { deadlineMs: 10_000 }).syncStore, store, { maximumPendingUpdates: 4 });
    };
    pair = await openPair({ persistenceA: await persistence() });
    const { net, a, b, channel } = pair;
    for (let i = 0; i < 3; i++) await net.pay(a, b, 15_000n, { settled: true });
    const balance = a.outboundCapacityMsat();
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);

    // Our parallel reader agrees with LDK's layout...
    const [ours] = await readMonitorsAsNewDevice(await fx.backend.open(storeId), a.seed);
    expect(ours.name).toBe(channel.monitorName);
    expect(ours.monitor.get_latest_update_id()).toBe(15n);
    // ...and LDK's own reader restores the node.
    const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: await persistence() });
    expect(restored.monitors.map((m) => m.monitor.get_latest_update_id())).toEqual([15n]);
    await net.connect(a2, b);
    await net.waitFor(() => a2.channelManager.list_usable_channels().length === 1, { what: 'channel usable after restore' });
    expect(a2.outboundCapacityMsat()).toBe(balance);
    await net.pay(a2, b, 15_000n, { settled: true });
    expect(a2.closures).toEqual([]);
  });

  it('migrates a node to another store (new store id and keys), verifies every copy, and the node restores from the copy', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 2);
    const source = await fx.backend.open(storeId);
    const targetId = `${storeId}-moved`;
    const target = await fx.backend.open(targetId);
    const progress: number[] = [];
    const result = await migrateStore(source, target, { onProgress: (p) => progress.push(p.copied) });
    const keys = await source.listAll();
    expect(result.keys).toBe(keys.length);
    expect(progress.at(-1)).toBe(keys.length);
    expect((await target.listAll()).length).toBe(keys.length);

    const { node, restored } = await pair.net.restoreNode({ name: 'A', seed: pair.a.seed, persistence: vssNode(await fx.backend.open(targetId)) });
    expect(restored.monitors.map((m) => m.name)).toEqual([pair.channel.monitorName]);
    await pair.net.connect(node, pair.b);
    await pair.net.waitFor(() => node.channelManager.list_usable_channels().length === 1, { what: 'channel usable after migration' });
    await pair.net.pay(node, pair.b, 10_000n, { settled: true });
    expect([...node.closures, ...pair.b.closures]).toEqual([]);
  });

  it('refuses an empty store (NothingToRestoreError), never an empty node', async () => {
    const net = await WalletNetwork.create();
    await expect(net.restoreNode({ name: 'A', seed: randomBytes(32), persistence: vssNode(await fx.backend.open(fx.nextStoreId())) })).rejects.toBeInstanceOf(NothingToRestoreError);
    expect(net.liveNodes()).toEqual([]);
  });

  it('refuses monitors without a ChannelManager (MissingChannelManagerError)', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 1);
    const store = await fx.backend.open(storeId);
    await store.remove('', '', 'manager', false);
    await expect(restoreA(pair, await fx.backend.open(storeId))).rejects.toBeInstanceOf(MissingChannelManagerError);
  });

  it('refuses a ChannelManager whose channel has no monitor (MissingMonitorError)', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 1);
    const store = await fx.backend.open(storeId);
    const { monitorName, channelId } = pair.channel;
    await store.remove('monitors', '', monitorName, false);
    for (const id of await store.list('monitor_updates', monitorName)) await store.remove('monitor_updates', monitorName, id, false);
    const err = await restoreA(pair, await fx.backend.open(storeId)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingMonitorError);
    expect((err as MissingMonitorError).channelId).toBe(channelId);
  });

  it('refuses a monitor older than the ChannelManager (StaleMonitorError)', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const old = await snapshot(await fx.backend.open(storeId));
    await net.pay(a, b, 10_000n, { settled: true });
    await net.pay(a, b, 10_000n, { settled: true });
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);

    // Roll the monitor (only) back to the earlier backup; the manager stays current.
    const store = await fx.backend.open(storeId);
    await store.write('monitors', '', channel.monitorName, old.get(`monitors//${channel.monitorName}`)!);
    for (const id of await store.list('monitor_updates', channel.monitorName)) {
      if (!old.has(`monitor_updates/${channel.monitorName}/${id}`)) await store.remove('monitor_updates', channel.monitorName, id, false);
    }
    await expect(restoreA(pair, await fx.backend.open(storeId))).rejects.toBeInstanceOf(StaleMonitorError);
  });

  it('refuses bytes that are not a monitor, or an update that is not one (CorruptStateError)', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 1);
    const store = await fx.backend.open(storeId);
    const { monitorName } = pair.channel;
    const goodUpdate = await store.read('monitor_updates', monitorName, '5');
    await store.write('monitor_updates', monitorName, '5', Uint8Array.of(1, 2, 3));
    const badUpdate = await restoreA(pair, await fx.backend.open(storeId)).catch((e: unknown) => e);
    expect(badUpdate).toBeInstanceOf(CorruptStateError);
    expect((badUpdate as CorruptStateError).key).toBe('5');

    await store.write('monitor_updates', monitorName, '5', goodUpdate);
    await store.write('monitors', '', monitorName, Uint8Array.from([0xff, 0xff, ...randomBytes(64)]));
    const badMonitor = await restoreA(pair, await fx.backend.open(storeId)).catch((e: unknown) => e);
    expect(badMonitor).toBeInstanceOf(CorruptStateError);
    expect((badMonitor as CorruptStateError).primaryNamespace).toBe('monitors');
  });

  it('refuses a tampered value (DataIntegrityError from decryption), never a partial node', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 1);
    await fx.backend.tamper!(storeId, 'monitors', '', pair.channel.monitorName);
    await expect(restoreA(pair, await fx.backend.open(storeId))).rejects.toBeInstanceOf(DataIntegrityError);
    expect(pair.net.liveNodes().map((n) => n.name)).toEqual(['B']);
  });

  it('a wrong key fails when the store opens (StoreOpenError), never as an empty store', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 1);
    const wrongSeed = storeSeed(`${storeId}-other`);
    const err = await fx.backend.open(storeId, { seed: wrongSeed }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreOpenError);
    // The right key still restores the node.
    const { node } = await restoreA(pair, await fx.backend.open(storeId));
    expect(node.channels()).toHaveLength(1);
  });

  it('fails with the store error while the server is down, never an empty node', async () => {
    const storeId = fx.nextStoreId();
    pair = await crashedAfterPayments(storeId, 1);
    const store = await fx.backend.open(storeId);
    await fx.backend.stop();
    const err = await restoreA(pair, store).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreIOError);
    expect(pair.net.liveNodes().map((n) => n.name)).toEqual(['B']);
  });
});
