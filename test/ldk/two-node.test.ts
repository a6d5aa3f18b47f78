/**
 * Two in-process LDK nodes (real WASM), A persisting through VssPersister: the guarantees
 * the adapter exists for. One file so the WASM loads once.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import { ConcurrentWriterError, KeyNotFoundError, StoreClosedError } from '../../src/store/errors.js';
import {
  CHANNEL_MONITOR_NAMESPACE,
  CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE,
  readChannelMonitorsWithLdk,
  silentLogger,
  toLdkKVStore,
  VssPersister,
} from '../../src/ldk/index.js';
import { postgresServerOption, vssBackend, type StoreBackend } from './helpers/backends.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { MemoryKVStore, MemoryServer } from './helpers/memory-store.js';
import { overridingStore, RecordingStore } from './helpers/recording-store.js';
import { useVssBackend } from './helpers/fixture.js';
import { capturingLogger } from './helpers/capturing-logger.js';
import { openPairCrashedWithMonitorUpdateGap, fullMonitorUpdateId, openPair, persisterOf, readMonitorsAsNewDevice, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('two-node', () => pair, () => {
  pair = undefined;
});

/** Waits until a crashed node's last requests have settled (a real crash cuts them off). */
async function settle(store: AsyncKVStore): Promise<void> {
  await (store as { flush?: () => Promise<void> }).flush?.().catch(() => {});
}

