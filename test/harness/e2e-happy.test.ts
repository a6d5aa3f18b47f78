/**
 * End-to-end, happy paths: two wallets on a real VSS server (embedded PGlite), every node
 * persisting through VssPersister + VssStore, restored from seed + store id alone.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { channelView, closeChannel, forceCloseChannel, mineUntil, sweepSpendableOutputs, walletScript } from '../../harness/wallet-ops.js';
import { expectConsistent, openPair, startServer, type Pair, useE2eServer } from './helpers/e2e.js';

const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;

function databaseUrl(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

const server = useE2eServer();
let pair: Pair | undefined;

afterEach(async () => {
  await pair?.fleet.shutdown();
  pair = undefined;
});

/** Everything a wallet's user would compare after a restore. */
function snapshotOf(pair: Pair, name: string) {
  const node = pair.fleet.node(name);
  return {
    nodeId: node.nodeIdHex,
    channels: node.channels().map((c) => ({
      channelId: Buffer.from(c.get_channel_id().get_a()).toString('hex'),
      capacitySat: c.get_channel_value_satoshis(),
      outboundMsat: c.get_outbound_capacity_msat(),
      inboundMsat: c.get_inbound_capacity_msat(),
      ready: Boolean(c.get_is_channel_ready()),
      funding: Buffer.from(c.get_funding_txo().get_txid()).toString('hex'),
      counterparty: Buffer.from(c.get_counterparty().get_node_id()).toString('hex'),
    })),
  };
}

