/**
 * A wallet in its own process, so it can be killed for real (SIGKILL: no handler, no flush,
 * no last write) and restored in a fresh process from its seed and store id alone.
 *
 * The child runs one LDK node persisting to a VSS server through VssPersister + VssStore.
 * The parent keeps the chain and the counterparty: it sends the child the chain's blocks,
 * the child dials the counterparty over TCP (`TcpPeerListener` in the parent), and
 * transactions the child broadcasts come back to the parent's chain. Commands and reports
 * travel over the IPC channel (structured clone: bytes and bigints as they are).
 *
 * Parent side: `ChildWallet.spawn()`, then `start(...)`, `openChannel`, `pay`, `state`,
 * `kill()`. Child side: this module run with `LDK_VSS_CHILD_WALLET=1` (what `spawn` does).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as ldk from 'lightningdevkit';
import type { Block, SyntheticChain } from './chain.js';
import { txidHex } from './chain.js';
import { TcpPeerLink } from './tcp-peers.js';
import { payInvoice, type InvoiceData } from './wallet-ops.js';
import { WalletFleet, type Wallet } from './wallets.js';
import { vssStoreOpener } from './vss-wallet.js';
import type { WriteKind } from './crash-store.js';

export interface ChildStartOptions {
  mode: 'create' | 'restore';
  name: string;
  seed: Uint8Array;
  storeId: string;
  serverUrl: string;
  /** The counterparty to dial. */
  peer: { host: string; port: number; nodeId: Uint8Array };
}

export interface ChildChannelState {
  channelId: string;
  outboundMsat: bigint;
  inboundMsat: bigint;
  pendingHtlcs: number;
  usable: boolean;
}

export interface ChildState {
  nodeId: string;
  channels: ChildChannelState[];
  pendingMonitorUpdates: number;
  closures: { channelId: string; reason: string }[];
  payments: { paymentHash: string; status: string }[];
}

export interface ChildStarted {
  nodeId: string;
  /** Set when the child restored from the store. */
  restore?: { monitors: number; updatesApplied: number; bytesRead: number; durationMs: number };
}

/** Reports the child pushes to the parent. */
export type ChildReport =
  | { type: 'broadcast'; tx: Uint8Array }
  | { type: 'payment'; paymentHash: string; status: 'sent' | 'failed' }
  | { type: 'write'; kind: WriteKind; key: string; bytes: number };

type Request =
  | { type: 'start'; options: ChildStartOptions; blocks: Block[] }
  | { type: 'blocks'; blocks: Block[] }
  | { type: 'open-channel'; capacitySat: bigint; pushMsat: bigint }
  | { type: 'wait-usable'; count: number }
  | { type: 'pay'; invoice: InvoiceData }
  | { type: 'kill-after-writes'; count: number }
  | { type: 'state' };

type Envelope = { id: number; request: Request };
type Reply = { type: 'reply'; id: number; result?: unknown; error?: string };

const CHILD_ENV = 'LDK_VSS_CHILD_WALLET';
/** How much of a child's stderr is kept, and how many of its last lines an error quotes. */
const STDERR_TAIL_CHARS = 8_192;
const STDERR_TAIL_LINES = 12;

// ================================= parent side =================================

export class ChildWalletError extends Error {
  override name = 'ChildWalletError';
}

export interface ChildWalletEvents {
  report: [ChildReport];
  exit: [{ code: number | null; signal: NodeJS.Signals | null }];
}

export class ChildWallet extends EventEmitter<ChildWalletEvents> {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private syncedHeight = 0;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The end of what the child wrote to stderr: why it died, if it says. */
  private stderrTail = '';