describe('VssPersister between two LDK nodes', () => {
  it('tells LDK an update is complete only after it is durable, and a finished payment is entirely on the server', async () => {
    const storeId = fx.nextStoreId();
    const store = new RecordingStore(await fx.backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b, channel } = pair;
    const persister = persisterOf(a);

    // Whenever LDK is told an update is complete, the server already holds that update's delta
    // or a full monitor that contains it (checked against the store's resolved writes, at the
    // moment of the call, not against what the persister reports).
    const violations: string[] = [];
    const released: bigint[] = [];
    const tellLdk = ldk.ChainMonitor.prototype.channel_monitor_updated;
    const told = vi.spyOn(ldk.ChainMonitor.prototype, 'channel_monitor_updated').mockImplementation(function (this: ldk.ChainMonitor, outpoint, updateId) {
      const delta = store.durableValue(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, channel.monitorName, updateId.toString());
      const full = store.durableValue(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, channel.monitorName);
      const fullCovers = full ? fullMonitorUpdateId(full, a.seed) : -1n;
      if (!delta && fullCovers < updateId) violations.push(`LDK told update ${updateId} is complete; the server holds no delta for it and a full monitor at ${fullCovers}`);
      released.push(updateId);
      return tellLdk.call(this, outpoint, updateId);
    });
    onTestFinished(() => told.mockRestore());

    for (let i = 0; i < 3; i++) {
      const before = persister.monitors()[0].latestUpdateId;
      await net.pay(a, b, 50_000n, { settled: true });
      expect(violations).toEqual([]);
      const state = persister.monitors()[0];
      expect(state.latestUpdateId - before).toBe(5n); // 5 monitor updates per direct payment
      expect(state.durableUpdateId).toBe(state.latestUpdateId);
      // A new device reading the server alone gets exactly A's current monitor.
      const [onServer] = await readMonitorsAsNewDevice(await fx.backend.open(storeId), a.seed);
      expect(onServer.name).toBe(channel.monitorName);
      expect(onServer.monitor.get_latest_update_id()).toBe(state.latestUpdateId);
    }
    expect(violations).toEqual([]);
    // Linked to the manager writer over one store, every delta went out in the same atomic
    // request as a manager that knows it: one round trip per step, never a delta alone.
    const deltas = store.writes.filter((w) => w.key.primaryNamespace === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE);
    expect(deltas.length).toBeGreaterThanOrEqual(15);
    for (const d of deltas) {
      const batch = store.batches.find((keys) => keys.some((k) => k.primaryNamespace === d.key.primaryNamespace && k.key === d.key.key));
      expect(batch?.some((k) => k.key === 'manager')).toBe(true);
    }
    // Every id LDK issued was released exactly once and in order.
    const expected = Array.from({ length: 15 }, (_, i) => BigInt(i + 1));
    expect(released).toEqual(expected);
    expect(a.pendingMonitorUpdates()).toEqual([]);
  });

  it('holds the channel while the server is down (no message leaves A) and completes once it is back', async () => {
    const storeId = fx.nextStoreId();
    const log = capturingLogger();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId), { stallThresholdMs: 300, log }) });
    const { net, a, b } = pair;
    const persister = persisterOf(a);
    const stalled: string[] = [];
    const recovered: string[] = [];
    persister.on("stalled", (info) => stalled.push(info.monitorName));
    persister.on('recovered', (info) => recovered.push(info.monitorName));
    // Observers with bugs: each status listener throws. Persistence must not notice (before,
    // a throwing 'manager-persisted' listener made the loop rewrite the manager forever, and a
    // throwing 'stalled' listener, called from a timer, crashed the process).
    const thrown = new Set<string>();
    const buggy = (event: string) => () => {
      thrown.add(event);
      throw new Error(`observer bug in '${event}'`);
    };
    for (const event of ['durable', 'stalled', 'recovered', 'retry'] as const) persister.on(event, buggy(event));
    for (const event of ['manager-persisted', 'retry'] as const) a.eventLoop!.on(event, buggy(`loop ${event}`));
    await net.pay(a, b, 10_000n, { settled: true });
    const balanceB = b.channels()[0].get_outbound_capacity_msat();

    await fx.backend.stop();
    const sentBefore = net.bytesSent(a, b);
    const handle = net.sendPayment(a, b, 20_000n);
    await net.runFor(1_500);

    // Nothing advanced: A wrote no byte to B, B saw no HTLC, the payment is pending.
    expect(net.bytesSent(a, b)).toBe(sentBefore);
    expect(b.channels()[0].get_pending_inbound_htlcs()).toHaveLength(0);
    expect(b.channels()[0].get_outbound_capacity_msat()).toBe(balanceB);
    expect(net.paymentState(handle).sender?.status).toBe('pending');
    expect(net.paymentState(handle).receiver).toBeUndefined();
    expect(a.pendingMonitorUpdates().map((p) => p.updateIds)).toEqual([[6n]]);
    expect(persister.pending()[0].awaitingUpdateIds).toEqual([6n]);
    // The update waits for the manager write that knows it, which is retrying.
    expect(persister.pending()[0].waitingForManager).toBe(true);
    expect(a.eventLoop!.stats.retries).toBeGreaterThan(1);
    expect(persister.blocked).toBe(true);
    expect(stalled).toEqual([pair.channel.monitorName]);
    expect(persister.fatalError).toBeUndefined();
    expect(a.channels()[0].get_is_usable()).toBeTruthy(); // no panic, no close

    await fx.backend.resume();
    await net.waitForPayment(handle, { settled: true });
    expect(recovered).toEqual([pair.channel.monitorName]);
    expect(persister.blocked).toBe(false);
    expect(a.closures).toEqual([]);
    expect(b.closures).toEqual([]);
    expect([...thrown].sort()).toEqual(['durable', 'loop manager-persisted', 'loop retry', 'recovered', 'stalled']);
    expect(persister.fatalError).toBeUndefined();
    expect(log.lines.some((line) => line.level === 'error' && line.message.includes("a 'stalled' listener threw"))).toBe(true);
  });

  it('restores A from the store alone: the channel reestablishes with the same balance and pays again', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b, channel } = pair;
    for (let i = 0; i < 3; i++) await net.pay(a, b, 30_000n, { settled: true });
    const balanceA = a.channels()[0].get_outbound_capacity_msat();
    const latest = persisterOf(a).monitors()[0].latestUpdateId;
    await a.eventLoop!.persistIfNeeded();

    await net.crash(a);
    const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(storeId)) });
    expect(restored.monitors.map((m) => m.name)).toEqual([channel.monitorName]);
    expect(restored.monitors[0].monitor.get_latest_update_id()).toBe(latest);
    expect(a2.nodeIdHex).toBe(a.nodeIdHex);
    await net.connect(a2, b);
    await net.waitFor(() => a2.channelManager.list_usable_channels().length === 1, { what: 'channel usable after restore' });
    expect(a2.channels()[0].get_outbound_capacity_msat()).toBe(balanceA);

    await net.pay(a2, b, 40_000n, { settled: true });
    expect(a2.channels()[0].get_outbound_capacity_msat()).toBe(balanceA - 40_000n);
    expect(a2.closures).toEqual([]);
    expect(b.closures).toEqual([]);
  });

  it('stops on ConcurrentWriterError from a second writer: no retries, the channel stays held', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId), { maximumPendingUpdates: 3 }) });
    const { net, a, b, channel } = pair;
    const persister = persisterOf(a);
    const fatal: Error[] = [];
    persister.on('fatal', (e) => fatal.push(e));
    await net.pay(a, b, 10_000n, { settled: true });

    // Another instance of the same wallet writes A's full monitor behind its back.
    const intruder = await fx.backend.open(storeId);
    const current = await intruder.read(CHANNEL_MONITOR_NAMESPACE.primary, '', channel.monitorName);
    await intruder.write(CHANNEL_MONITOR_NAMESPACE.primary, '', channel.monitorName, current);

    // The next payment crosses update 6, a full-monitor write (every 3 updates): it conflicts.
    const handle = net.sendPayment(a, b, 10_000n);
    await net.waitFor(() => persister.fatalError !== undefined, { what: 'the persister to stop' });
    expect(persister.fatalError).toBeInstanceOf(ConcurrentWriterError);
    expect(fatal).toHaveLength(1);
    // The full monitor went out in one request with the manager: that write failed for both.
    expect(a.eventLoop!.fatalError).toBeInstanceOf(ConcurrentWriterError);
    const retries = persister.stats.retries;
    await net.runFor(500);
    expect(persister.stats.retries).toBe(retries);
    expect(a.pendingMonitorUpdates()).not.toEqual([]);
    expect(net.paymentState(handle).receiver?.status).not.toBe('succeeded');
    await expect(persister.flush()).rejects.toBeInstanceOf(ConcurrentWriterError);
  });
});