describe('e2e happy path', () => {
  it('50 payments both ways, restore on a new instance: identical balances and channel state, and it pays again', async () => {
    pair = await openPair(server().url);
    const { fleet, channel } = pair;
    const initialA = channelView(fleet.node('A'), channel)!.outboundMsat;
    for (let i = 0; i < 50; i++) {
      const [from, to] = i % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
      await fleet.pay(from, to, BigInt(10_000 + i * 1_000), { settled: true });
      await new Promise((r) => setImmediate(r));
    }
    const sentAB = fleet.ledger.claimedMsat('A', 'B');
    const sentBA = fleet.ledger.claimedMsat('B', 'A');
    expect(fleet.ledger.all().filter((e) => e.claimed && e.sent)).toHaveLength(50);
    expect(channelView(fleet.node('A'), channel)!.outboundMsat).toBe(initialA - sentAB + sentBA);
    await fleet.node('A').eventLoop!.persistIfNeeded();
    const before = snapshotOf(pair, 'A');
    const storedUpdates = fleet.wallet('A').store.writes.filter((w) => w.kind === 'monitor-update').length;
    expect(storedUpdates).toBeGreaterThanOrEqual(50 * 5 - 10); // ~5 monitor updates per payment went to the server

    await fleet.crash('A');
    const restored = await fleet.restore('A');
    expect(restored.incarnation).toBe(2);
    expect(restored.restoreStats!.monitors).toBe(1);
    await fleet.net.waitFor(() => fleet.node('A').channelManager.list_usable_channels().length === 1, { what: 'channel usable after restore' });
    expect(snapshotOf(pair, 'A')).toEqual(before);

    await fleet.pay('A', 'B', 77_000n, { settled: true });
    await fleet.pay('B', 'A', 11_000n, { settled: true });
    await expectConsistent(pair, initialA);
  }, 180_000);

  it('opens a zero-conf channel that is usable before any block and survives a restore of both wallets', async () => {
    pair = await openPair(server().url, { zeroConf: true });
    const { fleet, channel } = pair;
    const height = fleet.net.chain.height;
    const initialA = channelView(fleet.node('A'), channel)!.outboundMsat;
    await fleet.pay('A', 'B', 25_000n, { settled: true });
    expect(fleet.net.chain.confirmationHeight(channel.fundingTxid)).toBeUndefined();
    expect(fleet.net.chain.height).toBe(height);
    await fleet.crash('A');
    await fleet.crash('B');
    await fleet.restore('B', { reconnect: false });
    await fleet.restore('A');
    await fleet.net.waitFor(() => ['A', 'B'].every((n) => fleet.node(n).channelManager.list_usable_channels().length === 1), { what: 'usable on both' });
    await fleet.pay('B', 'A', 5_000n, { settled: true });
    await expectConsistent(pair, initialA);
  });

  it('settles cooperatively: both sides see the close, the closing outputs are swept to the wallet', async () => {
    pair = await openPair(server().url);
    const { fleet, channel } = pair;
    await fleet.pay('A', 'B', 40_000_000n, { settled: true });
    const closed = await closeChannel(fleet.net, fleet.node('A'), fleet.node('B'), channel);
    expect(closed.reasons.A).toMatch(/CooperativeClosure/);
    await mineUntil(fleet.net, () => fleet.node('A').spendableOutputs.length > 0 && fleet.node('B').spendableOutputs.length > 0, { maxBlocks: 20, what: 'closing outputs' });
    const sweepA = await sweepSpendableOutputs(fleet.net, fleet.node('A'));
    const sweepB = await sweepSpendableOutputs(fleet.net, fleet.node('B'));
    // A funded 1,000,000 sat, pushed 300,000 sat and paid 40,000 sat; B got the rest. Fees are small.
    expect(sweepA.sweptValueSat).toBeGreaterThan(655_000n);
    expect(sweepA.sweptValueSat).toBeLessThanOrEqual(660_000n);
    expect(sweepB.sweptValueSat).toBeGreaterThan(335_000n);
    expect(sweepB.sweptValueSat).toBeLessThanOrEqual(340_000n);
    expect(sweepA.sweptValueSat).toBeLessThan(sweepA.inputValueSat);
    expect(fleet.net.chain.confirmationHeight(sweepA.txid)).toBe(sweepA.confirmedAt);
  });

  it('force-closes after a restore: the restored wallet holds the latest state, the delayed output matures and is swept', async () => {
    pair = await openPair(server().url);
    const { fleet, channel } = pair;
    for (let i = 0; i < 5; i++) await fleet.pay('A', 'B', 1_000_000n, { settled: true });
    await fleet.node('A').eventLoop!.persistIfNeeded();
    await fleet.crash('A');
    await fleet.restore('A');
    const a = fleet.node('A');
    await fleet.net.waitFor(() => a.channelManager.list_usable_channels().length === 1, { what: 'usable after restore' });

    // B offline: only A's commitment goes out. (Connected, B answers A's error with its own
    // commitment, which can reach the chain first now that A's waits for A's manager write;
    // the chain keeps whichever spend of the funding it saw first.)
    fleet.net.disconnect(a, fleet.node('B'));
    const closed = await forceCloseChannel(fleet.net, a, channel, fleet.node('B').nodeId, [fleet.node('B')]);
    expect(closed.reasons.A).toBe('HolderForceClosed');
    // The peer did not need to punish anything: no penalty transaction, only its own output.
    const blocks = await mineUntil(fleet.net, () => a.spendableOutputs.length > 0 && fleet.node('B').spendableOutputs.length > 0, { maxBlocks: 200, what: 'both outputs spendable' });
    expect(blocks).toBeGreaterThanOrEqual(140); // A's output waits out to_self_delay (144 blocks)
    const sweepA = await sweepSpendableOutputs(fleet.net, a, { destination: walletScript(a) });
    // 1,000,000 - 300,000 pushed - 5,000 paid, minus the commitment fee paid by the funder.
    expect(sweepA.sweptValueSat).toBeGreaterThan(690_000n);
    expect(sweepA.sweptValueSat).toBeLessThan(695_000n);
    const sweepB = await sweepSpendableOutputs(fleet.net, fleet.node('B'));
    expect(sweepB.sweptValueSat).toBeGreaterThan(300_000n);
    expect(sweepB.sweptValueSat).toBeLessThanOrEqual(305_000n);
  }, 120_000);
});

describe.skipIf(!TEST_DATABASE_URL)(`e2e on PostgreSQL${TEST_DATABASE_URL ? '' : ' (SKIPPED: TEST_DATABASE_URL is not set)'}`, () => {
  it('payments, a crash mid-payment and a restore from seed + store id, on a server backed by PostgreSQL', async () => {
    const pgServer = await startServer({ kind: 'postgres', url: databaseUrl(TEST_DATABASE_URL!, 'ldk_vss_harness_e2e'), createDatabase: true });
    try {
      pair = await openPair(pgServer.url);
      const { fleet, channel } = pair;
      const initialA = channelView(fleet.node('A'), channel)!.outboundMsat;
      for (let i = 0; i < 10; i++) await fleet.pay(i % 2 ? 'B' : 'A', i % 2 ? 'A' : 'B', 20_000n, { settled: true });
      const crashed = fleet.crashAt('A', { kind: 'monitor-update', ordinal: 2, timing: 'after-durable' });
      fleet.sendPayment('A', 'B', 33_000n);
      await crashed;
      const restored = await fleet.restore('A');
      expect(restored.restoreStats!.monitors).toBe(1);
      await expectConsistent(pair, initialA);
      await fleet.pay('A', 'B', 1_000n, { settled: true });
      await expectConsistent(pair, initialA);
    } finally {
      await pair?.fleet.shutdown();
      pair = undefined;
      await pgServer.close();
    }
  });
});
