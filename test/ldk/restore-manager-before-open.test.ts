/**
 * A stored ChannelManager written before a channel was opened, next to that channel's monitor
 * (real WASM, real VSS server). LDK 0.1 reads such a manager without an error, logs (at info
 * level) that it queues a force-close of the "missing channel", and broadcasts the channel's
 * latest commitment transaction as soon as the node runs. A channel closed cooperatively whose
 * closing transaction the monitor has not seen confirm looks the same, so by default restore goes
 * on with a warning and lists the channel; with `refuseChannelsUnknownToManager` it refuses unless
 * the caller accepts exactly that force-close. Monitors of channels closed on chain always restore.
 */
import { describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { restoreNode, silentLogger, StaleChannelManagerError, type PersistenceLogger, type RestoredNode } from '../../src/ldk/index.js';
import type { AsyncKVStore } from '../../src/store/types.js';
import type { SyntheticChain } from '../../harness/chain.js';
import { channelIdOf, forceCloseChannel } from '../../harness/wallet-ops.js';
import { useVssBackend } from './helpers/fixture.js';
import { newDevice } from './helpers/new-device.js';
import { openPair, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
const fx = useVssBackend('restore-before-open', () => pair, () => {
  pair = undefined;
});

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * restoreNode on a new device with LDK objects of the test's own: every broadcast recorded, the
 * rebuilt ChainMonitor completing at once, and the chain's blocks replayed in beforeWatch.
 */
function restoreOnNewDevice(
  store: AsyncKVStore,
  seed: Uint8Array,
  chain: SyntheticChain,
  broadcasts: Uint8Array[],
  options: { opaqueLogger?: boolean; forceCloseStaleChannels?: boolean | readonly string[]; refuse?: boolean; log?: PersistenceLogger } = {},
): Promise<RestoredNode> {
  const device = newDevice(seed, { broadcasts });
  const completed = ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_Completed;
  const replay = (best: ldk.BestBlock, connect: (header: Uint8Array, txdata: ldk.TwoTuple_usizeTransactionZ[], height: number) => void): void => {
    for (const block of chain.blocksAfter(best.get_height())) {
      connect(block.header, block.transactions.map((tx, i) => ldk.TwoTuple_usizeTransactionZ.constructor_new(i + 1, tx)), block.height);
    }
  };
  const persister = ldk.Persist.new_impl({ persist_new_channel: () => completed, update_persisted_channel: () => completed, archive_persisted_channel: () => {} });
  return restoreNode(
    device.restoreOptions(store, persister, {
      ...(options.opaqueLogger ? { logger: device.logger } : {}),
      ...(options.log ? { log: options.log } : {}),
      forceCloseStaleChannels: options.forceCloseStaleChannels,
      refuseChannelsUnknownToManager: options.refuse,
      beforeWatch: ({ channelManager, monitors }) => {
        replay(channelManager.current_best_block(), (header, txdata, height) => channelManager.as_Listen().filtered_block_connected(header, txdata, height));
        for (const m of monitors) {
          replay(m.monitor.current_best_block(), (header, txdata, height) => m.monitor.block_connected(header, txdata, height, device.broadcaster, device.feeEstimator, device.logger));
        }
      },
    }),
  );
}

/** Lets the restored node run LDK's queued work (as its event loop would), so a queued force-close broadcasts. */
function runOnce(restored: RestoredNode): void {
  const handler = ldk.EventHandler.new_impl({ handle_event: () => ldk.Result_NoneReplayEventZ.constructor_ok() });
  restored.channelManager.as_EventsProvider().process_pending_events(handler);
  restored.chainMonitor.as_EventsProvider().process_pending_events(handler);
}

/** Whether `tx` spends the funding output of the channel whose monitor is `monitorName` (`<txid>_<index>`). */
function spendsFunding(tx: Uint8Array, monitorName: string): boolean {
  const [txid, index] = monitorName.split('_');
  const outpoint = Buffer.alloc(4);
  outpoint.writeUInt32LE(Number(index));
  return Buffer.from(tx).indexOf(Buffer.concat([Buffer.from(txid, 'hex').reverse(), outpoint])) >= 0;
}

describe('restoreNode and a ChannelManager written before a channel was opened', () => {
  it('by default restores with a warning and lists the channel; refuseChannelsUnknownToManager refuses with StaleChannelManagerError naming it (nothing broadcast), whichever logger is given; forceCloseStaleChannels (true, or the channel id) accepts LDK\'s force-close', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b, channel: first } = pair;
    await net.pay(a, b, 10_000n, { settled: true });
    await a.eventLoop!.persistIfNeeded();
    const managerBeforeOpen = await (await fx.backend.open(storeId)).read('', '', 'manager');
    const second = await net.openChannel(a, b);
    await a.eventLoop!.persistIfNeeded();
    await a.persistence.vssPersister!.flush();
    await net.crash(a);
    // A backup's manager, written before the second channel's funding, next to both monitors.
    await (await fx.backend.open(storeId)).write('', '', 'manager', managerBeforeOpen);
    const expected = [{ reason: 'unknown', channelId: second.channelId, monitorName: second.monitorName, monitorUpdateId: 0n, managerUpdateId: undefined }];

    // By default: restored (the node is not run here), the channel listed and a warning naming it.
    const warnings: string[] = [];
    const log: PersistenceLogger = { ...silentLogger, warn: (_fields, message) => void warnings.push(message) };
    const broadcasts: Uint8Array[] = [];
    const lenient = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, broadcasts, { log });
    expect(lenient.channelsUnknownToManager).toEqual(expected);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(second.channelId);
    expect(warnings[0]).toMatch(/If the app did not close it, do not run this node/);
    expect(broadcasts).toEqual([]);

    // Refused on request, with LDK's logger as a JavaScript object or as an opaque ldk.Logger.
    for (const opaqueLogger of [false, true]) {
      const refused = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, broadcasts, { opaqueLogger, refuse: true }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(StaleChannelManagerError);
      expect((refused as StaleChannelManagerError).channels).toEqual(expected);
      expect((refused as Error).message).toContain(second.channelId);
      expect((refused as Error).message).not.toContain(first.channelId);
    }
    // A list that names another channel accepts nothing.
    const otherListed = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, broadcasts, { refuse: true, forceCloseStaleChannels: [first.channelId] }).catch((e: unknown) => e);
    expect(otherListed).toBeInstanceOf(StaleChannelManagerError);
    expect(broadcasts).toEqual([]);

    // Opted in (for every channel, or for this one by id): LDK's own behaviour, the channel is
    // force-closed and its commitment transaction broadcast once the node runs.
    for (const forceCloseStaleChannels of [true, [second.channelId.toUpperCase()]]) {
      const sent: Uint8Array[] = [];
      const restored = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, sent, { refuse: true, forceCloseStaleChannels });
      expect(restored.channelsUnknownToManager.map((c) => c.channelId)).toEqual([second.channelId]);
      expect(restored.monitors.map((m) => m.name).sort()).toEqual([first.monitorName, second.monitorName].sort());
      expect(restored.channelManager.list_channels().map((c) => hex(c.get_channel_id().get_a()))).toEqual([first.channelId]);
      runOnce(restored);
      expect(sent.some((tx) => spendsFunding(tx, second.monitorName))).toBe(true);
      expect(sent.some((tx) => spendsFunding(tx, first.monitorName))).toBe(false);
    }
  });

  it('restores monitors of closed channels (force-closed, closed without a broadcast, cooperatively closed); a cooperative close whose closing transaction has not confirmed is listed by default, refused on request, until the monitor sees it confirm', async () => {
    const storeId = fx.nextStoreId();
    pair = await openPair({ persistenceA: vssNode(await fx.backend.open(storeId)) });
    const { net, a, b, channel: open } = pair;
    const forceClosed = await net.openChannel(a, b);
    await forceCloseChannel(net, a, forceClosed, b.nodeId, [b]);
    const closedQuietly = await net.openChannel(a, b);
    const coopClosed = await net.openChannel(a, b);
    // Closed without a broadcast (after the last block mined): the monitor still sees the channel
    // open, but LDK queues no force-close for it, so there is nothing to refuse.
    expect(a.channelManager.force_close_without_broadcasting_txn(channelIdOf(closedQuietly), b.nodeId, 'closed without a broadcast').is_ok()).toBeTruthy();
    // Closed cooperatively, but A crashes before the closing transaction confirms: its stored
    // manager no longer knows the channel, its stored monitor still sees it open.
    const res = a.channelManager.close_channel(channelIdOf(coopClosed), b.nodeId);
    expect(res.is_ok()).toBeTruthy();
    const knows = (id: string): boolean => a.channelManager.list_channels().some((c) => hex(c.get_channel_id().get_a()) === id);
    await net.waitFor(() => !knows(coopClosed.channelId) && a.broadcasts.some((tx) => spendsFunding(tx, coopClosed.monitorName)), { what: 'cooperative close negotiated' });
    await a.eventLoop!.persistIfNeeded();
    await a.persistence.vssPersister!.flush();
    await net.crash(a);

    const broadcasts: Uint8Array[] = [];
    const listed = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, broadcasts);
    expect(listed.channelsUnknownToManager.map((c) => [c.reason, c.channelId])).toEqual([['unknown', coopClosed.channelId]]);
    const early = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, broadcasts, { refuse: true }).catch((e: unknown) => e);
    expect(early).toBeInstanceOf(StaleChannelManagerError);
    expect((early as StaleChannelManagerError).channels.map((c) => [c.reason, c.channelId])).toEqual([['unknown', coopClosed.channelId]]);
    expect((early as Error).message).toMatch(/closed cooperatively and its closing transaction has not confirmed/);
    expect(broadcasts).toEqual([]);

    // The closing transaction confirms; replayed in beforeWatch, the monitor sees it: restored,
    // with the open channel only, and nothing force-closed.
    net.mine(1);
    const restored = await restoreOnNewDevice(await fx.backend.open(storeId), a.seed, net.chain, broadcasts, { refuse: true });
    expect(restored.monitors).toHaveLength(4);
    expect(restored.channelsUnknownToManager).toEqual([]);
    expect(restored.channelManager.list_channels().map((c) => hex(c.get_channel_id().get_a()))).toEqual([open.channelId]);
    runOnce(restored);
    expect(broadcasts.some((tx) => spendsFunding(tx, open.monitorName))).toBe(false);
    // The harness's restore (blocks replayed the same way) agrees.
    const { node } = await net.restoreNode({ name: 'A', seed: a.seed, persistence: vssNode(await fx.backend.open(storeId)) });
    expect(node.channels().map((c) => hex(c.get_channel_id().get_a()))).toEqual([open.channelId]);
  });
});
