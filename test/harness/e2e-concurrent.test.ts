/**
 * Several payments in flight at once between two wallets persisting to a real VSS server, with
 * the event loop not linked to the persister (monitor writes complete on their own, as with
 * LDK's usual lazy manager persistence).
 *
 * A regression guard for LDK 0.1.0's "Attempted to apply ChannelMonitorUpdates out of order"
 * panic: LDK holds a revoke_and_ack's monitor update until the app has handled the PaymentSent
 * of that round, and mis-numbers the update when that held revoke_and_ack also frees HTLCs from
 * the holding cell. While the event loop held PaymentSent for the manager write, this setup
 * panicked within 40 to 400 payments (in six runs of a stress script); the loop now hands
 * payment outcomes out at once (isDeliveredWithoutManagerWrite), also while a manager write is
 * in flight. The panic depends on timing, so a regression fails this test most of the time
 * rather than every time: with the loop holding outcomes it failed in three of four runs; with
 * outcomes held only during in-flight writes, in three of three runs next to e2e-crash.test.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import * as ldk from 'lightningdevkit';
import type { VssStore } from '../../src/store/index.js';
import { WalletNetwork } from '../../harness/network.js';
import { vssPersistence } from '../../harness/persistence.js';
import { openVssWalletStore } from '../../harness/vss-wallet.js';
import { useE2eServer } from './helpers/e2e.js';

const PAYMENTS = 400;
const IN_FLIGHT = 5;
const AMOUNT_MSAT = 1_000n;

const server = useE2eServer();
let net: WalletNetwork | undefined;

afterAll(async () => {
  await net?.shutdown();
});

function openStore(name: string): Promise<VssStore> {
  return openVssWalletStore({ seed: new Uint8Array(randomBytes(64)), storeId: `concurrent-${name}-${randomBytes(4).toString('hex')}` }, { serverUrl: server().url });
}

describe('payments in flight at once', () => {
  it(`${PAYMENTS} payments, ${IN_FLIGHT} at a time, event loops not linked to the persisters: all complete, every monitor update durable, no LDK panic`, async () => {
    net = await WalletNetwork.create();
    const a = net.addNode({ name: 'A', persistence: vssPersistence(await openStore('a'), { linkManager: false }) });
    const b = net.addNode({ name: 'B', persistence: vssPersistence(await openStore('b'), { linkManager: false }) });
    net.start();
    await net.connect(a, b);
    await net.openChannel(a, b, { capacitySat: 10_000_000n, timeoutMs: 60_000 });
    const outboundBefore = a.channels()[0].get_outbound_capacity_msat();
    const sent: string[] = [];
    a.on('event', (event) => {
      if (event instanceof ldk.Event_PaymentSent) sent.push(Buffer.from(event.payment_hash).toString('hex'));
    });

    let started = 0;
    const lane = async (): Promise<void> => {
      while (started < PAYMENTS) {
        started++;
        await net!.waitForPayment(net!.sendPayment(a, b, AMOUNT_MSAT), { timeoutMs: 60_000 });
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    await net.waitFor(() => net!.quiescent(a, b), { timeoutMs: 60_000, what: 'the channel to settle' });

    expect(a.channels()[0].get_outbound_capacity_msat()).toBe(outboundBefore - BigInt(PAYMENTS) * AMOUNT_MSAT);
    expect(a.pendingMonitorUpdates()).toEqual([]);
    expect(b.pendingMonitorUpdates()).toEqual([]);
    // Each payment's outcome reached the app exactly once (no crash, so no replay).
    expect(sent).toHaveLength(PAYMENTS);
    expect(new Set(sent).size).toBe(PAYMENTS);
  }, 180_000);
});
