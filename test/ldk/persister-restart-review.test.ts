/**
 * Review: VssPersister across a restart on the real LDK WASM, with a small
 * `maximumPendingUpdates`: in both lives LDK is told an update is complete only once the server
 * holds its delta or a full monitor containing it, no delta is removed before a full monitor
 * containing it is durable, and the deltas after the stored full monitor never exceed N - 1.
 */
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import { CHANNEL_MONITOR_NAMESPACE, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE } from '../../src/ldk/index.js';
import { parseUpdateKey } from '../../src/ldk/layout.js';
import { RecordingStore } from './helpers/recording-store.js';
import { useVssBackend } from './helpers/fixture.js';
import { fullMonitorUpdateId, openPair, persisterOf, readMonitorsAsNewDevice, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('persister-restart-review', () => pair, () => {
  pair = undefined;
});

const N = 4;

describe('VssPersister across a restart (real LDK)', () => {
  it('acknowledges only durable updates, removes deltas only under a durable full monitor, and keeps at most N - 1 deltas after it, before and after a restart', async () => {
    const storeId = fx.nextStoreId();
    let store = new RecordingStore(await fx.backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store, { maximumPendingUpdates: N }) });
    const { net, b, channel } = pair;
    let a = pair.a;
    const name = channel.monitorName;
    const violations: string[] = [];
    let acks = 0;
    let removals = 0;
    const fullCovers = (): bigint => {
      const full = store.durableValue(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, name);
      return full ? fullMonitorUpdateId(full, a.seed) : -1n;
    };
    const tellLdk = ldk.ChainMonitor.prototype.channel_monitor_updated;
    const told = vi.spyOn(ldk.ChainMonitor.prototype, 'channel_monitor_updated').mockImplementation(function (this: ldk.ChainMonitor, outpoint, updateId) {
      const delta = store.durableValue(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name, updateId.toString());
      acks++;
      if (!delta && fullCovers() < updateId) violations.push(`update ${updateId} acknowledged; no delta and the full monitor is at ${fullCovers()}`);
      return tellLdk.call(this, outpoint, updateId);
    });
    onTestFinished(() => told.mockRestore());
    const watchRemovals = (s: RecordingStore) => {
      s.beforeRemove = (k) => {
        if (k.primaryNamespace !== CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE) return;
        removals++;
        if (fullCovers() < BigInt(k.key)) violations.push(`delta ${k.key} removed while the stored full monitor is at ${fullCovers()}`);
      };
    };
    watchRemovals(store);
    /** Deltas stored after the full monitor, once lazy removals have settled. */
    const deltasAfterFull = async (): Promise<{ after: number; all: number }> => {
      await persisterOf(a).flush();
      await net.runFor(100);
      const raw = await store.inner.read(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, name);
      const covers = fullMonitorUpdateId(raw, a.seed);
      const ids = (await store.inner.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name)).map(parseUpdateKey).filter((id): id is bigint => id !== undefined);
      return { after: ids.filter((id) => id > covers).length, all: ids.length };
    };

    let most = 0;
    for (let i = 0; i < 3; i++) {
      await net.pay(a, b, 20_000n, { settled: true });
      const { after, all } = await deltasAfterFull();
      most = Math.max(most, after, all);
    }
    const latest = persisterOf(a).monitors()[0].latestUpdateId;
    expect(acks).toBeGreaterThan(10);
    expect(removals).toBeGreaterThan(0);
    acks = 0;
    removals = 0;
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);

    store = new RecordingStore(await fx.backend.open(storeId));
    watchRemovals(store);
    const restoredNode = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(store, { maximumPendingUpdates: N }) });
    a = restoredNode.node;
    expect(restoredNode.restored.monitors[0].monitor.get_latest_update_id()).toBe(latest);
    await net.connect(a, b);
    await net.waitFor(() => a.channelManager.list_usable_channels().length === 1, { what: 'channel usable after restore' });
    // The re-persisted monitor is durable: the deltas of the first life are gone.
    expect((await deltasAfterFull()).all).toBe(0);
    for (let i = 0; i < 3; i++) {
      await net.pay(a, b, 20_000n, { settled: true });
      const { after, all } = await deltasAfterFull();
      most = Math.max(most, after, all);
    }
    expect(violations).toEqual([]);
    expect(acks).toBeGreaterThan(10);
    expect(removals).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(N - 1);
    const [onDisk] = await readMonitorsAsNewDevice(store.inner, a.seed);
    expect(onDisk.monitor.get_latest_update_id()).toBe(persisterOf(a).monitors()[0].latestUpdateId);
    expect(a.closures).toEqual([]);
    expect(b.closures).toEqual([]);
  });
});
