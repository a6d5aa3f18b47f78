/**
 * An in-process Lightning network for tests, benchmarks and the demo: N LDK nodes, peers
 * connected over in-memory sockets, a synthetic chain that feeds blocks to every node in
 * order, and helpers to open channels, pay and wait, each with a timeout.
 *
 * A background pump (`start()`) moves bytes, events and persistence completions like a
 * wallet's event loop would; waits observe the resulting state. Between rounds the pump
 * yields to the event loop (setImmediate), which also lets the GC free WASM objects.
 */
import { randomBytes } from 'node:crypto';
import * as ldk from 'lightningdevkit';
import { initLdk } from '../src/ldk/index.js';
import { SyntheticChain, displayHex, txidHex } from './chain.js';
import { MemoryConnection } from './sockets.js';
import { WalletNode, type PaymentRecord, type WalletNodeOptions } from './node.js';
import type { RestoredNode } from '../src/ldk/index.js';

export class HarnessTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HarnessTimeoutError';
  }
}

export interface OpenChannelOptions {
  capacitySat?: bigint;
  pushMsat?: bigint;
  /** The acceptor trusts the opener and the channel is usable before any confirmation. */
  zeroConf?: boolean;
  /** Blocks mined after the funding transaction appears (ignored for zero-conf). Default 6. */
  confirmations?: number;
  timeoutMs?: number;
}

export interface OpenedChannel {
  channelId: string;
  /** LDK's monitor name of the channel (`<funding txid>_<index>`). */
  monitorName: string;
  fundingTxid: string;
  fundingIndex: number;
  capacitySat: bigint;
}

export interface PaymentHandle {
  from: WalletNode;
  to: WalletNode;
  paymentHash: string;
  paymentId: Uint8Array;
  amountMsat: bigint;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Described in the timeout error. */
  what?: string;
}

