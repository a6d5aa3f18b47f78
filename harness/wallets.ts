/**
 * Wallets that persist to a store and can be crashed and restored: the layer the end-to-end
 * tests, the demo and the benchmark drive.
 *
 * A wallet is identified by what a user keeps: its seed and its store id. Restoring opens a
 * brand-new store client from those two alone (nothing carries over from the crashed
 * instance) and rebuilds the node with `restoreNode`, then reconnects it to its peers.
 *
 * Every store is wrapped in a `CrashableStore`, so a crash can be placed at an exact
 * persistence step; a plain `crash()` drops the node and cuts its store at once (no further
 * write reaches the server).
 *
 * Atomic batches are on by default (as in production with a VssStore): VssPersister writes
 * each ChannelManager together with the monitor updates waiting for it in one request.
 * `atomicBatches: false` (per fleet, per wallet or per restore) makes the store hide
 * `writeBatch`, so the persister writes the manager first and each monitor write after it.
 */
import { randomBytes } from 'node:crypto';
import { HDKey } from '@scure/bip32';
import type { AsyncKVStore, SyncKVStore } from '../src/store/types.js';
import type { RestoredNode } from '../src/ldk/index.js';
import { CrashableStore, CrashPointCancelledError, type CrashEvent, type CrashPoint } from './crash-store.js';
import { WalletNetwork, type OpenChannelOptions, type OpenedChannel, type PaymentHandle, type WaitOptions } from './network.js';
import type { WalletNode } from './node.js';
import type { SyntheticChain } from './chain.js';
import { ldkMonitorUpdatingPersistence, vssPersistence, type PersistenceFactory, type VssPersistenceOptions } from './persistence.js';
import { PaymentLedger } from './wallet-ledger.js';

/** A store client opened for one wallet. */
export interface WalletStoreHandle {
  store: AsyncKVStore;
  /** A blocking view of the same store (needed for the `ldk-sync` mode). */
  syncStore?: () => SyncKVStore;
  /** Releases the client (called when the wallet is crashed or shut down). */
  close?: () => Promise<void>;
  /**
   * Whether this device had its own record of the store's versions (so a server that went
   * back in time would have been refused at open). Unknown if absent.
   */
  hadLocalRecord?: boolean;
}

/** What a restore used, so a wallet can tell its user. */
export interface RestoreReport {
  /** No local record of the store's versions: the server's state was taken as it is. */
  newDevice: boolean | undefined;
  /** Each channel monitor restored and the update id it is at. */
  monitors: { name: string; updateId: bigint }[];
  /** The restore's own figures. */
  stats: RestoredNode['stats'];
}

/** What a wallet can be restored from: nothing but these. */
export interface WalletIdentity {
  name: string;
  storeId: string;
  /** The wallet's 64-byte seed: LDK node keys and VSS keys both derive from it. */
  seed: Uint8Array;
}

/** Opens a fresh store client for a wallet (a real VssStore, or a test double). */
export type WalletStoreOpener = (identity: WalletIdentity) => Promise<WalletStoreHandle>;

/**
 * - `vss-persister`: monitors through VssPersister (async, InProgress until durable), the
 *   manager through the event loop.
 * - `ldk-sync`: LDK's own MonitorUpdatingPersister over the blocking store view.
 */
export type PersistenceMode = 'vss-persister' | 'ldk-sync';

export interface AddWalletOptions {
  seed?: Uint8Array;
  storeId?: string;
  mode?: PersistenceMode;
  /** VssPersister options (backoff, maximumPendingUpdates, stall threshold...). */
  persister?: VssPersistenceOptions;
  /**
   * Let the wallet's store write atomic batches when the store underneath can (default: the
   * fleet's setting, itself true by default). Restores keep the wallet's setting.
   */
  atomicBatches?: boolean;
}

export interface RestoreWalletOptions {
  mode?: PersistenceMode;
  persister?: VssPersistenceOptions;
  /** See AddWalletOptions.atomicBatches (default: the crashed instance's setting, or the fleet's). */
  atomicBatches?: boolean;
  /** Reconnect to the peers the wallet had in this fleet (default true). */
  reconnect?: boolean;
}

