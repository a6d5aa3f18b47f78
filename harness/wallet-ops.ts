/**
 * Channel life-cycle operations on top of the in-process wallet network: cooperative close
 * ("settle"), force-close, mining until outputs mature, and sweeping the outputs LDK hands
 * back (`Event_SpendableOutputs`) to a wallet address. Also the balance views the
 * end-to-end tests compare across nodes and restarts.
 *
 * Kept apart from `network.ts` so the network core stays small: everything here only uses
 * the network's public surface (mine, waitFor, node state).
 */
import * as ldk from 'lightningdevkit';
import { readVarInt, txidHex, type Block } from './chain.js';
import type { WalletNetwork, OpenedChannel, WaitOptions } from './network.js';
import type { WalletNode } from './node.js';

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function channelIdOf(channel: OpenedChannel | string): ldk.ChannelId {
  const id = typeof channel === 'string' ? channel : channel.channelId;
  return ldk.ChannelId.constructor_new(Uint8Array.from(Buffer.from(id, 'hex')));
}

/** The node's view of one channel, or undefined once it is closed (or unknown). */
export function channelDetails(node: WalletNode, channel: OpenedChannel | string): ldk.ChannelDetails | undefined {
  const id = typeof channel === 'string' ? channel : channel.channelId;
  return node.channels().find((c) => hex(c.get_channel_id().get_a()) === id);
}

/** What one side believes about a channel's balances, in msat (reserves already deducted by LDK). */
export interface ChannelView {
  channelId: string;
  /** What this node could still send (its balance minus the reserve its peer requires). */
  outboundMsat: bigint;
  /** What this node could still receive (the peer's balance minus the reserve this node requires). */
  inboundMsat: bigint;
  pendingInboundHtlcs: number;
  pendingOutboundHtlcs: number;
  usable: boolean;
}

export function channelView(node: WalletNode, channel: OpenedChannel | string): ChannelView | undefined {
  const c = channelDetails(node, channel);
  if (!c) return undefined;
  return {
    channelId: hex(c.get_channel_id().get_a()),
    outboundMsat: c.get_outbound_capacity_msat(),
    inboundMsat: c.get_inbound_capacity_msat(),
    pendingInboundHtlcs: c.get_pending_inbound_htlcs().length,
    pendingOutboundHtlcs: c.get_pending_outbound_htlcs().length,
    usable: Boolean(c.get_is_usable()),
  };
}

/**
 * True when both sides see the channel usable with no HTLC in flight, and agree on it: what
 * `a` can send is what `b` can receive and the other way round.
 */
export function channelSettledAndAgreed(a: WalletNode, b: WalletNode, channel: OpenedChannel | string): boolean {
  const va = channelView(a, channel);
  const vb = channelView(b, channel);
  if (!va || !vb || !va.usable || !vb.usable) return false;
  if (va.pendingInboundHtlcs + va.pendingOutboundHtlcs + vb.pendingInboundHtlcs + vb.pendingOutboundHtlcs > 0) return false;
  if (a.pendingMonitorUpdates().length > 0 || b.pendingMonitorUpdates().length > 0) return false;
  return va.outboundMsat === vb.inboundMsat && va.inboundMsat === vb.outboundMsat;
}

/** Waits until `channelSettledAndAgreed` holds. */
export async function waitChannelSettled(net: WalletNetwork, a: WalletNode, b: WalletNode, channel: OpenedChannel | string, options: WaitOptions = {}): Promise<void> {
  await net.waitFor(() => channelSettledAndAgreed(a, b, channel), { what: `channel settled and agreed between ${a.name} and ${b.name}`, ...options });
}

/** Payments LDK still considers in progress on `node` (sent but neither fulfilled nor abandoned). */
export function pendingOutboundPayments(node: WalletNode): number {
  return node.channelManager.list_recent_payments().filter((p) => p instanceof ldk.RecentPaymentDetails_Pending || p instanceof ldk.RecentPaymentDetails_AwaitingInvoice).length;
}

