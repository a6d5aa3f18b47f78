/**
 * restoreNode and LdkEventLoop given a `store` other than the one their VssPersister writes to
 * (real WASM, real VSS server). The node's monitor updates would then go where the next restore
 * does not read, and that restore would come back stale: both refuse with StoreMismatchError
 * naming the two stores, before anything is read or written. The same VssStore, or a wrapper
 * around it, passes.
 */
import { describe, expect, it } from 'vitest';
import { LdkEventLoop, StoreMismatchError, restoreNode, silentLogger, type VssPersister } from '../../src/ldk/index.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { VssStore } from '../../src/store/index.js';
import { wrapStore } from '../../harness/wrapped-store.js';
import { useVssBackend } from './helpers/fixture.js';
import { newDevice } from './helpers/new-device.js';
import { openPair, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore-inputs', () => pair, () => {
  pair = undefined;
});

/** A node A with one channel and a payment, crashed; its store id. */
async function crashedNode(): Promise<{ storeId: string; seed: Uint8Array; monitorName: string }> {
  const storeId = fx.nextStoreId();
  pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
  await pair.net.pay(pair.a, pair.b, 10_000n, { settled: true });
  await pair.a.eventLoop!.persistIfNeeded();
  await pair.net.crash(pair.a);
  return { storeId, seed: pair.a.seed, monitorName: pair.channel.monitorName };
}

async function openVss(storeId: string): Promise<VssStore> {
  const store = await fx.backend.open(storeId);
  if (!(store instanceof VssStore)) throw new Error('this test needs the VssStore backend');
  return store;
}

/** Every key of `store` with its value (hex), to prove nothing was written. */
async function snapshot(store: AsyncKVStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const k of await store.listAll()) {
    out.set(`${k.primaryNamespace}/${k.secondaryNamespace}/${k.key}`, Buffer.from(await store.read(k.primaryNamespace, k.secondaryNamespace, k.key)).toString('hex'));
  }
  return out;
}

function caught(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err;
  }
}

describe('restoreNode and a VssPersister over another store', () => {
  it('refuses a persister over another store id, and over another VssStore object of the same store id (StoreMismatchError naming both), writing nothing to either store; the same store or a wrapper around it restores', async () => {
    const { storeId, seed, monitorName } = await crashedNode();
    const device = newDevice(seed);
    const store = await openVss(storeId);
    const otherId = fx.nextStoreId();
    const other = await openVss(otherId);
    const before = await snapshot(store);
    expect(before.has(`monitors//${monitorName}`)).toBe(true);

    // Another store id: every update of the restored node would go there.
    const elsewhere = device.persister(other);
    const err = await restoreNode(device.restoreOptions(store, elsewhere)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreMismatchError);
    expect((err as StoreMismatchError).storeId).toBe(storeId);
    expect((err as StoreMismatchError).persisterStoreId).toBe(otherId);
    expect((err as Error).message).toContain(`"${storeId}"`);
    expect((err as Error).message).toContain(`"${otherId}"`);
    expect((err as Error).message).toMatch(/Nothing was read or written/);

    // The same store id through another VssStore object (a stale one from before a reconnect,
    // closed here): its writes would go nowhere, or to wherever that object points.
    const stale = await openVss(storeId);
    await stale.close();
    const staleErr = await restoreNode(device.restoreOptions(store, device.persister(stale))).catch((e: unknown) => e);
    expect(staleErr).toBeInstanceOf(StoreMismatchError);
    expect((staleErr as StoreMismatchError).persisterStoreId).toBe(storeId);
    expect((staleErr as Error).message).toMatch(/another VssStore object of the same store id/);

    // Nothing was read through, written to, or broadcast from either refused setup.
    expect(elsewhere.stats.bytesWritten).toBe(0);
    expect(elsewhere.monitors()).toEqual([]);
    expect(await snapshot(store)).toEqual(before);
    expect(await snapshot(other)).toEqual(new Map());
    expect(device.broadcasts).toEqual([]);
    await elsewhere.close();

    // A wrapper around the very store restore reads passes (it cannot be told apart, and here it
    // is right): the monitor re-persisted on watch lands in `store`.
    const wrapped = device.persister(wrapStore(store, {}));
    const viaWrapper = await restoreNode(device.restoreOptions(store, wrapped));
    expect(viaWrapper.monitors.map((m) => m.name)).toEqual([monitorName]);
    await wrapped.flush();
    expect(wrapped.stats.fullWrites).toBe(1);
    await wrapped.close();

    // The same VssStore object: restores, and writes go to it.
    const own = device.persister(store);
    const restored = await restoreNode(device.restoreOptions(store, own));
    expect(restored.monitors.map((m) => m.name)).toEqual([monitorName]);
    await own.flush();
    expect(own.stats.fullWrites).toBe(1);
    expect(await snapshot(other)).toEqual(new Map());

    // LdkEventLoop: the manager to one VssStore, the monitors to another, is refused the same
    // way before the persister is linked or anything is written; the same store links.
    const loopOver = (loopStore: AsyncKVStore, persister: VssPersister): LdkEventLoop =>
      new LdkEventLoop({ channelManager: restored.channelManager, chainMonitor: restored.chainMonitor, store: loopStore, persister, log: silentLogger, handleEvent: () => {}, coalesceMs: 0 });
    const loopErr = caught(() => loopOver(other, own));
    expect(loopErr).toBeInstanceOf(StoreMismatchError);
    expect((loopErr as StoreMismatchError).storeId).toBe(otherId);
    expect((loopErr as StoreMismatchError).persisterStoreId).toBe(storeId);
    expect((loopErr as Error).message).toMatch(/^LdkEventLoop was given VssStore/);
    expect(await snapshot(other)).toEqual(new Map());
    const loop = loopOver(store, own);
    await loop.persistIfNeeded();
    await own.flush();
    await loop.stop();
    await own.close();
    expect(await snapshot(other)).toEqual(new Map());
    expect(device.broadcasts).toEqual([]);
  }, 120_000);
});