export interface Wallet extends WalletIdentity {
  mode: PersistenceMode;
  /** Whether atomic batches were asked for (the store offers them only if the one underneath can: see `store.atomicBatches`). */
  atomicBatches: boolean;
  node: WalletNode;
  store: CrashableStore;
  handle: WalletStoreHandle;
  /** 1 for the first instance, +1 for every restore. */
  incarnation: number;
  /** Set on restored instances. */
  restoreStats?: RestoredNode['stats'];
  restoreReport?: RestoreReport;
}

/** The 32-byte LDK KeysManager seed of a 64-byte wallet seed (as LDK Node: the BIP32 master private key). */
export function nodeSeedOf(walletSeed: Uint8Array): Uint8Array {
  if (walletSeed.length !== 64) throw new RangeError(`wallet seeds are 64 bytes, got ${walletSeed.length}`);
  const key = HDKey.fromMasterSeed(walletSeed).privateKey;
  if (!key) throw new Error('the seed has no master private key');
  return key;
}

const FAST_BACKOFF = { initialDelayMs: 20, maxDelayMs: 500 };

export interface WalletFleetOptions {
  /** Store ids are `<prefix>-<name>` unless given. */
  storeIdPrefix?: string;
  /** Default of every wallet's AddWalletOptions.atomicBatches (default true, the production path). */
  atomicBatches?: boolean;
}

export class WalletFleet {
  readonly ledger = new PaymentLedger();
  private readonly wallets = new Map<string, Wallet>();
  private readonly peers: [string, string][] = [];
  private readonly walletListeners: ((wallet: Wallet) => void)[] = [];
  /** Set once shutdown() began: armed crash points are cancelled and no new one is armed. */
  private shuttingDown = false;
  /** crashAt promises not settled yet (shutdown() settles them). */
  private readonly armedCrashes = new Set<Promise<CrashEvent>>();

  private constructor(
    readonly net: WalletNetwork,
    private readonly openStore: WalletStoreOpener,
    private readonly storeIdPrefix: string,
    /** The default of AddWalletOptions.atomicBatches. */
    readonly atomicBatches: boolean,
  ) {}

  /** A fleet on a new network (the pump is started). */
  static async create(openStore: WalletStoreOpener, options: WalletFleetOptions = {}): Promise<WalletFleet> {
    const net = await WalletNetwork.create();
    net.start();
    return new WalletFleet(net, openStore, options.storeIdPrefix ?? `wallet-${randomBytes(4).toString('hex')}`, options.atomicBatches ?? true);
  }

  /**
   * Appends the blocks of another chain this fleet's chain lacks (another "device" sees the
   * same blockchain) and hands them to the running nodes.
   */
  syncChainFrom(chain: SyntheticChain): void {
    for (const block of chain.blocksAfter(this.net.chain.height)) {
      this.net.chain.append(block);
      for (const node of this.net.liveNodes()) node.connectBlock(block);
    }
  }

  /** Called with every new wallet instance (created or restored), before it runs. */
  onWallet(listener: (wallet: Wallet) => void): void {
    this.walletListeners.push(listener);
  }

  wallet(name: string): Wallet {
    const w = this.wallets.get(name);
    if (!w) throw new Error(`no wallet ${name}`);
    return w;
  }

  node(name: string): WalletNode {
    return this.wallet(name).node;
  }

  private persistence(mode: PersistenceMode, store: CrashableStore, handle: WalletStoreHandle, options: AddWalletOptions): PersistenceFactory {
    if (mode === 'ldk-sync') {
      if (!handle.syncStore) throw new Error('the ldk-sync mode needs a store with a blocking view');
      return ldkMonitorUpdatingPersistence(handle.syncStore(), store, { maximumPendingUpdates: options.persister?.maximumPendingUpdates });
    }
    return vssPersistence(store, { backoff: FAST_BACKOFF, ...options.persister });
  }

  /** Creates a wallet with a new (or given) seed and store id. */
  async addWallet(name: string, options: AddWalletOptions = {}): Promise<Wallet> {
    if (this.wallets.has(name)) throw new Error(`wallet ${name} exists`);
    const identity: WalletIdentity = { name, seed: options.seed ?? randomBytes(64), storeId: options.storeId ?? `${this.storeIdPrefix}-${name}` };
    const handle = await this.openStore(identity);
    const atomicBatches = options.atomicBatches ?? this.atomicBatches;
    const store = new CrashableStore(handle.store, { atomicBatches });
    const mode = options.mode ?? 'vss-persister';
    let node: WalletNode;
    try {
      node = this.net.addNode({ name, seed: nodeSeedOf(identity.seed), persistence: this.persistence(mode, store, handle, options) });
    } catch (err) {
      // No wallet holds this client: let go of it (as restoreIdentity does).
      handle.close?.().catch(() => {});
      throw err;
    }
    const wallet: Wallet = { ...identity, mode, atomicBatches, node, store, handle, incarnation: 1 };
    this.wallets.set(name, wallet);
    this.ledger.track(node);
    for (const listener of this.walletListeners) listener(wallet);
    return wallet;
  }

