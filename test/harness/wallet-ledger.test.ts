/**
 * PaymentLedger (harness/wallet-ledger.ts) fed real LDK events: what the demo's summary and the
 * end-to-end checks read from it.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import * as ldk from 'lightningdevkit';
import { initLdk } from '../../src/ldk/index.js';
import { PaymentLedger } from '../../harness/wallet-ledger.js';
import type { WalletNode } from '../../harness/node.js';

beforeAll(async () => {
  await initLdk();
});

/** Stands in for a WalletNode: the ledger only listens to its 'event's and reads its name. */
function fakeNode(name: string): WalletNode & EventEmitter {
  return Object.assign(new EventEmitter(), { name }) as unknown as WalletNode & EventEmitter;
}

function closed(channel: number, reason: ldk.ClosureReason): ldk.Event {
  const txo = ldk.OutPoint.constructor_new(new Uint8Array(32).fill(channel), 0);
  return ldk.Event.constructor_channel_closed(
    ldk.ChannelId.constructor_new(new Uint8Array(32).fill(channel)),
    1n,
    reason,
    new Uint8Array(33).fill(2),
    ldk.Option_u64Z.constructor_some(1_000_000n),
    txo,
    ldk.Option_u64Z.constructor_none(),
  );
}

describe('PaymentLedger closures', () => {
  it('counts force-closed channels once each, whoever reported them and however often, and never cooperative closes', () => {
    const ledger = new PaymentLedger();
    const alice = fakeNode('alice');
    const bob = fakeNode('bob');
    const bobRestored = fakeNode('bob');
    for (const node of [alice, bob, bobRestored]) ledger.track(node);

    // Channel 1 force-closed: both sides report it, and bob's restored incarnation replays it.
    alice.emit('event', closed(1, ldk.ClosureReason.constructor_holder_force_closed(ldk.Option_boolZ.constructor_some(true))));
    bob.emit('event', closed(1, ldk.ClosureReason.constructor_counterparty_force_closed(ldk.UntrustedString.constructor_new('bye'))));
    bobRestored.emit('event', closed(1, ldk.ClosureReason.constructor_commitment_tx_confirmed()));
    // Channel 2 closed cooperatively on both sides.
    alice.emit('event', closed(2, ldk.ClosureReason.constructor_locally_initiated_cooperative_closure()));
    bob.emit('event', closed(2, ldk.ClosureReason.constructor_counterparty_initiated_cooperative_closure()));

    expect(ledger.closures).toHaveLength(5);
    expect(ledger.forceClosedChannels()).toEqual(['01'.repeat(32)]);
  });
});
