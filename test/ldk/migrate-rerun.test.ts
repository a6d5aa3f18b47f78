/**
 * migrateStore between two real VSS stores (encrypted, conditional writes): a copy cut off part
 * way leaves a target restore refuses, and re-running it (overwrite) completes a target the node
 * restores from; migrating again into a complete copy is refused unless told to overwrite.
 */
import { describe, expect, it } from 'vitest';
import { MigrationVerificationError, MissingChannelManagerError, migrateStore } from '../../src/ldk/index.js';
import { StoreIOError } from '../../src/store/errors.js';
import { cutOffAfter } from './helpers/cut-off-store.js';
import { useVssBackend } from './helpers/fixture.js';
import { openPair, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('migrate-rerun', () => pair, () => {
  pair = undefined;
});

describe('migrateStore over VSS', () => {
  it('a copy cut off part way is refused by restore; re-run with overwrite it completes, and the node restores from it and pays', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b } = pair;
    for (let i = 0; i < 2; i++) await net.pay(a, b, 10_000n, { settled: true });
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);

    const targetId = `${storeId}-moved`;
    const source = await fx.backend.open(storeId);
    const total = (await source.listAll()).length;
    await expect(migrateStore(source, cutOffAfter(await fx.backend.open(targetId), 3), { concurrency: 2 })).rejects.toBeInstanceOf(StoreIOError);
    const partial = await fx.backend.open(targetId);
    expect((await partial.listAll()).length).toBeLessThan(total);
    await expect(net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(targetId)) })).rejects.toBeInstanceOf(MissingChannelManagerError);

    // Re-run: without overwrite the keys already copied are refused; with it the copy completes.
    await expect(migrateStore(await fx.backend.open(storeId), await fx.backend.open(targetId))).rejects.toBeInstanceOf(MigrationVerificationError);
    const result = await migrateStore(await fx.backend.open(storeId), await fx.backend.open(targetId), { overwrite: true });
    expect(result.keys).toBe(total);
    // A complete, identical copy: refused again without overwrite, accepted with it.
    await expect(migrateStore(await fx.backend.open(storeId), await fx.backend.open(targetId))).rejects.toThrow(/target already holds/);
    await migrateStore(await fx.backend.open(storeId), await fx.backend.open(targetId), { overwrite: true });

    const { node } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(targetId)) });
    await net.connect(node, b);
    await net.waitFor(() => node.channelManager.list_usable_channels().length === 1, { what: 'channel usable after the re-run migration' });
    await net.pay(node, b, 10_000n, { settled: true });
    expect([...node.closures, ...b.closures]).toEqual([]);
  });
});