  /** Connects two wallets (remembered: restored wallets reconnect to the same peers). */
  async connect(a: string, b: string, options: WaitOptions = {}): Promise<void> {
    if (!this.peers.some(([x, y]) => (x === a && y === b) || (x === b && y === a))) this.peers.push([a, b]);
    await this.net.connect(this.node(a), this.node(b), options);
  }

  async openChannel(from: string, to: string, options: OpenChannelOptions = {}): Promise<OpenedChannel> {
    return this.net.openChannel(this.node(from), this.node(to), options);
  }

  /** Starts a payment and records its intent in the ledger. */
  sendPayment(from: string, to: string, amountMsat: bigint): PaymentHandle {
    const handle = this.net.sendPayment(this.node(from), this.node(to), amountMsat);
    this.ledger.expect(handle.paymentHash, from, to, amountMsat);
    return handle;
  }

  async pay(from: string, to: string, amountMsat: bigint, options: WaitOptions & { settled?: boolean } = {}): Promise<PaymentHandle> {
    const handle = this.sendPayment(from, to, amountMsat);
    await this.net.waitForPayment(handle, options);
    return handle;
  }

  /**
   * Crashes a wallet now: its store is cut off (nothing more is sent, a request already on the
   * wire may land, pending operations fail) and the node is dropped without another call into it.
   */
  async crash(name: string): Promise<void> {
    const w = this.wallet(name);
    w.store.crash();
    await this.net.crash(w.node);
    this.release(w);
  }

  /**
   * Arms a crash at an exact persistence step of `name`. Resolves once the crash happened
   * (the store was cut at the step and the node dropped). Rejects with
   * `CrashPointCancelledError` if the point can no longer be reached: another crashAt replaced
   * it, it was disarmed, the wallet crashed another way first (or had already), or the fleet
   * shut down.
   */
  crashAt(name: string, point: CrashPoint): Promise<CrashEvent> {
    const w = this.wallet(name);
    if (w.mode === 'ldk-sync') {
      // LDK's MonitorUpdatingPersister writes monitors through the blocking view, which does not
      // pass through the crashable store: a crash point counting them would never fire.
      const kinds = point.kind === undefined ? undefined : Array.isArray(point.kind) ? point.kind : [point.kind];
      if (kinds === undefined || kinds.some((kind) => kind === 'monitor' || kind === 'monitor-update')) {
        return Promise.reject(new Error(`wallet ${name} runs in ldk-sync mode, whose monitor writes bypass the crash points: arm crashAt with kind 'manager' (or use a vss-persister wallet)`));
      }
    }
    if (this.shuttingDown) return Promise.reject(new CrashPointCancelledError('disarmed', `wallet ${name}: the fleet has shut down: a crash point can no longer be reached`));
    // Tracked until settled, without a handler of the fleet's own: a rejection nobody listens
    // to stays visible as such, except at shutdown (see there).
    let settled = false;
    let crash: Promise<CrashEvent> | undefined;
    const done = (): void => {
      settled = true;
      if (crash) this.armedCrashes.delete(crash);
    };
    crash = new Promise<CrashEvent>((settle, fail) => {
      const resolve = (event: CrashEvent): void => {
        done();
        settle(event);
      };
      const reject = (err: unknown): void => {
        done();
        fail(err);
      };
      // Superseded, disarmed, or the wallet crashed another way first: say so (a throw here,
      // for a wallet already crashed, rejects too).
      const cancelled = (err: CrashPointCancelledError): void => {
        const context = this.shuttingDown ? `wallet ${name}: the fleet shut down: ` : `wallet ${name}: `;
        reject(new CrashPointCancelledError(err.reason, `${context}${err.message}`));
      };
      const arm = (): void => w.store.crashAt(point, (event) => {
        // Called synchronously from inside the write; the node is dropped once the current
        // synchronous work returns (nothing durable-dependent can leave it meanwhile: the
        // store is already cut and LDK holds what the write would have released).
        queueMicrotask(() => {
          this.net.crash(w.node).then(
            () => {
              this.release(w);
              resolve(event);
            },
            reject,
          );
        });
      }, cancelled);
      try {
        arm();
      } catch (err) {
        if (err instanceof CrashPointCancelledError) cancelled(err);
        else reject(err);
      }
    });
    if (!settled) this.armedCrashes.add(crash);
    return crash;
  }

