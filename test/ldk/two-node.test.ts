/**
 * Two in-process LDK nodes (real WASM), A persisting through VssPersister: the guarantees
 * the adapter exists for. One file so the WASM loads once.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { initLdk } from '../../src/ldk/index.js';
import { ConcurrentWriterError } from '../../src/store/errors.js';
import { CHANNEL_MONITOR_NAMESPACE, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, type DurableWriteEvent } from '../../src/ldk/index.js';
import { memoryBackend, type StoreBackend } from './helpers/backends.js';
import { RecordingStore } from './helpers/recording-store.js';
import { openPair, persisterOf, readMonitorsAsNewDevice, vssNode, type Pair } from './helpers/nodes.js';

let backend: StoreBackend;
let pair: Pair | undefined;
let storeSeq = 0;
const nextStoreId = (): string => `two-node-${process.pid}-${++storeSeq}`;

beforeAll(async () => {
  await initLdk();
  backend = memoryBackend();
});

afterEach(async () => {
  await pair?.net.shutdown();
  pair = undefined;
  await backend.resume();
});

describe('VssPersister between two LDK nodes', () => {
  it('tells LDK an update is complete only after it is durable, and a finished payment is entirely on the server', async () => {
    const storeId = nextStoreId();
    const store = new RecordingStore(await backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b, channel } = pair;
    const persister = persisterOf(a);

    // Each time LDK is released, the write that released it has already resolved.
    const violations: string[] = [];
    const released: bigint[] = [];
    persister.on('durable', (e: DurableWriteEvent) => {
      const key = e.kind === 'update' ? [CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, e.monitorName, e.coversUpdateId.toString()] : [CHANNEL_MONITOR_NAMESPACE.primary, '', e.monitorName];
      if (!store.wrote(key[0], key[1], key[2])) violations.push(`${e.kind} ${key.join('/')} released before its write resolved`);
      for (const id of e.completedUpdateIds) if (id > e.coversUpdateId) violations.push(`update ${id} released by a write covering only ${e.coversUpdateId}`);
      released.push(...e.completedUpdateIds);
    });

    for (let i = 0; i < 3; i++) {
      const before = persister.monitors()[0].latestUpdateId;
      await net.pay(a, b, 50_000n, { settled: true });
      const state = persister.monitors()[0];
      expect(state.latestUpdateId - before).toBe(5n); // 5 monitor updates per direct payment
      expect(state.durableUpdateId).toBe(state.latestUpdateId);
      // A new device reading the server alone gets exactly A's current monitor.
      const [onServer] = await readMonitorsAsNewDevice(await backend.open(storeId), a.seed);
      expect(onServer.name).toBe(channel.monitorName);
      expect(onServer.monitor.get_latest_update_id()).toBe(state.latestUpdateId);
    }
    expect(violations).toEqual([]);
    // Every id LDK issued was released exactly once and in order.
    const expected = Array.from({ length: 15 }, (_, i) => BigInt(i + 1));
    expect(released.filter((id) => id > 0n)).toEqual(expected);
    expect(a.pendingMonitorUpdates()).toEqual([]);
  });

  it('holds the channel while the server is down (no message leaves A) and completes once it is back', async () => {
    const storeId = nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await backend.open(storeId), { stallThresholdMs: 300 }) });
    const { net, a, b } = pair;
    const persister = persisterOf(a);
    const stalled: string[] = [];
    const recovered: string[] = [];
    persister.on("stalled", (info) => stalled.push(info.monitorName));
    persister.on('recovered', (info) => recovered.push(info.monitorName));
    await net.pay(a, b, 10_000n, { settled: true });
    const balanceB = b.channels()[0].get_outbound_capacity_msat();

    await backend.stop();
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
    expect(persister.pending()[0].attempts).toBeGreaterThan(1);
    expect(persister.stats.retries).toBeGreaterThan(1);
    expect(persister.blocked).toBe(true);
    expect(stalled).toEqual([pair.channel.monitorName]);
    expect(persister.fatalError).toBeUndefined();
    expect(a.channels()[0].get_is_usable()).toBeTruthy(); // no panic, no close

    await backend.resume();
    await net.waitForPayment(handle, { settled: true });
    expect(recovered).toEqual([pair.channel.monitorName]);
    expect(persister.blocked).toBe(false);
    expect(a.closures).toEqual([]);
    expect(b.closures).toEqual([]);
  });

  it('restores A from the store alone: the channel reestablishes with the same balance and pays again', async () => {
    const storeId = nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await backend.open(storeId)) });
    const { net, a, b, channel } = pair;
    for (let i = 0; i < 3; i++) await net.pay(a, b, 30_000n, { settled: true });
    const balanceA = a.channels()[0].get_outbound_capacity_msat();
    const latest = persisterOf(a).monitors()[0].latestUpdateId;
    await a.eventLoop!.idle();

    await net.crash(a);
    const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await backend.open(storeId)) });
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
    const storeId = nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await backend.open(storeId), { maximumPendingUpdates: 3 }) });
    const { net, a, b, channel } = pair;
    const persister = persisterOf(a);
    const fatal: Error[] = [];
    persister.on('fatal', (e) => fatal.push(e));
    await net.pay(a, b, 10_000n, { settled: true });

    // Another instance of the same wallet writes A's full monitor behind its back.
    const intruder = await backend.open(storeId);
    const current = await intruder.read(CHANNEL_MONITOR_NAMESPACE.primary, '', channel.monitorName);
    await intruder.write(CHANNEL_MONITOR_NAMESPACE.primary, '', channel.monitorName, current);

    // The next payment crosses update 6, a full-monitor write (every 3 updates): it conflicts.
    const handle = net.sendPayment(a, b, 10_000n);
    await net.waitFor(() => persister.fatalError !== undefined, { what: 'the persister to stop' });
    expect(persister.fatalError).toBeInstanceOf(ConcurrentWriterError);
    expect(fatal).toHaveLength(1);
    const retries = persister.stats.retries;
    await net.runFor(500);
    expect(persister.stats.retries).toBe(retries);
    expect(a.pendingMonitorUpdates()).not.toEqual([]);
    expect(net.paymentState(handle).receiver?.status).not.toBe('succeeded');
    await expect(persister.flush()).rejects.toBeInstanceOf(ConcurrentWriterError);
  });
});

describe('ldk sanity', () => {
  it('loads the real LDK WASM', () => {
    expect(ldk.OutPoint.constructor_new(new Uint8Array(32), 1).get_index()).toBe(1);
  });
});
