/**
 * Shutting a node down while a monitor write is on the wire (real WASM, real VSS server): the
 * persister's close() must not resolve before that write settles, and afterwards LDK's own list
 * of pending updates, the persister's report and the server must agree, so a wallet that exits
 * after `await persister.close(); await store.close()` drops nothing silently.
 */
import { describe, expect, it } from 'vitest';
import { wrapStore } from '../../harness/wrapped-store.js';
import type { AsyncKVStore, KeyValueWrite } from '../../src/store/types.js';
import { useVssBackend } from './helpers/fixture.js';
import { openPair, persisterOf, readMonitorsAsNewDevice, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('persister-shutdown-e2e', () => pair, () => {
  pair = undefined;
});

/** `inner` whose writes, once `holding`, reach the server but are acknowledged only on `release()` (a slow answer). */
function slowAnswers(inner: AsyncKVStore) {
  const waiting: (() => void)[] = [];
  const control = { holding: false, held: () => waiting.length, release: () => waiting.splice(0).forEach((go) => go()) };
  const answer = async (work: Promise<void>): Promise<void> => {
    const holding = control.holding;
    await work;
    if (holding) await new Promise<void>((resolve) => waiting.push(resolve));
  };
  const batching = inner as AsyncKVStore & { writeBatch(writes: readonly KeyValueWrite[]): Promise<void> };
  const store = wrapStore(inner, {
    write: (p, s, k, v) => answer(inner.write(p, s, k, v)),
    writeBatch: (writes) => answer(batching.writeBatch(writes)),
  });
  return { store, control };
}

async function settled(p: Promise<unknown>): Promise<unknown> {
  let outcome: unknown = 'pending';
  p.then(
    () => (outcome = 'resolved'),
    (err: unknown) => (outcome = err),
  );
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  return outcome;
}

describe('VssPersister shutdown with a payment in flight', () => {
  it('close() waits for the write on the wire; then every update LDK still waits for is in the report, and every one it was told of is on the server', async () => {
    const storeId = fx.nextStoreId();
    const { store, control } = slowAnswers(await fx.backend.open(storeId));
    pair = await openPair({ persistenceA: vssNode(store) });
    const { net, a, b } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    const persister = persisterOf(a);
    const completedBefore = persister.stats.completedUpdates;

    control.holding = true;
    net.sendPayment(a, b, 10_000n);
    await net.waitFor(() => control.held() > 0, { what: 'a monitor write of the payment on the wire' });
    // The wallet shuts down: the harness's crash() stops A's loop and closes its persister.
    const shutdown = persister.shutdown({ timeoutMs: 60_000 });
    const crashed = net.crash(a);
    expect(await settled(persister.close())).toBe('pending');

    control.holding = false;
    control.release();
    const report = await shutdown;
    await crashed;
    expect(report.writesInFlight).toBe(0);
    // The write that was on the wire landed and LDK was told before close() resolved.
    expect(persister.stats.completedUpdates).toBeGreaterThan(completedBefore);

    // LDK's view and the report agree exactly.
    const ldkPending = a.pendingMonitorUpdates().map((p) => ({ monitorName: p.outpoint, updateIds: [...p.updateIds].sort() }));
    expect(report.notPersisted.map((c) => ({ monitorName: c.monitorName, updateIds: [...c.updateIds].sort() }))).toEqual(ldkPending);
    // Nothing reported complete is missing from the server.
    const stored = await readMonitorsAsNewDevice(await fx.backend.open(storeId), a.seed);
    for (const m of persister.monitors()) {
      const acknowledgedUpTo = m.awaitingUpdateIds.length > 0 ? m.awaitingUpdateIds.reduce((x, y) => (y < x ? y : x)) - 1n : m.latestUpdateId;
      const onServer = stored.find((s) => s.name === m.monitorName)?.monitor.get_latest_update_id();
      expect(onServer, m.monitorName).toBeDefined();
      expect(onServer! >= acknowledgedUpTo, `${m.monitorName}: server at ${onServer}, acknowledged up to ${acknowledgedUpTo}`).toBe(true);
    }
  });
});
