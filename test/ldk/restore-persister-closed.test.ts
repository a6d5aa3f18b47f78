/**
 * restoreNode with a VssPersister that is closed (or failed) before or while it runs (real WASM,
 * real VSS server). Such a persister writes nothing and reports nothing to LDK, so a node
 * restored over it would hold every channel for good: restore refuses with
 * PersisterStoppedError instead, and the same store restores with a working persister.
 */
import { describe, expect, it } from 'vitest';
import { PersisterStoppedError, restoreNode } from '../../src/ldk/index.js';
import { StoreClosedError, type VssStore } from '../../src/store/index.js';
import { useVssBackend } from './helpers/fixture.js';
import { newDevice } from './helpers/new-device.js';
import { openPair, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore-persister-closed', () => pair, () => {
  pair = undefined;
});

/** A node A with one channel and a payment, crashed; its store id. */
async function crashedNode(): Promise<{ storeId: string; seed: Uint8Array }> {
  const storeId = fx.nextStoreId();
  pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
  await pair.net.pay(pair.a, pair.b, 10_000n, { settled: true });
  await pair.a.eventLoop!.persistIfNeeded();
  await pair.net.crash(pair.a);
  return { storeId, seed: pair.a.seed };
}

describe('restoreNode and a persister that is closed or failed', () => {
  it('refuses (PersisterStoppedError) a persister closed before, closed while restore runs, or stopped by a fatal error; a working one then restores the same store', async () => {
    const { storeId, seed } = await crashedNode();
    const device = newDevice(seed);
    const store = await fx.backend.open(storeId);

    // Closed before the call.
    const closed = device.persister(store);
    await closed.close();
    const before = await restoreNode(device.restoreOptions(store, closed)).catch((e: unknown) => e);
    expect(before).toBeInstanceOf(PersisterStoppedError);
    expect((before as Error).message).toMatch(/VssPersister given to restoreNode was closed before the restore/);

    // Closed while restore reads the store (the app shuts down during start-up).
    const closing = device.persister(store);
    const running = restoreNode(device.restoreOptions(store, closing));
    await closing.close();
    const during = await running.catch((e: unknown) => e);
    expect(during).toBeInstanceOf(PersisterStoppedError);

    // Closed from beforeWatch, after the manager was read.
    const inHook = device.persister(store);
    const hooked = await restoreNode(device.restoreOptions(store, inHook, { beforeWatch: () => void inHook.close() })).catch((e: unknown) => e);
    expect(hooked).toBeInstanceOf(PersisterStoppedError);

    // Stopped by a fatal error (here: its manager writer failed).
    const failed = device.persister(store);
    failed.on('fatal', () => {});
    failed.linkManagerWriter({ requestPersist: () => {} }).writerFailed(new Error('manager store gone'));
    const fatal = await restoreNode(device.restoreOptions(store, failed)).catch((e: unknown) => e);
    expect(fatal).toBeInstanceOf(PersisterStoppedError);
    expect((fatal as Error).message).toContain('manager store gone');
    expect((fatal as Error).cause).toBe(failed.fatalError);

    expect(device.broadcasts).toEqual([]);
    // Nothing was damaged: the harness restores the same store and the channel pays.
    const { node } = await pair!.net.restoreNode({ name: 'A', seed, persistence: vssNode(await fx.backend.open(storeId)) });
    await pair!.net.connect(node, pair!.b);
    await pair!.net.pay(node, pair!.b, 10_000n, { settled: true });
    expect(node.closures).toEqual([]);
  });

  it('a store closed while restore reads it: StoreClosedError, not a hang', async () => {
    const { storeId, seed } = await crashedNode();
    const device = newDevice(seed);
    const store = await fx.backend.open(storeId);
    const persister = device.persister(store);
    const running = restoreNode(device.restoreOptions(store, persister));
    await (store as VssStore).close();
    await expect(running).rejects.toBeInstanceOf(StoreClosedError);
    await persister.close();
  });
});
