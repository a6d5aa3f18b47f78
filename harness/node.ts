/**
 * One in-process LDK node of the harness network: keys, ChainMonitor, ChannelManager,
 * PeerManager and an event handler that does what a simple wallet does (fund channels with
 * synthetic transactions, accept inbound channels, claim payments, record outcomes).
 *
 * All LDK callbacks only record or queue; work that calls back into LDK runs from `poll()`.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import * as ldk from 'lightningdevkit';
import { LdkEventLoop, ManagerOrderedBroadcaster, restoreNode, silentLogger, type PersistenceLogger, type RestoredNode } from '../src/ldk/index.js';
import { displayHex, syntheticFundingTransaction, txidHex, type Block, type SyntheticChain } from './chain.js';
import type { NodeContext, NodePersistence, PersistenceFactory } from './persistence.js';
import { memoryPersistence } from './persistence.js';

export type PaymentStatus = 'pending' | 'succeeded' | 'failed';

export interface PaymentRecord {
  paymentHash: string;
  direction: 'outbound' | 'inbound';
  amountMsat: bigint;
  status: PaymentStatus;
  preimage?: string;
  failureReason?: string;
}

export interface WalletNodeOptions {
  name: string;
  /** 32-byte seed; the node's identity and keys. Random by default. */
  seed?: Uint8Array;
  persistence?: PersistenceFactory;
  /** Adjusts LDK's UserConfig (defaults: inbound channels accepted manually by the harness). */
  configure?: (config: ldk.UserConfig) => void;
  /** LDK log lines at or above this level go to stderr. Default: errors only. */
  logLevel?: ldk.Level;
  /** Fee rate every estimate returns, sat per 1000 weight. Default 253 (the floor). */
  feeRateSatPerKw?: number;
  /** Where the node's persistence reports retries and failures. Default: silent. */
  log?: PersistenceLogger;
}

export interface WalletNodeEvents {
  /** Every LDK event, after the node's own handling (inside LDK's event processing). */
  event: [ldk.Event];
  /** Something happened that a waiting test or pump may care about. */
  activity: [];
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function levelName(level: ldk.Level): string {
  return ldk.Level[level]?.replace('LDKLevel_', '') ?? String(level);
}

export class WalletNode extends EventEmitter<WalletNodeEvents> {
  readonly name: string;
  readonly seed: Uint8Array;
  readonly keysManager: ldk.KeysManager;
  readonly logger: ldk.Logger;
  readonly loggerImpl: ldk.LoggerInterface;
  readonly feeEstimator: ldk.FeeEstimator;
  readonly broadcaster: ldk.BroadcasterInterface;
  readonly orderedBroadcaster: ManagerOrderedBroadcaster;
  readonly config: ldk.UserConfig;
  readonly router: ldk.Router;
  readonly messageRouter: ldk.MessageRouter;
  readonly networkGraph: ldk.NetworkGraph;
  readonly persistence: NodePersistence;
  chainMonitor!: ldk.ChainMonitor;
  channelManager!: ldk.ChannelManager;
  peerManager!: ldk.PeerManager;
  /** Drives events and manager persistence (absent for nodes that never persist the manager). */
  eventLoop: LdkEventLoop | undefined;
  readonly nodeId: Uint8Array;
  readonly nodeIdHex: string;
  /** Payments by payment hash (hex). */
  readonly payments = new Map<string, PaymentRecord>();
  /** Transactions this node broadcast, in order. */
  readonly broadcasts: Uint8Array[] = [];
  /** Channel closures seen (reason as LDK's debug name). */
  readonly closures: { channelId: string; reason: string }[] = [];
  readonly spendableOutputs: ldk.SpendableOutputDescriptor[] = [];
  /** Peers (node id hex) whose inbound channels are accepted as zero-conf. */
  readonly trustedZeroConfPeers = new Set<string>();
  /** Funding transactions built by this node, by temporary channel id (hex). */
  readonly fundingTransactions = new Map<string, Uint8Array>();
  private crashedFlag = false;
  private forwardsPending = false;
  private readonly handler: ldk.EventHandler;
  private eventsHandled = 0;
  private readonly log: PersistenceLogger;