/** An invoice's essentials, as a payee hands them to a payer (possibly in another process). */
export interface InvoiceData {
  payeeNodeId: Uint8Array;
  paymentHash: Uint8Array;
  paymentSecret: Uint8Array;
  amountMsat: bigint;
}

/** Creates an inbound payment on `payee` (what an invoice carries). */
export function createInvoice(payee: WalletNode, amountMsat: bigint): InvoiceData {
  const inbound = payee.channelManager.create_inbound_payment(ldk.Option_u64Z.constructor_some(amountMsat), 3600, ldk.Option_u16Z.constructor_none());
  if (!(inbound instanceof ldk.Result_C2Tuple_ThirtyTwoBytesThirtyTwoBytesZNoneZ_OK)) throw new Error(`${payee.name}: create_inbound_payment failed`);
  return { payeeNodeId: payee.nodeId, paymentHash: inbound.res.get_a(), paymentSecret: inbound.res.get_b(), amountMsat };
}

/** Pays an invoice from `payer` over its direct channels; the outcome arrives as events. */
export function payInvoice(payer: WalletNode, invoice: InvoiceData, paymentId: Uint8Array): void {
  const params = ldk.RouteParameters.constructor_from_payment_params_and_value(ldk.PaymentParameters.constructor_from_node_id(invoice.payeeNodeId, 40), invoice.amountMsat);
  const hashHex = hex(invoice.paymentHash);
  payer.payments.set(hashHex, { paymentHash: hashHex, direction: 'outbound', amountMsat: invoice.amountMsat, status: 'pending' });
  const sent = payer.channelManager.send_payment(invoice.paymentHash, ldk.RecipientOnionFields.constructor_secret_only(invoice.paymentSecret), paymentId, params, ldk.Retry.constructor_attempts(3));
  if (!sent.is_ok()) {
    payer.payments.set(hashHex, { paymentHash: hashHex, direction: 'outbound', amountMsat: invoice.amountMsat, status: 'failed', failureReason: 'send_payment refused' });
    throw new Error(`${payer.name}: send_payment failed`);
  }
  payer.emit('activity');
}

// ---- closing ----

export interface ClosedChannel {
  channelId: string;
  /** The transaction that spent the funding output (closing or commitment transaction). */
  closingTxid: string;
  /** LDK's closure reason on each side (class name without `ClosureReason_`). */
  reasons: Record<string, string>;
  /** Height at which the closing transaction confirmed. */
  confirmedAt: number;
}

function fundingSpendIn(txs: readonly Uint8Array[], channel: OpenedChannel): Uint8Array | undefined {
  // The funding outpoint's txid in internal byte order, as it appears in a spending input.
  const prevTxid = Buffer.from(channel.fundingTxid, 'hex').reverse();
  const index = Buffer.alloc(4);
  index.writeUInt32LE(channel.fundingIndex);
  const needle = Buffer.concat([prevTxid, index]);
  return txs.find((tx) => Buffer.from(tx).indexOf(needle) >= 0);
}

function closureReason(node: WalletNode, channelId: string): string | undefined {
  return node.closures.find((c) => c.channelId === channelId)?.reason;
}

async function waitClosed(net: WalletNetwork, nodes: WalletNode[], channel: OpenedChannel, closingTx: Uint8Array, options: WaitOptions): Promise<ClosedChannel> {
  const closingTxid = txidHex(closingTx);
  if (net.chain.confirmationHeight(closingTxid) === undefined) net.mine(1);
  await net.waitFor(() => nodes.every((n) => closureReason(n, channel.channelId) !== undefined), { what: `ChannelClosed for ${channel.channelId.slice(0, 8)} on ${nodes.map((n) => n.name).join(' and ')}`, ...options });
  const reasons: Record<string, string> = {};
  for (const n of nodes) reasons[n.name] = closureReason(n, channel.channelId)!;
  return { channelId: channel.channelId, closingTxid, reasons, confirmedAt: net.chain.confirmationHeight(closingTxid)! };
}