  private constructor(readonly process: ChildProcess) {
    super();
    // The child's stderr is piped only to keep its tail; it is still shown as if inherited.
    process.stderr?.on('data', (chunk: Buffer) => {
      globalThis.process.stderr.write(chunk);
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL_CHARS);
    });
    process.on('message', (message: Reply | ChildReport) => {
      if (message.type === 'reply') {
        const waiter = this.waiting.get(message.id);
        this.waiting.delete(message.id);
        if (message.error !== undefined) waiter?.reject(new ChildWalletError(message.error));
        else waiter?.resolve(message.result);
      } else {
        this.emit('report', message);
      }
    });
    this.exited = new Promise((resolve) => {
      const exited = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (this.exitInfo) return;
        this.exitInfo = { code, signal };
        for (const w of this.waiting.values()) w.reject(new ChildWalletError(`child wallet exited (${signal ?? code}) before answering${this.exitReason()}`));
        this.waiting.clear();
        this.emit('exit', this.exitInfo);
        resolve(this.exitInfo);
      };
      // 'exit' can come before the last of stderr has been read: wait for the stream to end
      // (briefly: a stream held open elsewhere must not hold up the exit).
      process.on('exit', (code, signal) => {
        const stderr = process.stderr;
        if (!stderr || stderr.readableEnded || stderr.destroyed) return exited(code, signal);
        const timer = setTimeout(() => exited(code, signal), 1_000);
        stderr.once('close', () => {
          clearTimeout(timer);
          exited(code, signal);
        });
      });
      // Without a listener, a ChildProcess 'error' (a send on a closed channel, a failed spawn or
      // kill) would be an uncaught exception in the parent. Sends report theirs to their caller;
      // a process that never started is over: no 'exit' will come.
      process.on('error', () => {
        if (process.pid === undefined) exited(null, null);
      });
    });
  }

  /** Starts a child process running this module under tsx. */
  static spawn(): ChildWallet {
    const child = fork(fileURLToPath(import.meta.url), [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, [CHILD_ENV]: '1' },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    return new ChildWallet(child);
  }

  /** Why the child died, for an error: the last lines it wrote to stderr, if any. */
  private exitReason(): string {
    const lines = this.stderrTail.trimEnd().split('\n').slice(-STDERR_TAIL_LINES).join('\n').trim();
    return lines === '' ? '' : `; its stderr ended with:\n${lines}`;
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  private request<T>(request: Request, timeoutMs = 60_000): Promise<T> {
    if (this.exitInfo) return Promise.reject(new ChildWalletError(`child wallet has exited (${this.exitInfo.signal ?? this.exitInfo.code})${this.exitReason()}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new ChildWalletError(`child wallet did not answer ${request.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      // The callback gets the error of a send that cannot go out (e.g. the IPC channel is
      // closing); without it Node emits that error on the ChildProcess instead.
      this.process.send({ id, request } satisfies Envelope, (error) => {
        if (error === null || !this.waiting.has(id)) return;
        this.waiting.get(id)!.reject(new ChildWalletError(`cannot send ${request.type} to the child wallet: ${error.message}`));
        this.waiting.delete(id);
      });
    });
  }

  /** Creates or restores the wallet, synced to `chain`, and connects it to its peer. */
  async start(options: ChildStartOptions, chain: SyntheticChain): Promise<ChildStarted> {
    const blocks = chain.blocksAfter(0);
    this.syncedHeight = chain.height;
    return this.request<ChildStarted>({ type: 'start', options, blocks });
  }

  /** Sends the child every block of `chain` it has not seen. */
  async syncBlocks(chain: SyntheticChain): Promise<void> {
    const blocks = chain.blocksAfter(this.syncedHeight);
    if (blocks.length === 0) return;
    this.syncedHeight = chain.height;
    await this.request({ type: 'blocks', blocks });
  }

  /** Starts a channel open to the peer; resolves with the funding txid once broadcast. */
  openChannel(capacitySat: bigint, pushMsat = 0n): Promise<{ fundingTxid: string }> {
    return this.request({ type: 'open-channel', capacitySat, pushMsat });
  }

  waitUsable(count = 1): Promise<void> {
    return this.request({ type: 'wait-usable', count });
  }

  /** Hands the invoice to the child's node (the outcome arrives as a `payment` report). */
  pay(invoice: InvoiceData): Promise<void> {
    return this.request({ type: 'pay', invoice });
  }

  state(): Promise<ChildState> {
    return this.request({ type: 'state' });
  }

  /**
   * Arms a real crash inside the child: it SIGKILLs itself right after its `count`-th durable
   * write from now (counting each write of a batch), before the code that made the write hears
   * back. Wait for it with `waitExit()`.
   */
  killAfterWrites(count: number): Promise<void> {
    if (!Number.isInteger(count) || count < 1) return Promise.reject(new RangeError(`count must be a positive integer, got ${count}`));
    return this.request({ type: 'kill-after-writes', count });
  }

  /** Resolves when the child process has exited, however it ended. */
  waitExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.exited;
  }

  /** Kills the process (SIGKILL by default) and waits until it is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.exitInfo) this.process.kill(signal);
    return this.exited;
  }

  /** Asks the child to exit by closing the IPC channel (it exits on disconnect). */
  async stop(): Promise<void> {
    if (this.exitInfo) return;
    this.process.disconnect();
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}

// ================================= child side =================================

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

class ChildRuntime {
  private fleet: WalletFleet | undefined;
  private wallet: Wallet | undefined;
  private link: TcpPeerLink | undefined;
  private peerNodeId: Uint8Array | undefined;
  private reportedBroadcasts = 0;

  private send(message: Reply | ChildReport): void {
    process.send?.(message);
  }

  listen(): void {
    process.on('message', (envelope: Envelope) => {
      this.handle(envelope.request).then(
        (result) => this.send({ type: 'reply', id: envelope.id, result }),
        (err: unknown) => this.send({ type: 'reply', id: envelope.id, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
      );
    });
    process.on('disconnect', () => process.exit(0));
  }

  private node() {
    if (!this.wallet) throw new Error('wallet not started');
    return this.wallet.node;
  }

  private async handle(request: Request): Promise<unknown> {
    switch (request.type) {
      case 'start':
        return this.start(request.options, request.blocks);
      case 'blocks':
        for (const block of request.blocks) {
          this.fleet!.net.chain.append(block);
          this.node().connectBlock(block);
        }
        this.node().emit('activity');
        return undefined;
      case 'open-channel':
        return this.openChannel(request.capacitySat, request.pushMsat);
      case 'wait-usable':
        await this.fleet!.net.waitFor(() => this.node().channelManager.list_usable_channels().length >= request.count, { what: 'usable channels', timeoutMs: 30_000 });
        return undefined;
      case 'pay':
        payInvoice(this.node(), request.invoice, randomBytes(32));
        return undefined;
      case 'kill-after-writes': {
        let seen = 0;
        // Runs after the write is durable and before its caller learns it (CrashableStore's
        // onWrite); SIGKILL to itself ends the process here, with no handler and no flush.
        this.wallet!.store.onWrite(() => {
          if (++seen === request.count) process.kill(process.pid, 'SIGKILL');
        });
        return undefined;
      }
      case 'state':
        return this.state();
    }
  }

  private async start(options: ChildStartOptions, blocks: Block[]): Promise<ChildStarted> {
    this.fleet = await WalletFleet.create(vssStoreOpener({ serverUrl: options.serverUrl }));
    for (const block of blocks) this.fleet.net.chain.append(block);
    const identity = { name: options.name, seed: options.seed, storeId: options.storeId };
    this.wallet = options.mode === 'create' ? await this.fleet.addWallet(options.name, identity) : await this.fleet.restoreFrom(identity);
    const node = this.wallet.node;
    node.on('event', (event) => {
      if (event instanceof ldk.Event_PaymentSent) this.send({ type: 'payment', paymentHash: hex(event.payment_hash), status: 'sent' });
      if (event instanceof ldk.Event_PaymentFailed && event.payment_hash instanceof ldk.Option_ThirtyTwoBytesZ_Some) {
        this.send({ type: 'payment', paymentHash: hex(event.payment_hash.some), status: 'failed' });
      }
    });
    node.on('activity', () => {
      while (this.reportedBroadcasts < node.broadcasts.length) this.send({ type: 'broadcast', tx: node.broadcasts[this.reportedBroadcasts++] });
    });
    this.wallet.store.onWrite((w) => this.send({ type: 'write', kind: w.kind, key: `${w.key.primaryNamespace}/${w.key.secondaryNamespace}/${w.key.key}`, bytes: w.bytes }));
    this.peerNodeId = options.peer.nodeId;
    this.link = await TcpPeerLink.connect(node.peerManager, options.peer.nodeId, options.peer.host, options.peer.port, () => node.emit('activity'));
    const peerHex = hex(options.peer.nodeId);
    await this.fleet.net.waitFor(() => node.peerManager.list_peers().some((p) => hex(p.get_counterparty_node_id()) === peerHex), { what: 'peer connected', timeoutMs: 30_000 });
    return { nodeId: node.nodeIdHex, restore: this.wallet.restoreStats };
  }

  private async openChannel(capacitySat: bigint, pushMsat: bigint): Promise<{ fundingTxid: string }> {
    const node = this.node();
    const res = node.channelManager.create_channel(this.peerNodeId!, capacitySat, pushMsat, BigInt(`0x${randomBytes(8).toString('hex')}`), null, null);
    if (!(res instanceof ldk.Result_ChannelIdAPIErrorZ_OK)) throw new Error('create_channel failed');
    const temporaryId = hex(res.res.get_a());
    let txid: string | undefined;
    await this.fleet!.net.waitFor(
      () => {
        const tx = node.fundingTransactions.get(temporaryId);
        txid = tx && node.broadcasts.some((b) => txidHex(b) === txidHex(tx)) ? txidHex(tx) : undefined;
        return txid !== undefined;
      },
      { what: 'funding broadcast', timeoutMs: 30_000 },
    );
    return { fundingTxid: txid! };
  }

  private state(): ChildState {
    const node = this.node();
    return {
      nodeId: node.nodeIdHex,
      channels: node.channels().map((c) => ({
        channelId: hex(c.get_channel_id().get_a()),
        outboundMsat: c.get_outbound_capacity_msat(),
        inboundMsat: c.get_inbound_capacity_msat(),
        pendingHtlcs: c.get_pending_inbound_htlcs().length + c.get_pending_outbound_htlcs().length,
        usable: Boolean(c.get_is_usable()),
      })),
      pendingMonitorUpdates: node.pendingMonitorUpdates().length,
      closures: [...node.closures],
      payments: [...node.payments.values()].map((p) => ({ paymentHash: p.paymentHash, status: p.status })),
    };
  }
}

if (process.env[CHILD_ENV] === '1' && process.send) {
  new ChildRuntime().listen();
}
