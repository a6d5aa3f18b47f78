/**
 * Restore's fail-closed edges beyond restore.test.ts (real WASM, real VSS server): a monitor
 * update stored under another channel, and a store holding channel state but neither a
 * monitor nor a manager (an interrupted copy), and a node restored with another seed.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { CorruptStateError, MissingChannelManagerError, NothingToRestoreError } from '../../src/ldk/index.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { useVssBackend } from './helpers/fixture.js';
import { fullMonitorUpdateId, openPair, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore-edges', () => pair, () => {
  pair = undefined;
});

const restoreA = async (p: Pair, store: AsyncKVStore) => p.net.restoreNode({ name: 'A', seed: p.a.seed, persistence: vssNode(store) });

/** A with a VssPersister and `channels` channels to B, `payments` payments made, then crashed. */
async function crashed(storeId: string, channels: number, payments: number): Promise<{ p: Pair; monitorNames: string[] }> {
  const p = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
  const monitorNames = [p.channel.monitorName];
  for (let i = 1; i < channels; i++) monitorNames.push((await p.net.openChannel(p.a, p.b)).monitorName);
  for (let i = 0; i < payments; i++) await p.net.pay(p.a, p.b, 20_000n, { settled: true });
  await p.a.eventLoop!.persistIfNeeded();
  await p.net.crash(p.a);
  return { p, monitorNames };
}

describe('restoreNode fails closed', () => {
  it("refuses a monitor update stored under another channel's monitor (CorruptStateError), which LDK would apply and then force-close the channel", async () => {
    const storeId = fx.nextStoreId();
    const { p, monitorNames } = await crashed(storeId, 2, 3);
    pair = p;
    const store = await fx.backend.open(storeId);
    // Find a channel whose next update id another channel has stored, and put that one there.
    let placed: { recipient: string; donor: string; id: string } | undefined;
    for (const recipient of monitorNames) {
      const next = String(fullMonitorUpdateId(await store.read('monitors', '', recipient), p.a.seed) + 1n);
      for (const donor of monitorNames) {
        if (donor !== recipient && (await store.list('monitor_updates', donor)).includes(next)) placed ??= { recipient, donor, id: next };
      }
    }
    if (!placed) throw new Error('no channel has stored the update id another channel needs next');
    await store.write('monitor_updates', placed.recipient, placed.id, await store.read('monitor_updates', placed.donor, placed.id));

    const err = await restoreA(p, await fx.backend.open(storeId)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptStateError);
    expect(err).toMatchObject({ primaryNamespace: 'monitor_updates', secondaryNamespace: placed.recipient, key: placed.id });
    expect((err as Error).message).toMatch(/belongs to channel [0-9a-f]{64}, not to this monitor's channel [0-9a-f]{64}/);
    expect(p.net.liveNodes().map((n) => n.name)).toEqual(['B']);
  });

  it('refuses a store holding monitor updates but neither their monitor nor a manager (MissingChannelManagerError), never "nothing to restore"', async () => {
    const storeId = fx.nextStoreId();
    const { p, monitorNames } = await crashed(storeId, 1, 2);
    pair = p;
    const store = await fx.backend.open(storeId);
    // What a copy cut off before the monitor and the manager were copied would leave.
    await store.remove('', '', 'manager', false);
    await store.remove('monitors', '', monitorNames[0], false);
    expect((await store.list('monitor_updates', monitorNames[0])).length).toBeGreaterThan(0);

    const err = await restoreA(p, await fx.backend.open(storeId)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingChannelManagerError);
    expect((err as Error).message).toContain(monitorNames[0]);
  });

  it("still has nothing to restore when the only leftovers are an archived channel's updates (its monitor is archived)", async () => {
    const storeId = fx.nextStoreId();
    const { p, monitorNames } = await crashed(storeId, 1, 1);
    pair = p;
    const store = await fx.backend.open(storeId);
    const name = monitorNames[0];
    await store.write('archived_monitors', '', name, await store.read('monitors', '', name));
    await store.remove('', '', 'manager', false);
    await store.remove('monitors', '', name, false);
    expect((await store.list('monitor_updates', name)).length).toBeGreaterThan(0);
    await expect(restoreA(p, await fx.backend.open(storeId))).rejects.toBeInstanceOf(NothingToRestoreError);
  });

  it('a node restored with another seed than its own: CorruptStateError that says the keys are wrong, not the data', async () => {
    const storeId = fx.nextStoreId();
    const { p } = await crashed(storeId, 1, 1);
    pair = p;
    const err = await p.net.restoreNode({ name: 'A', seed: randomBytes(32), persistence: vssNode(await fx.backend.open(storeId)) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptStateError);
    expect((err as Error).message).toMatch(/keys given .* are not the ones this manager was written with: restore with the wallet's own seed/);
    expect(p.net.liveNodes().map((n) => n.name)).toEqual(['B']);
    // The wallet's own seed restores the same store.
    const { node } = await restoreA(p, await fx.backend.open(storeId));
    expect(node.channels()).toHaveLength(1);
  });
});