/**
 * Cooperative close ("settle") initiated by `initiator`: waits for the negotiated closing
 * transaction, mines it and waits until both sides report the channel closed.
 */
export async function closeChannel(net: WalletNetwork, initiator: WalletNode, counterparty: WalletNode, channel: OpenedChannel, options: WaitOptions = {}): Promise<ClosedChannel> {
  const res = initiator.channelManager.close_channel(channelIdOf(channel), counterparty.nodeId);
  if (!res.is_ok()) throw new Error(`${initiator.name}: close_channel refused for ${channel.channelId.slice(0, 8)}`);
  let closingTx: Uint8Array | undefined;
  await net.waitFor(() => (closingTx = fundingSpendIn([...initiator.broadcasts, ...counterparty.broadcasts], channel)) !== undefined, { what: `closing transaction of ${channel.channelId.slice(0, 8)}`, ...options });
  return waitClosed(net, [initiator, counterparty], channel, closingTx!, options);
}

/**
 * Force-close by `closer`: it broadcasts its latest commitment transaction, which is mined.
 * Waits for ChannelClosed on the closer and on every `observers` node (normally the peer).
 */
export async function forceCloseChannel(net: WalletNetwork, closer: WalletNode, channel: OpenedChannel, counterpartyNodeId: Uint8Array, observers: WalletNode[] = [], options: WaitOptions = {}): Promise<ClosedChannel> {
  const res = closer.channelManager.force_close_broadcasting_latest_txn(channelIdOf(channel), counterpartyNodeId, 'force-closed by the harness');
  if (!res.is_ok()) throw new Error(`${closer.name}: force_close_broadcasting_latest_txn refused for ${channel.channelId.slice(0, 8)}`);
  let commitment: Uint8Array | undefined;
  await net.waitFor(() => (commitment = fundingSpendIn(closer.broadcasts, channel)) !== undefined, { what: `commitment transaction of ${channel.channelId.slice(0, 8)}`, ...options });
  return waitClosed(net, [closer, ...observers], channel, commitment!, options);
}

// ---- maturing and sweeping ----

/** Waits until no live node has a monitor or manager write queued. */
export async function waitPersisted(net: WalletNetwork, options: WaitOptions = {}): Promise<void> {
  const idle = (n: WalletNode): boolean => (n.persistence.vssPersister?.pending().length ?? 0) === 0 && !n.eventLoop?.persisting;
  await net.waitFor(() => net.liveNodes().every(idle), { what: 'every node persisted', ...options });
  await new Promise((r) => setImmediate(r));
}

/**
 * Mines one block at a time (letting the nodes react between blocks) until `predicate`
 * holds. Returns the number of blocks mined; throws after `maxBlocks`.
 */
export async function mineUntil(net: WalletNetwork, predicate: () => boolean, options: { maxBlocks?: number; what?: string } = {}): Promise<number> {
  const maxBlocks = options.maxBlocks ?? 500;
  for (let mined = 0; ; mined++) {
    // Let the nodes persist and react to the previous block before checking: LDK releases
    // a monitor's events (e.g. SpendableOutputs) only once its chain-sync write is durable.
    await waitPersisted(net);
    if (predicate()) return mined;
    if (mined >= maxBlocks) throw new Error(`still waiting for ${options.what ?? 'a condition'} after mining ${maxBlocks} blocks`);
    net.mine(1);
  }
}

export interface TxOutput {
  valueSat: bigint;
  script: Uint8Array;
}

