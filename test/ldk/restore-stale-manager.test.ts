/**
 * A stored ChannelManager older than a channel's monitor (real WASM, real VSS server). LDK reads
 * such a manager without complaint and then force-closes the channel, broadcasting its commitment
 * transaction: restore must refuse unless the caller accepts exactly that.
 */
import { describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { restoreNode, StaleChannelManagerError, type RestoredNode } from '../../src/ldk/index.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import { useVssBackend } from './helpers/fixture.js';
import { newDevice } from './helpers/new-device.js';
import { openPair, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore-stale-manager', () => pair, () => {
  pair = undefined;
});

/**
 * restoreNode on a new device with LDK objects of the test's own (every broadcast recorded, the
 * rebuilt ChainMonitor completing at once), with LDK's logger as a JavaScript object or opaque.
 */
function restoreOnNewDevice(store: AsyncKVStore, seed: Uint8Array, broadcasts: Uint8Array[], options: { opaqueLogger: boolean; forceCloseStaleChannels?: boolean }): Promise<RestoredNode> {
  const device = newDevice(seed, { broadcasts });
  const completed = ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_Completed;
  const persister = ldk.Persist.new_impl({ persist_new_channel: () => completed, update_persisted_channel: () => completed, archive_persisted_channel: () => {} });
  return restoreNode(
    device.restoreOptions(store, persister, {
      ...(options.opaqueLogger ? { logger: device.logger } : {}),
      forceCloseStaleChannels: options.forceCloseStaleChannels,
    }),
  );
}

describe('restoreNode and a ChannelManager older than a monitor', () => {
  it('refuses with StaleChannelManagerError naming the channel (nothing broadcast), whichever logger is given; forceCloseStaleChannels accepts LDK\'s force-close', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b, channel } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    await a.eventLoop!.persistIfNeeded();
    const oldManager = await (await fx.backend.open(storeId)).read('', '', 'manager');
    await net.pay(a, b, 10_000n, { settled: true });
    await net.pay(a, b, 10_000n, { settled: true });
    await a.eventLoop!.persistIfNeeded();
    await net.crash(a);
    // A backup's manager put back next to the current monitors.
    await (await fx.backend.open(storeId)).write('', '', 'manager', oldManager);

    // The harness's restore (LDK's logger given as a JavaScript object).
    const viaHarness = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(storeId)) }).catch((e: unknown) => e);
    expect(viaHarness).toBeInstanceOf(StaleChannelManagerError);
    expect((viaHarness as StaleChannelManagerError).channels).toEqual([{ reason: 'outdated', channelId: channel.channelId, monitorName: channel.monitorName, monitorUpdateId: 15n, managerUpdateId: 5n }]);
    expect((viaHarness as Error).message).toContain(channel.channelId);
    expect(net.liveNodes().map((n) => n.name)).toEqual(['B']);

    // An opaque ldk.Logger cannot be wrapped: refused all the same.
    const broadcasts: Uint8Array[] = [];
    const opaque = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, broadcasts, { opaqueLogger: true }).catch((e: unknown) => e);
    expect(opaque).toBeInstanceOf(StaleChannelManagerError);
    expect((opaque as StaleChannelManagerError).channels.map((c) => c.channelId)).toEqual([channel.channelId]);
    expect(broadcasts).toEqual([]);

    // Opted in: LDK's own behaviour, the channel is closed.
    for (const opaqueLogger of [false, true]) {
      const restored = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, broadcasts, { opaqueLogger, forceCloseStaleChannels: true });
      expect(restored.monitors.map((m) => m.name)).toEqual([channel.monitorName]);
      expect(restored.channelManager.list_channels()).toEqual([]);
    }
  });
});
