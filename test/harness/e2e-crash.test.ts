/**
 * End-to-end crash tests on a real VSS server (embedded PGlite): a wallet is crashed at an
 * exact persistence step of a payment (before or after each monitor update and each manager
 * write is durable), then restored from seed + store id alone. After every restore: no
 * force-close, no lost or duplicated payment, both sides agree on the balances, and the
 * next payment works.
 *
 * The default path writes each ChannelManager together with the monitor updates it covers in
 * one atomic batch: a crash at a monitor update that travels in a batch crashes the whole
 * batch at that point. The step sweep also runs on the older path (manager first, then each
 * monitor write), and each run checks which path it was on.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CorruptStateError } from '../../src/ldk/index.js';
import { readChannelMonitors } from '../../src/ldk/index.js';
import { ClaimWindowTracker } from '../../harness/known-issues.js';
import type { CrashEvent, CrashTiming, WriteKind } from '../../harness/crash-store.js';
import { channelView } from '../../harness/wallet-ops.js';
import { openVssWalletStore } from '../../harness/vss-wallet.js';
import { nodeSeedOf } from '../../harness/wallets.js';
import * as ldk from 'lightningdevkit';
import { expectConsistent, openPair, tallyRequests, type Pair, useE2eServer } from './helpers/e2e.js';

const server = useE2eServer();
let pair: Pair | undefined;

afterEach(async () => {
  await pair?.fleet.shutdown();
  pair = undefined;
});

/** Trackers of the LDK 0.1.0 mid-claim window (see harness/known-issues.ts), one per wallet, following restores. */
function trackClaimWindows(p: Pair): Record<string, ClaimWindowTracker> {
  const trackers: Record<string, ClaimWindowTracker> = { A: new ClaimWindowTracker(), B: new ClaimWindowTracker() };
  for (const name of ['A', 'B']) trackers[name].watch(p.fleet.node(name), p.fleet.wallet(name).store);
  p.fleet.onWallet((w) => trackers[w.name].watch(w.node, w.store));
  return trackers;
}

/**
 * Makes a payment with `victim` armed to crash at a step; returns the crash, or undefined if
 * the step never came. Steps whose request (the whole batch, on the batched path) could land
 * in LDK 0.1.0's mid-claim window are not counted.
 */
async function payWithCrash(p: Pair, from: string, to: string, amountMsat: bigint, victim: string, point: { kind: WriteKind; ordinal: number; timing: CrashTiming }, tracker: ClaimWindowTracker): Promise<CrashEvent | undefined> {
  const { fleet } = p;
  const crashed = fleet.crashAt(victim, { ...point, when: (_kind, _key, request) => !request.some((w) => tracker.crashLandsInWindow(w.kind, point.timing)) });
  const handle = fleet.sendPayment(from, to, amountMsat);
  const completed = fleet.net.waitForPayment(handle, { settled: true, timeoutMs: 30_000 }).then(() => fleet.net.runFor(300));
  const event = await Promise.race([crashed, completed.then(() => undefined)]);
  if (!event) fleet.wallet(victim).store.disarm();
  return event;
}

const PATHS = [
  { path: 'one atomic batch per step (default)', atomicBatches: true },
  { path: 'manager first, then each monitor write', atomicBatches: false },
] as const;

describe.each(PATHS)('crash at every persistence step of a payment: $path', ({ atomicBatches }) => {
  it('sender and receiver, before and after each monitor update and manager write: restore, no loss, no force-close', async () => {
    pair = await openPair(server().url, { atomicBatches });
    const p = pair;
    const trackers = trackClaimWindows(p);
    const requests = tallyRequests(p.fleet);
    const initialA = channelView(p.fleet.node('A'), p.channel)!.outboundMsat;
    const outcomes: string[] = [];
    const skipped: string[] = [];
    /** Crashes that took down more than one write of a request (a batch). */
    let crashedBatches = 0;
    for (const victim of ['A', 'B']) {
      for (const timing of ['before-durable', 'after-durable'] as const) {
        for (const [kind, count] of [['monitor-update', 5], ['manager', 2]] as const) {
          // The receiver's claim update cannot be crashed after durability on LDK 0.1.0 (see
          // the known-limitation test below): its other four updates are.
          const ordinals = victim === 'B' && timing === 'after-durable' && kind === 'monitor-update' ? count - 1 : count;
          for (let ordinal = 1; ordinal <= ordinals; ordinal++) {
            const event = await payWithCrash(p, 'A', 'B', 7_000n, victim, { kind, ordinal, timing }, trackers[victim]);
            if (!event) {
              // Only the receiver skips writes (those inside LDK 0.1.0's mid-claim window),
              // so its later ordinals may not come within one payment.
              expect(victim, `${victim} ${timing} ${kind} #${ordinal} was reached`).toBe('B');
              skipped.push(`${victim} ${timing} ${kind}#${ordinal}`);
              await expectConsistent(p, initialA);
              continue;
            }
            expect(event.kind).toBe(kind);
            if (event.request.length > 1) crashedBatches++;
            expect(p.fleet.node(victim).crashed).toBe(true);
            const restored = await p.fleet.restore(victim);
            expect(restored.restoreStats!.monitors).toBe(1);
            await expectConsistent(p, initialA);
            outcomes.push(`${victim} ${timing} ${kind}#${ordinal}`);
          }
        }
      }
    }
    expect(outcomes.filter((o) => o.startsWith('A '))).toHaveLength(2 * 7);
    expect(outcomes.filter((o) => o.startsWith('B ')).length).toBeGreaterThanOrEqual(9);
    expect(outcomes.length + skipped.length).toBe(2 * 2 * 7 - 1);
    // Every payment of the sweep is settled one way or the other, and A can still pay.
    await p.fleet.pay('A', 'B', 12_345n, { settled: true });
    await expectConsistent(p, initialA);
    console.log(JSON.stringify({ atomicBatches, requests, crashedBatches, outcomes: outcomes.length, skipped }));
    // The sweep ran on the path it was meant for, on every incarnation of both wallets.
    for (const name of ['A', 'B']) expect(p.fleet.wallet(name).store.atomicBatches).toBe(atomicBatches);
    if (atomicBatches) {
      // Monitor updates travelled with the manager that knows them, and crash points hit batches.
      expect(requests.managerWithUpdates).toBeGreaterThan(50);
      expect(requests.updatesWithManager).toBeGreaterThan(10 * requests.updatesAlone);
      expect(crashedBatches).toBeGreaterThan(10);
    } else {
      expect(requests.batches).toBe(0);
      expect(requests.updatesAlone).toBeGreaterThan(100);
      expect(crashedBatches).toBe(0);
    }
  }, 240_000);
});

