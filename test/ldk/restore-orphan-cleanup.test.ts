/**
 * Deltas stored after a gap ("orphans", ignored by every reader) are told to the restored
 * node's VssPersister like the other deltas restore read, so a full monitor that contains them
 * removes them. Before, an orphan that LDK did not re-issue as a delta of its own (here: the
 * re-issued update became a full monitor after `maximumPendingUpdates` changed between runs)
 * stayed in the store until a later restore saw it as stale (real WASM, real VSS server).
 */
import { describe, expect, it } from 'vitest';
import { openPairCrashedWithMonitorUpdateGap, persisterOf, vssNode, type Pair } from './helpers/nodes.js';
import { RecordingStore } from './helpers/recording-store.js';
import { useVssBackend } from './helpers/fixture.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore-orphans', () => pair, () => {
  pair = undefined;
});

describe('restoreNode and monitor updates stored after a gap', () => {
  it('an orphan delta is removed once a full monitor containing it is durable', async () => {
    const storeId = fx.nextStoreId();
    // Written separately (no atomic batches), so a crash can leave update 7 lost and 8 stored.
    const store = new RecordingStore(await fx.backend.open(storeId), { atomicBatches: false });
    const { net, a, b, channel } = await openPairCrashedWithMonitorUpdateGap(store, (opened) => (pair = opened));

    // Restored with a full monitor every 8 updates: LDK re-issues 7 (a delta) and 8, which is
    // now written as a full monitor, so the delta stored under 8 is never written again.
    const restoredStore = await fx.backend.open(storeId);
    const { node: a2, restored } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(restoredStore, { maximumPendingUpdates: 8 }) });
    expect(restored.monitors[0].orphanUpdateIds).toEqual([8n]);
    await net.connect(a2, b);
    await net.waitFor(() => a2.channelManager.list_usable_channels().length === 1 && net.quiescent(a2, b), { what: 'channel usable and idle after restore' });
    const persister = persisterOf(a2);
    await persister.flush();
    const state = persister.monitors().find((m) => m.monitorName === channel.monitorName);
    expect(state?.durableUpdateId).toBeGreaterThanOrEqual(8n);
    expect(persister.stats.fullWrites).toBeGreaterThanOrEqual(1);
    await (restoredStore as { flush?: () => Promise<void> }).flush?.();

    // Every delta the full monitor contains is gone, the orphan included.
    const left = (await restoredStore.list('monitor_updates', channel.monitorName)).map(BigInt);
    expect(left.filter((id) => id <= 8n)).toEqual([]);
    expect([...a2.closures, ...b.closures]).toEqual([]);
  }, 120_000);
});