const DEFAULT_TIMEOUT_MS = 20_000;
/** Idle pump wake-up: catches anything that changed without an explicit wake. */
const IDLE_POLL_MS = 5;
/** How often LDK's timers run (LDK suggests about once a minute in production). */
const TIMER_TICK_MS = 10_000;

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export class WalletNetwork {
  readonly chain: SyntheticChain;
  private readonly nodes = new Map<string, WalletNode>();
  private connections: { a: WalletNode; b: WalletNode; conn: MemoryConnection }[] = [];
  private running: Promise<void> | undefined;
  private stopping = false;
  private wakeUp: (() => void) | undefined;
  private roundWaiters: (() => void)[] = [];
  private lastTick = Date.now();
  private lastFullRound = 0;
  /** Nodes with news since their last poll (see `pass`). */
  private readonly dirty = new Set<WalletNode>();
  /** Pump errors (an exception in a node) stop the pump and fail every wait. */
  private pumpError: Error | undefined;

  private constructor() {
    const genesis = ldk.BestBlock.constructor_from_network(ldk.Network.LDKNetwork_Regtest);
    this.chain = new SyntheticChain(genesis.get_block_hash());
  }

  /** Loads LDK (once per process) and returns an empty network with a fresh regtest chain. */
  static async create(): Promise<WalletNetwork> {
    await initLdk();
    return new WalletNetwork();
  }

  /** Adds a fresh node at the current chain tip. */
  addNode(options: WalletNodeOptions): WalletNode {
    if (this.nodes.get(options.name) && !this.nodes.get(options.name)!.crashed) throw new Error(`node ${options.name} already exists`);
    const node = WalletNode.create(this.chain, options);
    this.register(node);
    return node;
  }

  /**
   * Restores a node from its store (same seed) in place of a crashed or removed one, synced
   * to the chain tip. Reconnect it to peers with `connect`.
   */
  async restoreNode(options: WalletNodeOptions & { seed: Uint8Array }): Promise<{ node: WalletNode; restored: RestoredNode }> {
    const existing = this.nodes.get(options.name);
    if (existing && !existing.crashed) throw new Error(`node ${options.name} is still running; crash it first`);
    const result = await WalletNode.restore(this.chain, options);
    this.register(result.node);
    return result;
  }

  private register(node: WalletNode): void {
    this.nodes.set(node.name, node);
    this.dirty.add(node);
    node.on('activity', () => {
      this.dirty.add(node);
      this.wake();
    });
  }

  node(name: string): WalletNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  liveNodes(): WalletNode[] {
    return [...this.nodes.values()].filter((n) => !n.crashed);
  }

  // ---- pump ----

  /** Starts the background pump. */
  start(): void {
    if (this.running) return;
    this.stopping = false;
    this.running = this.pump();
  }

  /** Stops the pump (nodes stay as they are). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.running;
    this.running = undefined;
  }

  /** Stops the pump and every node's persistence. */
  async shutdown(): Promise<void> {
    await this.stop();
    for (const { conn } of this.connections) conn.close();
    await Promise.all(this.liveNodes().map((n) => n.crash()));
  }

  private wake(): void {
    this.wakeUp?.();
  }

  /** One synchronous round over every live node and connection. */
  round(): boolean {
    return this.pass(true);
  }

  /**
   * One round. `all` polls every node; otherwise only nodes with news since their last poll
   * (their own activity, bytes delivered to them, or work left from their last poll). The
   * pump polls everyone at least every IDLE_POLL_MS, which catches anything else.
   */
  private pass(all: boolean): boolean {
    let didWork = false;
    if (all) this.lastFullRound = Date.now();
    for (const node of this.liveNodes()) {
      if (!all && !this.dirty.has(node)) continue;
      this.dirty.delete(node);
      if (node.poll()) {
        didWork = true;
        this.dirty.add(node);
      }
    }
    for (const { a, b, conn } of this.connections) {
      if (conn.deliver()) {
        didWork = true;
        this.dirty.add(a);
        this.dirty.add(b);
      }
    }
    if (Date.now() - this.lastTick >= TIMER_TICK_MS) {
      this.lastTick = Date.now();
      for (const node of this.liveNodes()) {
        node.timerTick();
        this.dirty.add(node);
      }
    }
    return didWork;
  }

  private async pump(): Promise<void> {
    try {
      while (!this.stopping) {
        const didWork = this.pass(Date.now() - this.lastFullRound >= IDLE_POLL_MS);
        for (const resolve of this.roundWaiters.splice(0)) resolve();
        if (!didWork) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, IDLE_POLL_MS);
            function done(): void {
              clearTimeout(timer);
              resolve();
            }
            this.wakeUp = done;
          });
          this.wakeUp = undefined;
        }
        // Always give the event loop a full turn: wake-ups come from promise callbacks, and
        // round -> wake -> round in microtasks alone would starve timers and I/O.
        await new Promise((r) => setImmediate(r));
      }
    } catch (err) {
      this.pumpError = err instanceof Error ? err : new Error(String(err));
      for (const resolve of this.roundWaiters.splice(0)) resolve();
    }
  }

  /** Resolves after the pump's next round (it is not woken for this: waiting must not spin). */
  private nextRound(): Promise<void> {
    return new Promise((resolve) => this.roundWaiters.push(resolve));
  }

  /**
   * Waits until `predicate` holds, checking after every pump round. Without a running pump
   * it drives rounds itself. Rejects with HarnessTimeoutError (with a state summary) on timeout.
   */
  async waitFor(predicate: () => boolean, options: WaitOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.pumpError) throw this.pumpError;
      if (predicate()) return;
      if (Date.now() > deadline) {
        throw new HarnessTimeoutError(`timed out after ${timeoutMs} ms waiting for ${options.what ?? 'a condition'}\n${this.describe()}`);
      }
      if (this.running) {
        await Promise.race([this.nextRound(), new Promise((r) => setTimeout(r, IDLE_POLL_MS * 4))]);
      } else {
        const didWork = this.round();
        await new Promise((r) => (didWork ? setImmediate(r) : setTimeout(r, 1)));
      }
    }
  }

  /** Runs the network for `ms` (e.g. to show that nothing happens during an outage). */
  async runFor(ms: number): Promise<void> {
    const until = Date.now() + ms;
    await this.waitFor(() => Date.now() >= until, { timeoutMs: ms + 5_000, what: `${ms} ms to pass` });
  }

  /** A multi-line summary of every node's channels, payments and pending monitor updates. */
  describe(): string {
    return [...this.nodes.values()]
      .map((n) => {
        if (n.crashed) return `  ${n.name}: crashed`;
        const chans = n
          .channels()
          .map((c) => `${hex(c.get_channel_id().get_a()).slice(0, 8)} ready=${c.get_is_channel_ready()} usable=${c.get_is_usable()} out=${c.get_outbound_capacity_msat()}`)
          .join(', ');
        const pending = n.pendingMonitorUpdates().map((p) => `${p.outpoint.slice(0, 8)}:[${p.updateIds.join(',')}]`);
        const pays = [...n.payments.values()].filter((p) => p.status === 'pending').length;
        return `  ${n.name}: height=${n.bestHeight} peers=${n.peerManager.list_peers().length} channels={${chans}} pendingMonitorUpdates=${pending.join(' ') || 'none'} pendingPayments=${pays}`;
      })
      .join('\n');
  }

  // ---- peers ----

  /** Connects two nodes and waits for the handshake. */
  async connect(a: WalletNode, b: WalletNode, options: WaitOptions = {}): Promise<void> {
    const conn = MemoryConnection.open(a.peerManager, b.peerManager, b.nodeId, () => this.wake());
    this.connections.push({ a, b, conn });
    const connected = (x: WalletNode, y: WalletNode): boolean => x.peerManager.list_peers().some((p) => hex(p.get_counterparty_node_id()) === y.nodeIdHex);
    await this.waitFor(() => connected(a, b) && connected(b, a), { what: `${a.name} <-> ${b.name} connected`, ...options });
  }

  /** Bytes `from` has delivered to `to` over their open connections (encrypted wire bytes). */
  bytesSent(from: WalletNode, to: WalletNode): number {
    return this.connections
      .filter((c) => (c.a === from && c.b === to) || (c.a === to && c.b === from))
      .reduce((n, c) => n + c.conn.bytesSentBy(from.peerManager), 0);
  }

  /** Closes every connection between the two nodes (both sides are told). */
  disconnect(a: WalletNode, b: WalletNode): void {
    for (const entry of this.connections) {
      if ((entry.a === a && entry.b === b) || (entry.a === b && entry.b === a)) entry.conn.close();
    }
    this.connections = this.connections.filter((c) => c.conn.isOpen);
  }

  /** Crashes a node: it is never called again, its persistence stops, peers see the socket close. */
  async crash(node: WalletNode): Promise<void> {
    for (const entry of this.connections) if (entry.a === node || entry.b === node) entry.conn.dropSide(node.peerManager);
    this.connections = this.connections.filter((c) => c.conn.isOpen);
    await node.crash();
  }

  // ---- chain ----

  /** Mines `count` blocks (the first with every broadcast transaction) and feeds them to every live node. */
  mine(count = 1): void {
    for (const block of this.chain.mineBlocks(count)) {
      for (const node of this.liveNodes()) node.connectBlock(block);
    }
    for (const node of this.liveNodes()) this.dirty.add(node);
    this.wake();
  }

  // ---- channels ----

  /**
   * Opens a channel from `a` to `b` funded with a synthetic transaction and waits until it is
   * usable on both sides. Normal channels are confirmed by mining; zero-conf ones are not.
   */
  async openChannel(a: WalletNode, b: WalletNode, options: OpenChannelOptions = {}): Promise<OpenedChannel> {
    const capacitySat = options.capacitySat ?? 1_000_000n;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (options.zeroConf) b.trustedZeroConfPeers.add(a.nodeIdHex);
    const res = a.channelManager.create_channel(b.nodeId, capacitySat, options.pushMsat ?? 0n, BigInt(`0x${hex(randomBytes(8))}`), null, null);
    if (!(res instanceof ldk.Result_ChannelIdAPIErrorZ_OK)) throw new Error(`${a.name}: create_channel failed: ${describeApiError(res)}`);
    const temporaryId = hex(res.res.get_a());
    // The opener broadcasts the funding transaction once the counterparty signed and its own
    // monitor is persisted.
    const fundingTxid = (): string | undefined => {
      const tx = a.fundingTransactions.get(temporaryId);
      return tx && a.broadcasts.some((b) => txidHex(b) === txidHex(tx)) ? txidHex(tx) : undefined;
    };
    await this.waitFor(() => fundingTxid() !== undefined, { timeoutMs, what: `funding of channel ${temporaryId.slice(0, 8)} broadcast by ${a.name}` });
    const txid = fundingTxid()!;
    const details = a.channels().find((c) => displayHex(c.get_funding_txo().get_txid()) === txid);
    if (!details) throw new Error(`${a.name}: channel vanished after funding`);
    if (!options.zeroConf) this.mine(options.confirmations ?? 6);
    const channelId = hex(details.get_channel_id().get_a());
    const usableOn = (n: WalletNode): boolean => n.channelManager.list_usable_channels().some((c) => hex(c.get_channel_id().get_a()) === channelId);
    await this.waitFor(() => usableOn(a) && usableOn(b), { timeoutMs, what: `channel ${channelId.slice(0, 8)} usable on ${a.name} and ${b.name}` });
    const txo = details.get_funding_txo();
    const fundingIndex = txo.get_index();
    return { channelId, monitorName: `${txid}_${fundingIndex}`, fundingTxid: txid, fundingIndex, capacitySat };
  }

  // ---- payments ----

  /** Starts a payment from `from` to `to` (an invoice-style payment over direct channels). */
  sendPayment(from: WalletNode, to: WalletNode, amountMsat: bigint): PaymentHandle {
    const inbound = to.channelManager.create_inbound_payment(ldk.Option_u64Z.constructor_some(amountMsat), 3600, ldk.Option_u16Z.constructor_none());
    if (!(inbound instanceof ldk.Result_C2Tuple_ThirtyTwoBytesThirtyTwoBytesZNoneZ_OK)) throw new Error(`${to.name}: create_inbound_payment failed`);
    const paymentHash = inbound.res.get_a();
    const secret = inbound.res.get_b();
    const paymentId = randomBytes(32);
    const params = ldk.RouteParameters.constructor_from_payment_params_and_value(ldk.PaymentParameters.constructor_from_node_id(to.nodeId, 40), amountMsat);
    const hashHex = hex(paymentHash);
    from.payments.set(hashHex, { paymentHash: hashHex, direction: 'outbound', amountMsat, status: 'pending' });
    const sent = from.channelManager.send_payment(paymentHash, ldk.RecipientOnionFields.constructor_secret_only(secret), paymentId, params, ldk.Retry.constructor_attempts(3));
    if (!sent.is_ok()) {
      from.payments.set(hashHex, { paymentHash: hashHex, direction: 'outbound', amountMsat, status: 'failed', failureReason: 'send_payment refused' });
      throw new Error(`${from.name}: send_payment failed`);
    }
    this.dirty.add(from);
    this.wake();
    return { from, to, paymentHash: hashHex, paymentId, amountMsat };
  }

  /** Status of a payment on the sender and the receiver. */
  paymentState(handle: PaymentHandle): { sender?: PaymentRecord; receiver?: PaymentRecord } {
    return { sender: handle.from.payments.get(handle.paymentHash), receiver: handle.to.payments.get(handle.paymentHash) };
  }

  /**
   * True when no HTLC is in flight on any channel between the two nodes and neither has
   * monitor updates pending: every commitment dance is over.
   */
  quiescent(a: WalletNode, b: WalletNode): boolean {
    const idle = (x: WalletNode, y: WalletNode): boolean =>
      x
        .channels()
        .filter((c) => hex(c.get_counterparty().get_node_id()) === y.nodeIdHex)
        .every((c) => c.get_pending_inbound_htlcs().length === 0 && c.get_pending_outbound_htlcs().length === 0);
    return idle(a, b) && idle(b, a) && a.pendingMonitorUpdates().length === 0 && b.pendingMonitorUpdates().length === 0;
  }

  /**
   * Waits until the sender saw PaymentSent and the receiver PaymentClaimed. With
   * `settled`, also until the channel is quiescent (see `quiescent`).
   */
  async waitForPayment(handle: PaymentHandle, options: WaitOptions & { settled?: boolean } = {}): Promise<void> {
    await this.waitFor(
      () => {
        const { sender, receiver } = this.paymentState(handle);
        if (sender?.status === 'failed') throw new Error(`payment ${handle.paymentHash.slice(0, 8)} failed: ${sender.failureReason}`);
        const done = sender?.status === 'succeeded' && receiver?.status === 'succeeded';
        if (!done || !options.settled) return done;
        return this.quiescent(handle.from, handle.to);
      },
      { what: `payment ${handle.paymentHash.slice(0, 8)} ${handle.from.name} -> ${handle.to.name}`, ...options },
    );
  }

  /** Sends a payment and waits for it (see `waitForPayment`). */
  async pay(from: WalletNode, to: WalletNode, amountMsat: bigint, options: WaitOptions & { settled?: boolean } = {}): Promise<PaymentHandle> {
    const handle = this.sendPayment(from, to, amountMsat);
    await this.waitForPayment(handle, options);
    return handle;
  }
}

function describeApiError(res: ldk.Result_ChannelIdAPIErrorZ): string {
  if (res instanceof ldk.Result_ChannelIdAPIErrorZ_Err) {
    const err = res.err as ldk.APIError & { err?: string };
    return `${err.constructor.name}${err.err ? `: ${err.err}` : ''}`;
  }
  return 'unknown';
}