  /** Lets go of a crashed wallet's store client (whatever it still had on the wire may land). */
  private release(w: Wallet): void {
    w.handle.close?.().catch(() => {});
  }

  /**
   * Restores a crashed wallet from its seed and store id alone, on a new store client, and
   * reconnects it to its peers.
   */
  async restore(name: string, options: RestoreWalletOptions = {}): Promise<Wallet> {
    const old = this.wallet(name);
    if (!old.node.crashed) throw new Error(`wallet ${name} is running; crash it first`);
    return this.restoreIdentity({ name: old.name, storeId: old.storeId, seed: old.seed }, options.mode ?? old.mode, old.incarnation + 1, {
      ...options,
      atomicBatches: options.atomicBatches ?? old.atomicBatches,
    });
  }

  /**
   * Restores a wallet this fleet has never run (a new device or a new process) from its seed
   * and store id. Connect it to peers with `connect`.
   */
  async restoreFrom(identity: WalletIdentity, options: RestoreWalletOptions = {}): Promise<Wallet> {
    if (this.wallets.has(identity.name) && !this.node(identity.name).crashed) throw new Error(`wallet ${identity.name} is running`);
    return this.restoreIdentity(identity, options.mode ?? 'vss-persister', 1, { ...options, reconnect: false });
  }

  private async restoreIdentity(identity: WalletIdentity, mode: PersistenceMode, incarnation: number, options: RestoreWalletOptions): Promise<Wallet> {
    const name = identity.name;
    const handle = await this.openStore(identity);
    const atomicBatches = options.atomicBatches ?? this.atomicBatches;
    const store = new CrashableStore(handle.store, { atomicBatches });
    let result;
    try {
      result = await this.net.restoreNode({ name, seed: nodeSeedOf(identity.seed), persistence: this.persistence(mode, store, handle, options) });
    } catch (err) {
      handle.close?.().catch(() => {});
      throw err;
    }
    const restoreReport: RestoreReport = {
      newDevice: handle.hadLocalRecord === undefined ? undefined : !handle.hadLocalRecord,
      monitors: result.restored.monitors.map((m) => ({ name: m.name, updateId: m.monitor.get_latest_update_id() })),
      stats: result.restored.stats,
    };
    // The wallet's on-chain side carries over to the new incarnation (node.ts explains why).
    const previous = this.wallets.get(name);
    if (previous) result.node.resendUnconfirmedFunding(previous.node.fundingTransactions);
    const wallet: Wallet = { ...identity, mode, atomicBatches, node: result.node, store, handle, incarnation, restoreStats: result.restored.stats, restoreReport };
    this.wallets.set(name, wallet);
    this.ledger.track(result.node);
    for (const listener of this.walletListeners) listener(wallet);
    if (options.reconnect ?? true) {
      for (const [a, b] of this.peers) {
        if (a !== name && b !== name) continue;
        const other = a === name ? b : a;
        if (!this.node(other).crashed) await this.net.connect(result.node, this.node(other));
      }
    }
    return wallet;
  }

  /**
   * Stops the network and every wallet's persistence. A crash point still armed is cancelled
   * first (its crashAt promise rejects with CrashPointCancelledError, reason 'disarmed'): no
   * wallet crashes while the fleet stops, and nobody waits for a crash that will not come.
   */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    // Whoever still waits on one of these hears of its cancellation; a promise left behind by
    // a caller that failed before awaiting it must not turn into an unhandled rejection.
    for (const crash of this.armedCrashes) crash.catch(() => {});
    for (const w of this.wallets.values()) w.store.disarm();
    try {
      await this.net.shutdown();
    } finally {
      // The store clients are closed even if a node failed to stop (its error still surfaces).
      await Promise.all([...this.wallets.values()].map((w) => w.handle.close?.().catch(() => {})));
    }
  }
}
