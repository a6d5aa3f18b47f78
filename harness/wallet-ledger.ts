/**
 * An outside observer's record of payments that survives crashes and restores: it listens
 * to every incarnation of every node and remembers, per payment hash, who intended to pay
 * whom and what each side reported (PaymentSent, PaymentClaimed, PaymentFailed).
 *
 * LDK may hand an event again after a restart (the app must be idempotent), so outcomes are
 * sets of hashes, not counts; money is checked separately against channel balances.
 */
import * as ldk from 'lightningdevkit';
import type { WalletNode } from './node.js';

export interface LedgerEntry {
  paymentHash: string;
  from: string;
  to: string;
  amountMsat: bigint;
  /** The sender saw PaymentSent (in any incarnation). */
  sent: boolean;
  /** The receiver saw PaymentClaimed (in any incarnation). */
  claimed: boolean;
  /** The sender saw PaymentFailed. */
  failed: boolean;
  /** PaymentClaimed events seen, over all incarnations (LDK may replay after a restart). */
  claimEvents: number;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export interface ClosureRecord {
  node: string;
  channelId: string;
  reason: string;
}

/** LDK's closure reasons (class names without `ClosureReason_`) of a channel closed by agreement. */
const COOPERATIVE_REASONS = new Set([
  'LegacyCooperativeClosure',
  'CounterpartyInitiatedCooperativeClosure',
  'LocallyInitiatedCooperativeClosure',
  'CounterpartyCoopClosedUnfundedChannel',
]);

export class PaymentLedger {
  /** Every ChannelClosed any incarnation of any tracked node reported. */
  readonly closures: ClosureRecord[] = [];
  private readonly entries = new Map<string, LedgerEntry>();
  private readonly tracked = new WeakSet<WalletNode>();

  /** Starts listening to a node (call for every new or restored incarnation). */
  track(node: WalletNode): void {
    if (this.tracked.has(node)) return;
    this.tracked.add(node);
    node.on('event', (event) => this.onEvent(node, event));
  }

  /** Records the intent of a payment before it is sent. */
  expect(paymentHash: string, from: string, to: string, amountMsat: bigint): void {
    if (!this.entries.has(paymentHash)) {
      this.entries.set(paymentHash, { paymentHash, from, to, amountMsat, sent: false, claimed: false, failed: false, claimEvents: 0 });
    }
  }

  private entry(paymentHash: string, node: WalletNode, amountMsat: bigint): LedgerEntry {
    let e = this.entries.get(paymentHash);
    if (!e) {
      // A payment the ledger was not told about (e.g. made by a child process).
      e = { paymentHash, from: '?', to: '?', amountMsat, sent: false, claimed: false, failed: false, claimEvents: 0 };
      this.entries.set(paymentHash, e);
    }
    return e;
  }

  private onEvent(node: WalletNode, event: ldk.Event): void {
    if (event instanceof ldk.Event_ChannelClosed) {
      this.closures.push({ node: node.name, channelId: hex(event.channel_id.get_a()), reason: event.reason.constructor.name.replace(/^ClosureReason_/, '') });
    } else if (event instanceof ldk.Event_PaymentSent) {
      const e = this.entry(hex(event.payment_hash), node, 0n);
      e.sent = true;
      if (e.from === '?') e.from = node.name;
    } else if (event instanceof ldk.Event_PaymentClaimed) {
      const e = this.entry(hex(event.payment_hash), node, event.amount_msat);
      e.claimed = true;
      e.claimEvents++;
      if (e.to === '?') e.to = node.name;
    } else if (event instanceof ldk.Event_PaymentFailed) {
      const hash = event.payment_hash;
      if (hash instanceof ldk.Option_ThirtyTwoBytesZ_Some) this.entry(hex(hash.some), node, 0n).failed = true;
    }
  }

  /**
   * Channels that were force-closed, each once: a closure is reported by both sides and may be
   * replayed after a restart, so `closures` counts events, not channels. Any closure not by
   * agreement counts (holder or counterparty force-close, a commitment seen on chain, an
   * error, an outdated manager...).
   */
  forceClosedChannels(): string[] {
    return [...new Set(this.closures.filter((c) => !COOPERATIVE_REASONS.has(c.reason)).map((c) => c.channelId))];
  }

  /** Outcomes reported from elsewhere (e.g. a wallet in another process). */
  report(paymentHash: string, outcome: 'sent' | 'failed'): void {
    const e = this.entries.get(paymentHash);
    if (!e) throw new Error(`unknown payment ${paymentHash}`);
    if (outcome === 'sent') e.sent = true;
    else e.failed = true;
  }

  get(paymentHash: string): LedgerEntry | undefined {
    return this.entries.get(paymentHash);
  }

  all(): LedgerEntry[] {
    return [...this.entries.values()];
  }

  /** Sum of payments from `from` to `to` that the receiver claimed, msat. */
  claimedMsat(from: string, to: string): bigint {
    return this.all()
      .filter((e) => e.from === from && e.to === to && e.claimed)
      .reduce((n, e) => n + e.amountMsat, 0n);
  }

  /**
   * Payments whose two sides disagree: claimed by the receiver but never reported sent,
   * reported sent but never claimed, or both sent and failed.
   */
  inconsistencies(): string[] {
    const problems: string[] = [];
    for (const e of this.entries.values()) {
      const tag = `${e.paymentHash.slice(0, 8)} ${e.from}->${e.to} ${e.amountMsat} msat`;
      if (e.claimed && !e.sent) problems.push(`${tag}: claimed by the receiver but the sender never learned it succeeded`);
      if (e.sent && !e.claimed) problems.push(`${tag}: the sender saw it succeed but the receiver never claimed it`);
      if (e.sent && e.failed) problems.push(`${tag}: reported both sent and failed`);
    }
    return problems;
  }
}