/**
 * A's channel monitor as stored after one payment (update k), and the update k + 1 of the next
 * payment: the material for driving a second device's ChainMonitor by hand.
 */
async function storedMonitorAndNextUpdate(): Promise<{ monitor: ldk.ChannelMonitor; update: ldk.ChannelMonitorUpdate }> {
  const aServer = new MemoryServer();
  pair = await openPair({ persistenceA: vssNode(new MemoryKVStore(aServer)) });
  const { net, a, b, channel } = pair;
  await net.pay(a, b, 50_000n, { settled: true });
  await persisterOf(a).flush();
  const [stored] = await readMonitorsAsNewDevice(new MemoryKVStore(aServer.clone()), a.seed);
  const k = stored.monitor.get_latest_update_id();
  await net.pay(a, b, 50_000n, { settled: true });
  await persisterOf(a).flush();
  const delta = aServer.get(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, channel.monitorName, String(k + 1n));
  if (!delta) throw new Error(`update ${k + 1n} was not stored`);
  const update = (ldk.ChannelMonitorUpdate.constructor_read(delta) as ldk.Result_ChannelMonitorUpdateDecodeErrorZ_OK).res;
  return { monitor: stored.monitor, update };
}

/** A ChainMonitor with a VssPersister over `store` (not linked to any manager writer), as on another device. */
function newDeviceChainMonitor(store: AsyncKVStore) {
  const keys = ldk.KeysManager.constructor_new(new Uint8Array(32).fill(9), BigInt(Math.floor(Date.now() / 1000)), 9);
  const logger = ldk.Logger.new_impl({ log: () => {} });
  const broadcast: Uint8Array[] = [];
  const broadcaster = ldk.BroadcasterInterface.new_impl({ broadcast_transactions: (txs: Uint8Array[]) => void broadcast.push(...txs) });
  const feeEstimator = ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => 253 });
  const persister = new VssPersister({
    store,
    entropySource: keys.as_EntropySource(),
    signerProvider: keys.as_SignerProvider(),
    broadcaster,
    feeEstimator,
    logger,
    log: silentLogger,
  });
  const chainMonitor = ldk.ChainMonitor.constructor_new(ldk.Option_FilterZ.constructor_none(), broadcaster, logger, feeEstimator, persister.toLdkPersist());
  persister.attach(chainMonitor);
  const broadcastLatestHolderCommitment = (monitor: ldk.ChannelMonitor) => monitor.broadcast_latest_holder_commitment_txn(broadcaster, feeEstimator, logger);
  return { persister, chainMonitor, broadcast, broadcastLatestHolderCommitment };
}