/** The outputs of a serialized transaction (segwit or not). */
export function transactionOutputs(tx: Uint8Array): TxOutput[] {
  let pos = 4;
  if (tx[4] === 0 && tx[5] === 1) pos = 6;
  let count: number;
  [count, pos] = readVarInt(tx, pos);
  for (let i = 0; i < count; i++) {
    pos += 36;
    let len: number;
    [len, pos] = readVarInt(tx, pos);
    pos += len + 4;
  }
  [count, pos] = readVarInt(tx, pos);
  const view = new DataView(tx.buffer, tx.byteOffset, tx.byteLength);
  const outputs: TxOutput[] = [];
  for (let i = 0; i < count; i++) {
    const valueSat = view.getBigUint64(pos, true);
    let len: number;
    [len, pos] = readVarInt(tx, pos + 8);
    outputs.push({ valueSat, script: tx.slice(pos, pos + len) });
    pos += len;
  }
  return outputs;
}

/** Total value of the outputs LDK reported as spendable, in sat. */
export function spendableValueSat(descriptors: readonly ldk.SpendableOutputDescriptor[]): bigint {
  let total = 0n;
  for (const d of descriptors) {
    if (d instanceof ldk.SpendableOutputDescriptor_StaticOutput) total += d.output.value;
    else if (d instanceof ldk.SpendableOutputDescriptor_DelayedPaymentOutput) total += d.delayed_payment_output.get_output().value;
    else if (d instanceof ldk.SpendableOutputDescriptor_StaticPaymentOutput) total += d.static_payment_output.get_output().value;
  }
  return total;
}

/** A P2WPKH script for the node's on-chain "wallet" (the sweep destination). */
export function walletScript(node: WalletNode): Uint8Array {
  const res = node.keysManager.as_SignerProvider().get_shutdown_scriptpubkey();
  if (!(res instanceof ldk.Result_ShutdownScriptNoneZ_OK)) throw new Error(`${node.name}: no shutdown script`);
  return res.res.into_inner();
}

export interface SweepResult {
  txid: string;
  /** Number of LDK outputs spent. */
  inputs: number;
  /** Sum of the swept outputs (before fee), sat. */
  inputValueSat: bigint;
  /** What arrived at the destination script, sat. */
  sweptValueSat: bigint;
  confirmedAt: number;
}

/**
 * Spends every output LDK reported on `node` (`Event_SpendableOutputs`) to `destination`
 * (default: the node's own wallet script) with the KeysManager's signer, mines the sweep and
 * reports what reached the destination next to the value of the outputs spent (the caller
 * checks the amounts). The descriptors are consumed.
 */
export async function sweepSpendableOutputs(net: WalletNetwork, node: WalletNode, options: { destination?: Uint8Array; feeRateSatPerKw?: number } = {}): Promise<SweepResult> {
  const descriptors = node.spendableOutputs.splice(0);
  if (descriptors.length === 0) throw new Error(`${node.name}: nothing to sweep`);
  const destination = options.destination ?? walletScript(node);
  const res = node.keysManager
    .as_OutputSpender()
    .spend_spendable_outputs(descriptors, [], destination, options.feeRateSatPerKw ?? 253, ldk.Option_u32Z.constructor_none());
  if (!(res instanceof ldk.Result_TransactionNoneZ_OK)) {
    node.spendableOutputs.push(...descriptors);
    throw new Error(`${node.name}: spend_spendable_outputs failed (outputs not yet mature or malformed)`);
  }
  const tx = res.res;
  const txid = txidHex(tx);
  net.chain.broadcast(tx);
  net.mine(1);
  const confirmedAt = net.chain.confirmationHeight(txid);
  if (confirmedAt === undefined) throw new Error(`sweep ${txid} was not mined`);
  const inputValueSat = spendableValueSat(descriptors);
  const sweptValueSat = transactionOutputs(tx)
    .filter((o) => hex(o.script) === hex(destination))
    .reduce((n, o) => n + o.valueSat, 0n);
  return { txid, inputs: descriptors.length, inputValueSat, sweptValueSat, confirmedAt };
}

/** Blocks of the harness chain above `height` (for feeding extra chain listeners). */
export function blocksAbove(net: WalletNetwork, height: number): Block[] {
  return net.chain.blocksAfter(height);
}
