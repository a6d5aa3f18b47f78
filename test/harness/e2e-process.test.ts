/**
 * A real process crash: wallet A runs in a child process (persisting to a real VSS server on
 * PGlite), is SIGKILLed in the middle of a payment and restored in a fresh process from its
 * seed and store id alone. B and the chain live in the test process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import * as ldk from 'lightningdevkit';
import type { StartedVssServer } from '../../src/server/index.js';
import { ChildWallet, type ChildStartOptions } from '../../harness/child-wallet.js';
import { TcpPeerListener } from '../../harness/tcp-peers.js';
import { channelView, createInvoice } from '../../harness/wallet-ops.js';
import { vssStoreOpener } from '../../harness/vss-wallet.js';
import { WalletFleet } from '../../harness/wallets.js';
import { startServer } from './helpers/e2e.js';

let server: StartedVssServer;
let fleet: WalletFleet;
let listener: TcpPeerListener;
const children: ChildWallet[] = [];

beforeAll(async () => {
  server = await startServer('pglite');
  fleet = await WalletFleet.create(vssStoreOpener({ serverUrl: server.url }));
  await fleet.addWallet('B');
  listener = new TcpPeerListener(
    () => fleet.node('B').peerManager,
    () => fleet.node('B').emit('activity'),
  );
});

afterAll(async () => {
  for (const c of children) await c.kill();
  await listener?.close();
  await fleet?.shutdown();
  await server?.close();
});

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** A child wallet wired to the test's chain and ledger. */
function spawnChild(writes: string[]): ChildWallet {
  const child = ChildWallet.spawn();
  children.push(child);
  child.on('report', (report) => {
    if (report.type === 'broadcast') fleet.net.chain.broadcast(report.tx);
    if (report.type === 'payment') fleet.ledger.report(report.paymentHash, report.status);
    if (report.type === 'write') writes.push(report.kind);
  });
  return child;
}

describe('child-process wallet', () => {
  it('is SIGKILLed mid-payment twice and restored each time in a fresh process: no force-close, no lost payment, balances agree, pays again', async () => {
    const port = await listener.listen();
    const b = fleet.node('B');
    const options: ChildStartOptions = {
      mode: 'create',
      name: 'A',
      seed: randomBytes(64),
      storeId: `e2e-process-${randomBytes(4).toString('hex')}`,
      serverUrl: server.url,
      peer: { host: '127.0.0.1', port, nodeId: b.nodeId },
    };
    const writes: string[] = [];
    let child = spawnChild(writes);
    const started = await child.start(options, fleet.net.chain);
    expect(started.restore).toBeUndefined();

    const { fundingTxid } = await child.openChannel(1_000_000n, 300_000_000n);
    await fleet.net.waitFor(() => fleet.net.chain.pendingTransactions().length > 0, { what: 'funding broadcast reaches the chain' });
    fleet.net.mine(6);
    await child.syncBlocks(fleet.net.chain);
    await child.waitUsable();
    await fleet.net.waitFor(() => b.channelManager.list_usable_channels().length === 1, { what: 'B sees the channel usable' });
    expect(fleet.net.chain.confirmationHeight(fundingTxid)).toBeDefined();
    const channelId = hex(b.channels()[0].get_channel_id().get_a());
    const inboundB0 = channelView(b, channelId)!.inboundMsat; // = what A can send

    const pay = async (amountMsat: bigint): Promise<string> => {
      const invoice = createInvoice(b, amountMsat);
      const hash = hex(invoice.paymentHash);
      fleet.ledger.expect(hash, 'A', 'B', amountMsat);
      await child.pay(invoice);
      return hash;
    };
    const settled = async (hash: string): Promise<void> => {
      await fleet.net.waitFor(() => fleet.ledger.get(hash)!.sent && fleet.ledger.get(hash)!.claimed, { what: `payment ${hash.slice(0, 8)} sent and claimed`, timeoutMs: 30_000 });
    };
    const expectAgreement = async (): Promise<void> => {
      await fleet.net.waitFor(() => channelView(b, channelId)!.pendingInboundHtlcs + channelView(b, channelId)!.pendingOutboundHtlcs === 0, { what: 'no HTLC in flight on B' });
      let state = await child.state();
      for (let i = 0; i < 50 && (state.channels[0]?.pendingHtlcs !== 0 || state.pendingMonitorUpdates !== 0 || !state.channels[0]?.usable); i++) {
        await fleet.net.runFor(100);
        state = await child.state();
      }
      const viewB = channelView(b, channelId)!;
      expect(state.channels).toHaveLength(1);
      expect(state.channels[0].outboundMsat).toBe(viewB.inboundMsat);
      expect(state.channels[0].inboundMsat).toBe(viewB.outboundMsat);
      expect(viewB.inboundMsat).toBe(inboundB0 - fleet.ledger.claimedMsat('A', 'B'));
      expect(state.closures).toEqual([]);
      expect(fleet.ledger.closures).toEqual([]);
      expect(fleet.ledger.inconsistencies()).toEqual([]);
    };

    for (let i = 0; i < 3; i++) await settled(await pay(20_000n));
    await expectAgreement();

    // Kill 1: the instant B has the HTLC and starts claiming it.
    const claimable = new Promise<void>((resolve) => b.on('event', (e) => e instanceof ldk.Event_PaymentClaimable && resolve()));
    const h1 = await pay(31_000n);
    await claimable;
    const exit1 = await child.kill();
    expect(exit1.signal).toBe('SIGKILL');

    child = spawnChild(writes);
    const restored1 = await child.start({ ...options, mode: 'restore' }, fleet.net.chain);
    expect(restored1.nodeId).toBe(started.nodeId);
    expect(restored1.restore!.monitors).toBe(1);
    await child.waitUsable();
    await settled(h1); // the restored process learns the payment it was making succeeded
    await expectAgreement();

    // Kill 2: the new process kills itself right after its second durable write of the next
    // payment, before it hears back from that write.
    await child.killAfterWrites(2);
    const h2 = await pay(17_000n);
    const exit2 = await child.waitExit();
    expect(exit2.signal).toBe('SIGKILL');
    // It really died mid-payment: it never learned that the payment succeeded.
    expect(fleet.ledger.get(h2)!.sent).toBe(false);

    child = spawnChild(writes);
    const restored2 = await child.start({ ...options, mode: 'restore' }, fleet.net.chain);
    expect(restored2.restore!.monitors).toBe(1);
    await child.waitUsable();
    // The payment either completed or never reached B; either way both sides agree.
    await fleet.net.runFor(500);
    const e2 = fleet.ledger.get(h2)!;
    if (e2.claimed) await settled(h2);
    await expectAgreement();

    await settled(await pay(9_000n));
    await expectAgreement();
  }, 180_000);
});