describe('crash at random points (batched path)', () => {

  it('random crash points over many payments in both directions (seeded, reproducible)', async () => {
    pair = await openPair(server().url);
    const p = pair;
    const trackers = trackClaimWindows(p);
    const requests = tallyRequests(p.fleet);
    const initialA = channelView(p.fleet.node('A'), p.channel)!.outboundMsat;
    let seed = Number(process.env.E2E_CRASH_SEED ?? 20_261_124);
    const random = (): number => {
      // mulberry32: a tiny seeded PRNG so a failing run can be replayed with E2E_CRASH_SEED.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    let crashes = 0;
    for (let i = 0; i < 16; i++) {
      const [from, to] = random() < 0.5 ? ['A', 'B'] : ['B', 'A'];
      const amount = BigInt(1_000 + Math.floor(random() * 50_000));
      if (random() < 0.6) {
        const victim = random() < 0.5 ? from : to;
        const kind: WriteKind = random() < 0.6 ? 'monitor-update' : 'manager';
        const timing: CrashTiming = random() < 0.5 ? 'before-durable' : 'after-durable';
        const ordinal = 1 + Math.floor(random() * 5);
        const event = await payWithCrash(p, from, to, amount, victim, { kind, ordinal, timing }, trackers[victim]);
        if (event) {
          crashes++;
          await p.fleet.restore(victim);
        }
      } else {
        await p.fleet.pay(from, to, amount, { settled: true });
      }
      await expectConsistent(p, initialA);
    }
    expect(crashes).toBeGreaterThanOrEqual(5);
    expect(p.fleet.ledger.all().length).toBe(16);
    expect(requests.managerWithUpdates).toBeGreaterThan(0);
  }, 180_000);
});

describe('known LDK 0.1.0 limitation (rust-lightning #3772, fixed upstream after 0.1.0)', () => {
  it('a receiver crashed right after its claim preimage is durable fails closed on restore (CorruptStateError), its monitor is intact on the server', async () => {
    pair = await openPair(server().url);
    const p = pair;
    const trackers = trackClaimWindows(p);
    await p.fleet.pay('A', 'B', 5_000n, { settled: true });
    const crashed = p.fleet.crashAt('B', { kind: 'monitor-update', ordinal: 1, timing: 'after-durable', when: () => trackers.B.claimInProgress() });
    p.fleet.sendPayment('A', 'B', 9_000n);
    await crashed;
    expect(trackers.B.windowOpen).toBe(true);
    await expect(p.fleet.restore('B')).rejects.toBeInstanceOf(CorruptStateError);
    await expect(p.fleet.restore('B')).rejects.toThrow(/InvalidValue/);
    // Nothing was lost on the server: a new device reads B's monitor with the claim in it.
    const w = p.fleet.wallet('B');
    const store = await openVssWalletStore(w, { serverUrl: server().url });
    const keys = ldk.KeysManager.constructor_new(nodeSeedOf(w.seed), 1n, 1);
    const monitors = await readChannelMonitors(store, {
      entropySource: keys.as_EntropySource(),
      signerProvider: keys.as_SignerProvider(),
      broadcaster: ldk.BroadcasterInterface.new_impl({ broadcast_transactions: () => {} }),
      feeEstimator: ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => 253 }),
      logger: ldk.Logger.new_impl({ log: () => {} }),
    });
    expect(monitors.map((m) => m.name)).toEqual([p.channel.monitorName]);
    await store.close();
    // The sender did not force-close.
    expect(p.fleet.ledger.closures).toEqual([]);
  });
});