describe('VssPersister storage layout', () => {
  it("writes LDK's layout: full monitors every N updates with the sentinel, stale deltas removed, LDK's own reader restores it", async () => {
    const storeId = fx.nextStoreId();
    const store = new RecordingStore(await fx.backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store, { maximumPendingUpdates: 4 }) });
    const { net, a, b, channel } = pair;
    // A delta may go only once the server holds a full monitor that contains it: removing it
    // earlier would leave a crash with an old full monitor and its deltas gone.
    const earlyRemovals: string[] = [];
    let deltaRemovals = 0;
    store.beforeRemove = (k) => {
      if (k.primaryNamespace !== CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE) return;
      deltaRemovals++;
      const full = store.durableValue(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, k.secondaryNamespace);
      const covers = full ? fullMonitorUpdateId(full, a.seed) : -1n;
      if (covers < BigInt(k.key)) earlyRemovals.push(`delta ${k.key} removed while the stored full monitor is at ${covers}`);
    };
    for (let i = 0; i < 3; i++) await net.pay(a, b, 10_000n, { settled: true });
    const persister = persisterOf(a);
    await persister.flush();
    expect(persister.monitors()[0].latestUpdateId).toBe(15n);
    await net.runFor(100); // lazy removals settle
    expect(deltaRemovals).toBeGreaterThanOrEqual(6); // after the fulls at 4, 8 and 12
    expect(earlyRemovals).toEqual([]);

    const view = await fx.backend.open(storeId);
    const full = await view.read('monitors', '', channel.monitorName);
    expect([...full.subarray(0, 2)]).toEqual([0xff, 0xff]);
    // Fulls at 4, 8, 12 made 1..12 obsolete; 13..15 are the live deltas.
    expect((await view.list('monitor_updates', channel.monitorName)).sort()).toEqual(['13', '14', '15']);
    expect(persister.stats.fullWrites).toBeGreaterThanOrEqual(4); // new channel + 4, 8, 12

    // LDK's MonitorUpdatingPersister over our sync KVStore bridge reads the same monitor.
    const keys = ldk.KeysManager.constructor_new(a.seed, 1n, 1);
    const mup = ldk.MonitorUpdatingPersister.constructor_new(
      toLdkKVStore(await fx.backend.openSync(storeId), { log: silentLogger }),
      a.logger,
      4n,
      keys.as_EntropySource(),
      keys.as_SignerProvider(),
      a.broadcaster,
      a.feeEstimator,
    );
    const monitors = readChannelMonitorsWithLdk(mup);
    expect(monitors.map((m) => m.name)).toEqual([channel.monitorName]);
    expect(monitors[0].monitor.get_latest_update_id()).toBe(15n);
  });

  it('a chain-sync full monitor (update pointer 0) supersedes deltas queued during an outage', async () => {
    const storeId = fx.nextStoreId();
    const store = new RecordingStore(await fx.backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const persister = persisterOf(a);
    const fullsBefore = persister.stats.fullWrites;

    await fx.backend.stop();
    const handle = net.sendPayment(a, b, 10_000n);
    await net.waitFor(() => persister.pending().length > 0 && a.eventLoop!.stats.retries > 0, { what: 'a write held by the outage' });
    net.mine(12); // LDK re-persists whole monitors during chain sync
    await net.waitFor(() => persister.pending()[0]?.queuedWrites > 1, { what: 'a chain-sync full monitor queued' });
    await fx.backend.resume();
    await net.waitForPayment(handle, { settled: true });

    expect(store.wrote('monitor_updates', channel.monitorName, '6')).toBe(false); // never sent: covered by the full monitor
    expect(persister.stats.fullWrites).toBeGreaterThan(fullsBefore);
    const [onServer] = await readMonitorsAsNewDevice(await fx.backend.open(storeId), a.seed);
    expect(onServer.monitor.get_latest_update_id()).toBe(persister.monitors()[0].latestUpdateId);
  });

  it("'persist-requested' reaches listeners after LDK's callback returns, so a listener may drive poll()", async () => {
    pair = await openPair({ persistenceA: vssNode(new MemoryKVStore()) });
    const { net, a, b } = pair;
    let requests = 0;
    const pollErrors: unknown[] = [];
    a.eventLoop!.on('persist-requested', () => {
      requests += 1;
      try {
        a.eventLoop!.poll();
      } catch (error) {
        pollErrors.push(error);
      }
    });
    await net.pay(a, b, 10_000n, { settled: true });
    expect(requests).toBeGreaterThan(0);
    expect(pollErrors).toEqual([]);
    await net.pay(a, b, 10_000n, { settled: true });
  });

  it('an update ChainMonitor cannot apply (funding already spent) is still reported complete once the whole monitor is durable', async () => {
    const { monitor, update } = await storedMonitorAndNextUpdate();
    const { persister, chainMonitor, broadcast, broadcastLatestHolderCommitment } = newDeviceChainMonitor(new MemoryKVStore(new MemoryServer()));
    // Another ChainMonitor watches the monitor and sees its holder commitment confirmed.
    broadcastLatestHolderCommitment(monitor);
    const outpoint = monitor.get_funding_txo().get_a();
    chainMonitor.as_Watch().watch_channel(outpoint, monitor);
    await persister.flush();
    chainMonitor.as_Confirm().transactions_confirmed(new Uint8Array(80), [ldk.TwoTuple_usizeTransactionZ.constructor_new(1, broadcast[0])], 200);
    await persister.flush();

    // LDK refuses the update (the funding is spent), hands over the whole monitor without it,
    // and still waits for its id.
    const id = update.get_update_id();
    expect(chainMonitor.as_Watch().update_channel(outpoint, update)).toBe(ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_InProgress);
    expect(persister.monitors()[0].awaitingUpdateIds).toEqual([id]);
    await persister.flush();
    expect(chainMonitor.list_pending_monitor_updates().flatMap((entry) => entry.get_b())).toEqual([]);
    expect(persister.monitors()[0]).toMatchObject({ durableUpdateId: id, awaitingUpdateIds: [] });
    await persister.close();
  });

  it('unlinked from the manager writer, one monitor write per channel at a time: no delta overtakes a full monitor', async () => {
    const { monitor, update } = await storedMonitorAndNextUpdate();
    // A store whose monitor writes wait until released, in the order they arrive.
    const inner = new MemoryKVStore(new MemoryServer());
    const started: string[] = [];
    const release: Array<() => void> = [];
    const gated = overridingStore(inner, {
      write: async (p, s, k, value) => {
        started.push(p === CHANNEL_MONITOR_NAMESPACE.primary ? 'full' : `delta ${k}`);
        await new Promise<void>((resolve) => release.push(resolve));
        await inner.write(p, s, k, value);
      },
    });
    const { persister, chainMonitor } = newDeviceChainMonitor(gated);
    const outpoint = monitor.get_funding_txo().get_a();
    chainMonitor.as_Watch().watch_channel(outpoint, monitor);
    chainMonitor.as_Watch().update_channel(outpoint, update);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The whole monitor is being written; the delta after it waits (a crash now must not leave
    // the delta stored with the monitor before it missing).
    expect(started).toEqual(['full']);
    release.shift()!();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(started).toEqual(['full', `delta ${update.get_update_id()}`]);
    release.shift()!();
    await persister.flush();
    expect(chainMonitor.list_pending_monitor_updates().flatMap((entry) => entry.get_b())).toEqual([]);
    await persister.close();
  });

  it('an archive that finds a delta gone mid-read stops (fail closed) instead of taking it for a missing monitor', async () => {
    const storeId = fx.nextStoreId();
    const inner = await fx.backend.open(storeId);
    let archiving = false;
    const store = overridingStore(inner, {
      // While archiving, every delta is listed but reads as missing, as if removed in between.
      read: (p, s, k) => (archiving && p === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE ? Promise.reject(new KeyNotFoundError(p, s, k)) : inner.read(p, s, k)),
    });
    pair = await openPair({ persistenceA: vssNode(store, { linkManager: false }) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const persister = persisterOf(a);
    await persister.flush();
    const deltas = await inner.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, channel.monitorName);
    expect(deltas.length).toBeGreaterThan(0);
    await net.stop();
    archiving = true;
    const [txid, index] = channel.monitorName.split('_');
    persister.toLdkPersist().archive_persisted_channel(ldk.OutPoint.constructor_new(Uint8Array.from(Buffer.from(txid, 'hex').reverse()), Number(index)));
    await persister.flush().catch(() => {});
    expect(persister.fatalError).toBeInstanceOf(KeyNotFoundError);
    // Nothing was taken apart: the live monitor and its deltas are all still there.
    expect(await inner.list(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary)).toEqual([channel.monitorName]);
    expect((await inner.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, channel.monitorName)).sort()).toEqual([...deltas].sort());
  });

  it('a write cut off by close() (its store closed under it) ends quietly: a shutdown is not a fatal error', async () => {
    const storeId = fx.nextStoreId();
    const inner = await fx.backend.open(storeId);
    let holdDeltas = false;
    let cutOff: ((err: Error) => void) | undefined;
    const store = overridingStore(inner, {
      write: (p, s, k, value) =>
        holdDeltas && p === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE ? new Promise<void>((_, reject) => (cutOff = reject)) : inner.write(p, s, k, value),
    });
    pair = await openPair({ persistenceA: vssNode(store, { linkManager: false }) });
    const { net, a, b } = pair;
    const persister = persisterOf(a);
    const fatal: Error[] = [];
    persister.on('fatal', (e) => fatal.push(e));
    holdDeltas = true;
    net.sendPayment(a, b, 10_000n);
    for (let i = 0; i < 100 && !cutOff; i++) await net.runFor(10);
    expect(cutOff).toBeDefined();
    // close() waits for the write on the wire; the store closed under it ends that wait.
    const closed = persister.shutdown();
    cutOff!(new StoreClosedError('the store was closed'));
    const report = await closed;
    expect(report.writesInFlight).toBe(0);
    expect(report.notPersistedCount).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(fatal).toEqual([]);
    expect(persister.fatalError).toBeUndefined();
  });

  it('archives a monitor in LDK\'s layout (plain serialization under archived_monitors, live keys removed)', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const persister = persisterOf(a);
    const latest = persister.monitors()[0].latestUpdateId;
    await net.stop(); // no further updates while archiving

    const [txid, index] = channel.monitorName.split('_');
    const outpoint = ldk.OutPoint.constructor_new(Uint8Array.from(Buffer.from(txid, 'hex').reverse()), Number(index));
    persister.toLdkPersist().archive_persisted_channel(outpoint);
    await persister.flush();
    await new Promise((r) => setTimeout(r, 50));

    const view = await fx.backend.open(storeId);
    expect(await view.list('monitors', '')).toEqual([]);
    expect(await view.list('monitor_updates', channel.monitorName)).toEqual([]);
    const archived = await view.read('archived_monitors', '', channel.monitorName);
    expect(archived[0]).not.toBe(0xff);
    const keys = ldk.KeysManager.constructor_new(a.seed, 1n, 2);
    const decoded = ldk.UtilMethods.constructor_C2Tuple_ThirtyTwoBytesChannelMonitorZ_read(archived, keys.as_EntropySource(), keys.as_SignerProvider());
    expect(decoded).toBeInstanceOf(ldk.Result_C2Tuple_ThirtyTwoBytesChannelMonitorZDecodeErrorZ_OK);
    expect((decoded as ldk.Result_C2Tuple_ThirtyTwoBytesChannelMonitorZDecodeErrorZ_OK).res.get_b().get_latest_update_id()).toBe(latest);
  });

  it('an archive writes the archived copy before removing the live monitor, and one interrupted after that removal finishes on retry', async () => {
    const storeId = fx.nextStoreId();
    const inner = await fx.backend.open(storeId);
    let failDeltaRemoves = 1;
    // The first archived write fails; at that moment the live monitor must still be there
    // (removing it first would lose the monitor to a crash between the two steps).
    let failArchivedWrites = 1;
    let liveWhenArchiving: string[] | undefined;
    const store = overridingStore(inner, {
      write: async (p, s, k, value) => {
        if (p === 'archived_monitors' && failArchivedWrites > 0) {
          failArchivedWrites -= 1;
          liveWhenArchiving = await inner.list(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary);
          throw new Error('connection reset');
        }
        return inner.write(p, s, k, value);
      },
      remove: async (p, s, k, lazy) => {
        if (p === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE && failDeltaRemoves > 0) {
          failDeltaRemoves -= 1;
          throw new Error('connection reset');
        }
        return inner.remove(p, s, k, lazy);
      },
    });
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const persister = persisterOf(a);
    await persister.flush();
    expect((await inner.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, channel.monitorName)).length).toBeGreaterThan(0);
    await net.stop();

    const [txid, index] = channel.monitorName.split('_');
    persister.toLdkPersist().archive_persisted_channel(ldk.OutPoint.constructor_new(Uint8Array.from(Buffer.from(txid, 'hex').reverse()), Number(index)));
    await persister.flush();
    await new Promise((r) => setTimeout(r, 50));

    expect(failDeltaRemoves).toBe(0);
    expect(failArchivedWrites).toBe(0);
    expect(liveWhenArchiving).toEqual([channel.monitorName]);
    expect(persister.stats.retries).toBeGreaterThan(1);
    const view = await fx.backend.open(storeId);
    expect(await view.list('monitors', '')).toEqual([]);
    expect(await view.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, channel.monitorName)).toEqual([]);
    expect((await view.read('archived_monitors', '', channel.monitorName)).length).toBeGreaterThan(0);
  });
});