  private constructor(options: WalletNodeOptions, private readonly chain: SyntheticChain) {
    super();
    this.log = options.log ?? silentLogger;
    this.name = options.name;
    this.seed = options.seed ?? randomBytes(32);
    if (this.seed.length !== 32) throw new RangeError('seed must be 32 bytes');
    const now = Date.now();
    // Starting time must differ on every start with the same seed (LDK derives ephemeral keys from it).
    this.keysManager = ldk.KeysManager.constructor_new(this.seed, BigInt(Math.floor(now / 1000)), (now % 1000) * 1_000_000 + Math.floor(Math.random() * 1_000_000));
    const minLevel = options.logLevel ?? ldk.Level.LDKLevel_Error;
    const name = this.name;
    this.loggerImpl = {
      log(record: ldk.Record): void {
        if (record.get_level() >= minLevel) console.error(`[${name}] ${levelName(record.get_level())} ${record.get_module_path()}: ${record.get_args()}`);
      },
    };
    this.logger = ldk.Logger.new_impl(this.loggerImpl);
    const feeRate = options.feeRateSatPerKw ?? 253;
    this.feeEstimator = ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => feeRate });
    // Transactions leave once a ChannelManager that knows them is durable (when the node
    // persists its manager through an LdkEventLoop; at once otherwise).
    this.orderedBroadcaster = new ManagerOrderedBroadcaster(
      (txs) => {
        // A crashed node sends nothing more, whatever was still held for it.
        if (this.crashedFlag) return;
        for (const tx of txs) {
          this.broadcasts.push(tx);
          this.chain.broadcast(tx);
        }
        this.emit('activity');
      },
      { log: this.log },
    );
    this.broadcaster = this.orderedBroadcaster.broadcaster;
    this.config = ldk.UserConfig.constructor_default();
    this.config.set_manually_accept_inbound_channels(true);
    options.configure?.(this.config);
    this.networkGraph = ldk.NetworkGraph.constructor_new(ldk.Network.LDKNetwork_Regtest, this.logger);
    const scorer = ldk.ProbabilisticScorer.constructor_new(ldk.ProbabilisticScoringDecayParameters.constructor_default(), this.networkGraph, this.logger);
    const lockableScore = ldk.MultiThreadedLockableScore.constructor_new(scorer.as_Score());
    this.router = ldk.DefaultRouter.constructor_new(
      this.networkGraph,
      this.logger,
      this.keysManager.as_EntropySource(),
      lockableScore.as_LockableScore(),
      ldk.ProbabilisticScoringFeeParameters.constructor_default(),
    ).as_Router();
    this.messageRouter = ldk.DefaultMessageRouter.constructor_new(this.networkGraph, this.keysManager.as_EntropySource()).as_MessageRouter();
    const ctx: NodeContext = { name: this.name, keysManager: this.keysManager, logger: this.logger, feeEstimator: this.feeEstimator, broadcaster: this.broadcaster };
    this.persistence = (options.persistence ?? memoryPersistence())(ctx);
    const nodeId = this.keysManager.as_NodeSigner().get_node_id(ldk.Recipient.LDKRecipient_Node);
    if (!(nodeId instanceof ldk.Result_PublicKeyNoneZ_OK)) throw new Error(`${this.name}: no node id`);
    this.nodeId = nodeId.res;
    this.nodeIdHex = hex(this.nodeId);
    // Used only by nodes without manager persistence (no LdkEventLoop).
    this.handler = ldk.EventHandler.new_impl({
      handle_event: (event: ldk.Event) => {
        this.eventsHandled++;
        this.handleEvent(event);
        return ldk.Result_NoneReplayEventZ.constructor_ok();
      },
    });
  }

  /** A fresh node at the chain's current tip. */
  static create(chain: SyntheticChain, options: WalletNodeOptions): WalletNode {
    const node = new WalletNode(options, chain);
    node.chainMonitor = ldk.ChainMonitor.constructor_new(ldk.Option_FilterZ.constructor_none(), node.broadcaster, node.logger, node.feeEstimator, node.persistence.persist);
    node.persistence.vssPersister?.attach(node.chainMonitor);
    const tip = chain.tip;
    const bestBlock = ldk.BestBlock.constructor_new(tip.hash, tip.height);
    const nowSecs = Math.floor(Date.now() / 1000);
    node.channelManager = ldk.ChannelManager.constructor_new(
      node.feeEstimator,
      node.chainMonitor.as_Watch(),
      node.broadcaster,
      node.router,
      node.messageRouter,
      node.logger,
      node.keysManager.as_EntropySource(),
      node.keysManager.as_NodeSigner(),
      node.keysManager.as_SignerProvider(),
      node.config,
      ldk.ChainParameters.constructor_new(ldk.Network.LDKNetwork_Regtest, bestBlock),
      nowSecs,
    );
    node.finishSetup();
    return node;
  }

  /**
   * A node restored from its persistence's store alone (same seed), synced to the chain tip:
   * the manager and every monitor replay the blocks they missed before going live.
   */
  static async restore(chain: SyntheticChain, options: WalletNodeOptions & { seed: Uint8Array }): Promise<{ node: WalletNode; restored: RestoredNode }> {
    const node = new WalletNode(options, chain);
    const store = node.persistence.managerStore;
    if (!store) throw new Error(`${node.name}: restore needs a persistence strategy with a store`);
    const restored = await restoreNode({
      store,
      entropySource: node.keysManager.as_EntropySource(),
      nodeSigner: node.keysManager.as_NodeSigner(),
      signerProvider: node.keysManager.as_SignerProvider(),
      feeEstimator: node.feeEstimator,
      broadcaster: node.broadcaster,
      logger: node.loggerImpl,
      router: node.router,
      messageRouter: node.messageRouter,
      config: node.config,
      persister: node.persistence.vssPersister ?? node.persistence.persist,
      log: node.log,
      readMonitors: node.persistence.readMonitors,
      beforeWatch: ({ channelManager, monitors }) => {
        node.replayBlocks(channelManager.current_best_block(), (block, txdata) =>
          channelManager.as_Listen().filtered_block_connected(block.header, txdata, block.height),
        );
        for (const m of monitors) {
          node.replayBlocks(m.monitor.current_best_block(), (block, txdata) => {
            m.monitor.block_connected(block.header, txdata, block.height, node.broadcaster, node.feeEstimator, node.logger);
          });
        }
      },
    });
    node.chainMonitor = restored.chainMonitor;
    node.channelManager = restored.channelManager;
    node.finishSetup();
    return { node, restored };
  }

  private replayBlocks(best: ldk.BestBlock, connect: (block: Block, txdata: ldk.TwoTuple_usizeTransactionZ[]) => void): void {
    const height = best.get_height();
    const known = this.chain.block(height);
    if (hex(known.hash) !== hex(best.get_block_hash())) throw new Error(`${this.name}: stored best block at height ${height} is not on the harness chain`);
    for (const block of this.chain.blocksAfter(height)) connect(block, txdata(block));
  }

  private finishSetup(): void {
    const ignorer = ldk.IgnoringMessageHandler.constructor_new();
    this.peerManager = ldk.PeerManager.constructor_new(
      this.channelManager.as_ChannelMessageHandler(),
      ignorer.as_RoutingMessageHandler(),
      ignorer.as_OnionMessageHandler(),
      ignorer.as_CustomMessageHandler(),
      Math.floor(Date.now() / 1000),
      randomBytes(32),
      this.logger,
      this.keysManager.as_NodeSigner(),
    );
    const store = this.persistence.managerStore;
    if (store) {
      this.eventLoop = new LdkEventLoop({
        channelManager: this.channelManager,
        chainMonitor: this.chainMonitor,
        store,
        handleEvent: (event) => this.handleEvent(event),
        persister: this.persistence.linkManager === false ? undefined : this.persistence.vssPersister,
        backoff: this.persistence.backoff,
        log: this.log,
        broadcaster: this.orderedBroadcaster,
      });
      this.eventLoop.on('manager-persisted', () => this.emit('activity'));
      this.eventLoop.on('persist-requested', () => this.emit('activity'));
    }
    this.persistence.vssPersister?.on('durable', () => this.emit('activity'));
  }

  get crashed(): boolean {
    return this.crashedFlag;
  }

  /**
   * One non-blocking pass: pending HTLC forwards, events (and manager persistence), peer
   * messages. Returns true if anything happened.
   */
  poll(): boolean {
    if (this.crashedFlag) return false;
    let didWork = false;
    if (this.forwardsPending) {
      this.forwardsPending = false;
      this.channelManager.process_pending_htlc_forwards();
      didWork = true;
    }
    if (this.eventLoop) {
      didWork = this.eventLoop.poll() || didWork;
    } else {
      this.channelManager.get_and_clear_needs_persistence();
      const before = this.eventsHandled;
      this.chainMonitor.as_EventsProvider().process_pending_events(this.handler);
      this.channelManager.as_EventsProvider().process_pending_events(this.handler);
      didWork = this.eventsHandled > before || didWork;
    }
    this.peerManager.process_events();
    return didWork;
  }

  /** LDK's periodic timers (peer pings, payment retries, HTLC timeouts). */
  timerTick(): void {
    if (this.crashedFlag) return;
    this.channelManager.timer_tick_occurred();
    this.peerManager.timer_tick_occurred();
  }

  /** Current best block as the ChannelManager sees it. */
  get bestHeight(): number {
    return this.channelManager.current_best_block().get_height();
  }

  /** Hands one block to the ChainMonitor and the ChannelManager (continuity checked first). */
  connectBlock(block: Block): void {
    if (this.crashedFlag) return;
    const best = this.channelManager.current_best_block();
    if (block.height !== best.get_height() + 1 || hex(block.header.subarray(4, 36)) !== hex(best.get_block_hash())) {
      // LDK would panic (and poison the WASM instance) on a discontinuous block.
      throw new Error(`${this.name}: block ${block.height} does not extend best block ${best.get_height()}`);
    }
    const data = txdata(block);
    this.chainMonitor.as_Listen().filtered_block_connected(block.header, data, block.height);
    this.channelManager.as_Listen().filtered_block_connected(block.header, data, block.height);
  }

  /**
   * What a wallet's on-chain side does after a restore: takes over the funding transactions
   * it built before (`previous`, from the crashed incarnation) and sends again those a
   * channel of this node still waits for. A crash just after the ChannelManager that knows a
   * funding broadcast is durable, and before the broadcast itself, leaves the transaction
   * unsent, and LDK 0.1.0 does not send funding transactions again by itself.
   * Returns the txids sent again.
   */
  resendUnconfirmedFunding(previous: ReadonlyMap<string, Uint8Array>): string[] {
    const awaited = new Set<string>();
    for (const c of this.channels()) {
      const txo = c.get_funding_txo() as ldk.OutPoint | null;
      if (txo && !c.get_is_channel_ready()) awaited.add(displayHex(txo.get_txid()));
    }
    const sent: string[] = [];
    for (const [temporaryId, tx] of previous) {
      this.fundingTransactions.set(temporaryId, tx);
      const txid = txidHex(tx);
      if (!awaited.has(txid) || this.chain.confirmationHeight(txid) !== undefined || this.broadcasts.some((b) => txidHex(b) === txid)) continue;
      this.broadcasts.push(tx);
      this.chain.broadcast(tx);
      sent.push(txid);
    }
    if (sent.length > 0) this.emit('activity');
    return sent;
  }

  channels(): ldk.ChannelDetails[] {
    return this.channelManager.list_channels();
  }

  /** Sum of outbound capacity over usable channels, msat. */
  outboundCapacityMsat(): bigint {
    return this.channelManager.list_usable_channels().reduce((sum, c) => sum + c.get_outbound_capacity_msat(), 0n);
  }

  /** Monitor update ids LDK is still waiting on, per funding outpoint. */
  pendingMonitorUpdates(): { outpoint: string; updateIds: bigint[] }[] {
    return this.chainMonitor
      .list_pending_monitor_updates()
      .map((entry) => ({ outpoint: `${Buffer.from(entry.get_a().get_txid()).reverse().toString('hex')}_${entry.get_a().get_index()}`, updateIds: entry.get_b() }))
      .filter((e) => e.updateIds.length > 0);
  }

  /**
   * Simulates a crash: the node is never called again and its persistence stops retrying.
   * (Writes already on the wire may still land, as after a real crash.)
   */
  async crash(): Promise<void> {
    if (this.crashedFlag) return;
    this.crashedFlag = true;
    await Promise.all([this.persistence.close(), this.eventLoop?.stop()]);
  }

  // ---- event handling (inside LDK; may call ChannelManager methods) ----

  private handleEvent(event: ldk.Event): void {
    const cm = this.channelManager;
    if (event instanceof ldk.Event_FundingGenerationReady) {
      const tx = syntheticFundingTransaction(event.output_script, event.channel_value_satoshis);
      this.fundingTransactions.set(hex(event.temporary_channel_id.get_a()), tx);
      const res = cm.funding_transaction_generated(event.temporary_channel_id, event.counterparty_node_id, tx);
      if (!res.is_ok()) console.error(`[${this.name}] funding_transaction_generated failed`);
    } else if (event instanceof ldk.Event_OpenChannelRequest) {
      const peer = hex(event.counterparty_node_id);
      const userChannelId = BigInt(`0x${hex(randomBytes(8))}`);
      const res = this.trustedZeroConfPeers.has(peer)
        ? cm.accept_inbound_channel_from_trusted_peer_0conf(event.temporary_channel_id, event.counterparty_node_id, userChannelId)
        : cm.accept_inbound_channel(event.temporary_channel_id, event.counterparty_node_id, userChannelId);
      if (!res.is_ok()) console.error(`[${this.name}] accepting inbound channel failed`);
    } else if (event instanceof ldk.Event_PendingHTLCsForwardable) {
      this.forwardsPending = true;
    } else if (event instanceof ldk.Event_PaymentClaimable) {
      const hash = hex(event.payment_hash);
      this.payments.set(hash, { paymentHash: hash, direction: 'inbound', amountMsat: event.amount_msat, status: 'pending' });
      const preimage = event.purpose.preimage();
      if (preimage instanceof ldk.Option_ThirtyTwoBytesZ_Some) cm.claim_funds(preimage.some);
      else cm.fail_htlc_backwards(event.payment_hash);
    } else if (event instanceof ldk.Event_PaymentClaimed) {
      const hash = hex(event.payment_hash);
      const preimage = event.purpose.preimage();
      this.payments.set(hash, {
        paymentHash: hash,
        direction: 'inbound',
        amountMsat: event.amount_msat,
        status: 'succeeded',
        preimage: preimage instanceof ldk.Option_ThirtyTwoBytesZ_Some ? hex(preimage.some) : undefined,
      });
    } else if (event instanceof ldk.Event_PaymentSent) {
      const hash = hex(event.payment_hash);
      const prev = this.payments.get(hash);
      this.payments.set(hash, { paymentHash: hash, direction: 'outbound', amountMsat: prev?.amountMsat ?? 0n, status: 'succeeded', preimage: hex(event.payment_preimage) });
    } else if (event instanceof ldk.Event_PaymentFailed) {
      const hashOpt = event.payment_hash;
      const hash = hashOpt instanceof ldk.Option_ThirtyTwoBytesZ_Some ? hex(hashOpt.some) : undefined;
      if (hash) {
        const prev = this.payments.get(hash);
        const reason = event.reason instanceof ldk.Option_PaymentFailureReasonZ_Some ? ldk.PaymentFailureReason[event.reason.some] : 'unknown';
        this.payments.set(hash, { paymentHash: hash, direction: 'outbound', amountMsat: prev?.amountMsat ?? 0n, status: 'failed', failureReason: reason });
      }
    } else if (event instanceof ldk.Event_ChannelClosed) {
      this.closures.push({ channelId: hex(event.channel_id.get_a()), reason: event.reason.constructor.name.replace(/^ClosureReason_/, '') });
    } else if (event instanceof ldk.Event_SpendableOutputs) {
      this.spendableOutputs.push(...event.outputs);
    }
    this.emit('event', event);
    this.emit('activity');
  }
}

function txdata(block: Block): ldk.TwoTuple_usizeTransactionZ[] {
  // Index 0 would be the coinbase; synthetic blocks have none, so positions start at 1.
  return block.transactions.map((tx, i) => ldk.TwoTuple_usizeTransactionZ.constructor_new(i + 1, tx));
}
