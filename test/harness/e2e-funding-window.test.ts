/**
 * Crashes around a channel open. LDK hands the funding transaction to the broadcaster when the
 * first monitor write completes and marks the channel "funding broadcast" in the
 * ChannelManager only then; a stored manager from before that, next to a confirmed funding
 * transaction, makes LDK 0.1.0 panic while connecting blocks ("Funding transaction broadcast
 * by the local client before it should have"), so the wallet could never start again.
 * ManagerOrderedBroadcaster holds transactions until a manager that knows them is durable;
 * these tests crash the funder and the fundee around every manager write of the open and check
 * that each restores, the channel confirms, and the next payment works.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NothingToRestoreError } from '../../src/ldk/index.js';
import { WalletFleet } from '../../harness/wallets.js';
import { vssStoreOpener } from '../../harness/vss-wallet.js';
import { txidHex } from '../../harness/chain.js';
import type { CrashTiming } from '../../harness/crash-store.js';
import { useE2eServer } from './helpers/e2e.js';

const server = useE2eServer();
let fleet: WalletFleet | undefined;
let run = 0;

afterEach(async () => {
  await fleet?.shutdown();
  fleet = undefined;
});

async function newFleet(): Promise<WalletFleet> {
  fleet = await WalletFleet.create(vssStoreOpener({ serverUrl: server().url }), { storeIdPrefix: `funding-${Date.now()}-${run++}` });
  await fleet.addWallet('A');
  await fleet.addWallet('B');
  await fleet.connect('A', 'B');
  return fleet;
}

const usable = (f: WalletFleet, name: string): boolean => f.node(name).channelManager.list_usable_channels().length > 0;

/** Mines while the funding waits for confirmations, until the channel is usable on both sides. */
async function confirmChannel(f: WalletFleet): Promise<void> {
  for (let i = 0; i < 60 && !(usable(f, 'A') && usable(f, 'B')); i++) {
    f.net.mine(1);
    await f.net.runFor(100);
  }
  expect(usable(f, 'A') && usable(f, 'B')).toBe(true);
}

describe('crashes around a channel open', () => {
  it.each(['A', 'B'])('%s crashed right after the open (manager not yet written again) restores, and the channel pays', async (victim) => {
    const f = await newFleet();
    await f.openChannel('A', 'B', { pushMsat: 300_000_000n });
    // The funding left only after a ChannelManager that knows it was durable.
    expect(f.node('A').orderedBroadcaster.stats.sentAfterManager).toBeGreaterThanOrEqual(1);
    expect(f.node('A').orderedBroadcaster.stats.sentAtOnce).toBe(0);
    await f.crash(victim);
    const restored = await f.restore(victim);
    expect(restored.restoreStats!.monitors).toBe(1);
    await confirmChannel(f);
    await f.pay('A', 'B', 25_000n, { settled: true });
    expect(f.ledger.closures).toEqual([]);
  }, 60_000);

  const points: { timing: CrashTiming; ordinal: number }[] = [];
  for (const timing of ['before-durable', 'after-durable'] as const) for (const ordinal of [1, 2, 3]) points.push({ timing, ordinal });

  it.each(points)('the funder crashed at its manager write #$ordinal of the open ($timing): restores, and the funding is never on chain for a channel it does not know', async ({ timing, ordinal }) => {
    const f = await newFleet();
    const crashed = f.crashAt('A', { kind: 'manager', ordinal, timing });
    const opened = f.openChannel('A', 'B', { pushMsat: 300_000_000n, timeoutMs: 4_000 }).then(
      () => 'opened' as const,
      () => 'failed' as const,
    );
    const first = await Promise.race([crashed.then(() => 'crashed' as const), opened]);
    // Every one of these points comes before the open completes.
    expect(first).toBe('crashed');
    await opened;
    const fundingTxs = [...f.node('A').fundingTransactions.values()];
    let restoredA;
    try {
      restoredA = await f.restore('A');
    } catch (err) {
      // Only a crash before anything of A was durable leaves nothing to restore; a new wallet
      // starts then, and its funding never reached the chain.
      expect(err).toBeInstanceOf(NothingToRestoreError);
      expect({ timing, ordinal }).toEqual({ timing: 'before-durable', ordinal: 1 });
      for (const tx of fundingTxs) expect(f.net.chain.confirmationHeight(txidHex(tx))).toBeUndefined();
      return;
    }
    expect(restoredA.node.crashed).toBe(false);
    if (restoredA.node.channels().length === 0) {
      // The restored funder never committed to the channel: its funding must never appear.
      for (let i = 0; i < 6; i++) f.net.mine(1);
      await f.net.runFor(300);
      for (const tx of fundingTxs) expect(f.net.chain.confirmationHeight(txidHex(tx))).toBeUndefined();
      expect(restoredA.node.channels()).toEqual([]);
      return;
    }
    // The funder knows the channel: it confirms (sent by LDK or, if the crash fell between the
    // durable manager and the broadcast, by the wallet's on-chain side) and carries payments.
    await confirmChannel(f);
    await f.pay('A', 'B', 25_000n, { settled: true });
    expect(f.ledger.closures).toEqual([]);
  }, 60_000);
});