describe('ordering of monitor and manager writes', () => {
  // LDK force-closes a channel on restore when its monitor holds an update the stored
  // manager never heard of. Crash A right after each monitor write of a payment: every
  // restore must come back without a close and pay again.
  // Both ways of keeping the order: the manager and the monitor writes waiting for it in one
  // atomic request, and (a store without batches) the manager first, then the monitor write.
  const crashCases = [1, 2, 3, 4, 5].flatMap((step) => [
    { step, atomicBatches: true },
    { step, atomicBatches: false },
  ]);
  for (const { step, atomicBatches } of crashCases) {
    it(`a crash right after monitor update ${step} of a payment is durable restores without a force-close (${atomicBatches ? 'batched with the manager' : 'manager written first'})`, async () => {
      const storeId = fx.nextStoreId();
      const store = new RecordingStore(await fx.backend.open(storeId), { atomicBatches });
      pair = await openPair({ persistenceA: vssNode(store) });
      const { net, a, b } = pair;
      await net.pay(a, b, 10_000n, { settled: true });
      const target = String(5 + step);
      let crashed: Promise<void> | undefined;
      store.afterWrite = (w) => {
        if (w.key.primaryNamespace === 'monitor_updates' && w.key.key === target && !crashed) {
          store.outage = true; // nothing more reaches the server from this instance
          crashed = net.crash(a);
        }
      };
      const handle = net.sendPayment(a, b, 20_000n);
      await net.waitFor(() => crashed !== undefined, { what: `monitor update ${target} durable` });
      await crashed;
      await settle(store.inner);

      const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(storeId)) });
      expect(restored.monitors[0].monitor.get_latest_update_id()).toBeGreaterThanOrEqual(BigInt(target));
      await net.connect(a2, b);
      await net.waitFor(() => a2.channelManager.list_usable_channels().length === 1 && net.quiescent(a2, b), { what: 'channel usable and idle after restore' });
      expect(a2.closures).toEqual([]);
      expect(b.closures).toEqual([]);
      // The interrupted payment either completed or was cleanly failed; nothing is stuck.
      const receiver = net.paymentState(handle).receiver?.status;
      expect(receiver === undefined || receiver === 'succeeded').toBe(true);
      await net.pay(a2, b, 10_000n, { settled: true });
      expect(a2.closures).toEqual([]);
    });
  }

  it('written together with the manager, updates 7 and 8 land atomically: a refused 7 keeps 8 off the server too, and both land once it is accepted', async () => {
    const storeId = fx.nextStoreId();
    const store = new RecordingStore(await fx.backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const managerWrites = store.writes.filter((w) => w.key.key === 'manager').length;
    // Updates 7 and 8 (B's revoke_and_ack and commitment_signed) reach A together.
    store.failWritesTo = (k) => k.primaryNamespace === 'monitor_updates' && k.key === '7';
    const handle = net.sendPayment(a, b, 20_000n);
    await net.waitFor(() => a.eventLoop!.stats.retries >= 2, { what: 'the batch with update 7 refused twice' });
    const view = await fx.backend.open(storeId);
    expect(await view.list('monitor_updates', channel.monitorName)).not.toContain('8');
    expect(persisterOf(a).pending()[0].awaitingUpdateIds).toEqual(expect.arrayContaining([7n, 8n]));
    expect(net.paymentState(handle).sender?.status).toBe('pending');

    store.failWritesTo = undefined;
    await net.waitForPayment(handle, { settled: true });
    const batch = store.batches.find((keys) => keys.some((k) => k.key === '7'));
    expect(batch?.map((k) => k.key).sort()).toEqual(['7', '8', 'manager']);
    expect(store.writes.filter((w) => w.key.key === 'manager').length).toBeGreaterThan(managerWrites);
    expect([...a.closures, ...b.closures]).toEqual([]);
  });

  it('written separately (a store without atomic batches), a gap in the stored deltas (update 7 lost, 8 stored) restores by LDK re-issuing the missing updates', async () => {
    const storeId = fx.nextStoreId();
    const store = new RecordingStore(await fx.backend.open(storeId), { atomicBatches: false });
    const { net, a, b, channel } = await openPairCrashedWithMonitorUpdateGap(store, (opened) => (pair = opened));

    const view = await fx.backend.open(storeId);
    const stored = await view.list('monitor_updates', channel.monitorName);
    expect(stored).toContain('8');
    expect(stored).not.toContain('7');
    const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(storeId)) });
    expect(restored.monitors[0].orphanUpdateIds).toEqual([8n]);
    expect(restored.monitors[0].monitor.get_latest_update_id()).toBe(6n);
    await net.connect(a2, b);
    await net.waitFor(() => a2.channelManager.list_usable_channels().length === 1 && net.quiescent(a2, b), { what: 'channel usable and idle after restore' });
    expect([...a2.closures, ...b.closures]).toEqual([]);
    const [onServer] = await readMonitorsAsNewDevice(await fx.backend.open(storeId), a.seed);
    expect(onServer.orphanUpdateIds).toEqual([]);
    expect(onServer.monitor.get_latest_update_id()).toBeGreaterThanOrEqual(8n);
    await net.pay(a2, b, 10_000n, { settled: true });
  });

  it('stops on ConcurrentWriterError for the manager and surfaces it', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const intruder = await fx.backend.open(storeId);
    await intruder.write('', '', 'manager', await intruder.read('', '', 'manager'));
    net.sendPayment(a, b, 10_000n);
    await net.waitFor(() => a.eventLoop!.fatalError !== undefined, { what: 'the event loop to stop' });
    expect(a.eventLoop!.fatalError).toBeInstanceOf(ConcurrentWriterError);
    await expect(a.eventLoop!.idle()).rejects.toBeInstanceOf(ConcurrentWriterError);
  });
});

// One database for every run (store ids are unique per test): a name per process left one
// database behind on the PostgreSQL server for every run.
const postgres = postgresServerOption('ldk_vss_ldk_tests');
describe.skipIf(!postgres)(`on PostgreSQL${postgres ? '' : ' (SKIPPED: TEST_DATABASE_URL not set)'}`, () => {
  let pg: StoreBackend;
  beforeAll(async () => {
    pg = await vssBackend(postgres);
  }, 60_000);
  afterAll(async () => {
    await pg?.close();
  });
  afterEach(async () => {
    await pg.resume();
  });

  it('durable before release, held during an outage, restored from the store alone', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await pg.open(storeId)) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const [onServer] = await readMonitorsAsNewDevice(await pg.open(storeId), a.seed);
    expect(onServer.monitor.get_latest_update_id()).toBe(persisterOf(a).monitors()[0].latestUpdateId);

    await pg.stop();
    const sent = net.bytesSent(a, b);
    const handle = net.sendPayment(a, b, 10_000n);
    await net.runFor(800);
    expect(net.bytesSent(a, b)).toBe(sent);
    expect(net.paymentState(handle).receiver).toBeUndefined();
    await pg.resume();
    await net.waitForPayment(handle, { settled: true });

    const balance = a.outboundCapacityMsat();
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);
    const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await pg.open(storeId)) });
    expect(restored.monitors.map((m) => m.name)).toEqual([channel.monitorName]);
    await net.connect(a2, b);
    await net.waitFor(() => a2.channelManager.list_usable_channels().length === 1, { what: 'channel usable after restore' });
    expect(a2.outboundCapacityMsat()).toBe(balance);
    await net.pay(a2, b, 10_000n, { settled: true });
    expect([...a2.closures, ...b.closures]).toEqual([]);
  });
});
