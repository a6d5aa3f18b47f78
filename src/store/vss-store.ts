/**
 * VssStore: LDK's key-value data model over a VSS server, byte-compatible with LDK Node's
 * VssStore (V1 layout, reads V0), with conditional writes, ordered per-key writes,
 * optional rollback detection and a blocking view for LDK's synchronous code.
 */
import { nodeHttpAvailable, nodeHttpFetch, VssClient, vssClientFromConfig, type VssClientConfig, type VssClientRuntime } from '../client/index.js';
import { deriveVssKeys, KeyObfuscator } from '../crypto/index.js';
import { runAsync, type AsyncEffects, type Operation } from './effects.js';
import { StoreEngine, type WriteMode } from './engine.js';
import { InvalidKeyError, InvalidValueError, StoreClosedError, StoreError, StoreOpenError, RollbackDetectedError } from './errors.js';
import type { SchemaVersion } from './layout.js';
import { OrderedLedger } from './ordered-ledger.js';
import { SyncBridge } from './sync-bridge.js';
import { VssSyncStore, type SyncStoreHost } from './sync-store.js';
import type { AbortableKVStore, AtomicBatchKVStore, KeyValueWrite, StoreKey } from './types.js';
import { checkKey, checkNamespace, checkValue } from './validation.js';
import { fileVersionLedger, type VersionLedger } from './version-ledger.js';

/** The store's secrets: LDK Node's 64-byte seed, or the two derived keys directly. */
export type VssStoreKeys = { seed: Uint8Array } | { dataEncryptionKey: Uint8Array; obfuscationMasterKey: Uint8Array };

export interface VssStoreOptions {
  /** Segments one user's data on the server (1–120 characters). */
  storeId: string;
  /**
   * How to reach the server. A plain `VssClientConfig` is required for `toSyncStore()` (its
   * worker rebuilds the client from it); a ready `VssClient` works for the async API only.
   */
  client: VssClientConfig | VssClient;
  /**
   * Non-serializable client hooks for this thread's client (custom fetch, sleep, clock).
   * Without a `fetch`, Node uses `nodeHttpFetch()` (about half the CPU per request of
   * Node's built-in fetch; pass `fetch: globalThis.fetch` to use that instead), and other
   * platforms their `fetch`.
   */
  clientRuntime?: VssClientRuntime;
  keys: VssStoreKeys;
  /**
   * `conditional` (default): compare-and-set on the version this store last saw; another
   * writer's change surfaces as `ConcurrentWriterError`. `unconditional`: LDK Node's
   * behaviour (`version -1`, last writer wins), for sharing a store with LDK Node.
   */
  writeMode?: WriteMode;
  /**
   * Remember the versions this device saw (a file path, or your own `VersionLedger`) and
   * refuse to open with `RollbackDetectedError` when the server is behind them.
   * Conditional mode only.
   */
  versionLedger?: VersionLedger | string;
  /** Failures of lazy removes (which return before they complete). */
  onBackgroundError?: (error: unknown, key: StoreKey) => void;
}

export interface ToSyncStoreOptions {
  /** Upper bound for one blocking operation, retries included (default 30 s). */
  deadlineMs?: number;
  /** Upper bound for starting the worker (default 30 s). */
  startupTimeoutMs?: number;
}

const DEFAULT_SYNC_DEADLINE_MS = 30_000;
const DEFAULT_WORKER_STARTUP_MS = 30_000;

type NodeEvents = typeof import('node:events');

/**
 * Lifts Node's listener limit on `signal`: past 10 listeners Node prints a
 * MaxListenersExceededWarning, which here would be a false alarm. Reached through
 * `process.getBuiltinModule` (Node ≥ 20.16), not a static `node:events` import, so that the
 * store bundles for browsers and React Native; they have no such limit, and nothing is done there.
 */
function unlimitedListeners(signal: AbortSignal): void {
  const events = (globalThis.process as { getBuiltinModule?: (id: string) => unknown } | undefined)?.getBuiltinModule?.('node:events') as NodeEvents | undefined;
  events?.setMaxListeners(0, signal);
}

/** A wait bound for the sync bridge: a positive, finite number of milliseconds. */
function checkWaitMs(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new StoreError(`${name} must be a positive, finite number of milliseconds, got ${String(value)}`);
  }
  return value;
}

function checkStoreId(storeId: string): void {
  if (typeof storeId !== 'string' || storeId.length === 0 || storeId.length > 120) {
    throw new StoreOpenError(`storeId must be 1 to 120 characters, got ${JSON.stringify(storeId)}`);
  }
}

/** The data and obfuscation keys `keys` names: given as such, or derived from the seed. */
export function resolveKeys(keys: VssStoreKeys): { dataEncryptionKey: Uint8Array; obfuscationMasterKey: Uint8Array } {
  if ('seed' in keys) {
    const derived = deriveVssKeys(keys.seed);
    return { dataEncryptionKey: derived.dataEncryptionKey, obfuscationMasterKey: derived.obfuscationMasterKey };
  }
  return { dataEncryptionKey: keys.dataEncryptionKey, obfuscationMasterKey: keys.obfuscationMasterKey };
}

/** The caller's runtime hooks, with the lighter Node transport when no fetch is given. */
function withDefaultTransport(config: VssClientConfig, runtime: VssClientRuntime = {}): VssClientRuntime {
  // With tlsCa the client builds the Node transport itself, trusting that CA.
  if (runtime.fetch || config.tlsCa !== undefined || !nodeHttpAvailable()) return runtime;
  return { ...runtime, fetch: nodeHttpFetch() };
}

/** The store's effects over its client; after `stop` aborts, nothing is sent or recorded any more. */
function clientEffects(client: VssClient, ledger: OrderedLedger | undefined, stop: AbortSignal, storeId: string): AsyncEffects {
  const stopped = () => new StoreClosedError(`VSS store ${JSON.stringify(storeId)} was aborted`);
  const options = { signal: stop };
  return {
    vss: (call) => {
      if (stop.aborted) return Promise.reject(stopped());
      switch (call.operation) {
        case 'getObject':
          return client.getObject(call.request, options);
        case 'putObjects':
          return client.putObjects(call.request, options);
        case 'deleteObject':
          return client.deleteObject(call.request, options);
        case 'listKeyVersions':
          return client.listKeyVersions(call.request, options);
      }
    },
    record: async (changes) => {
      if (stop.aborted) throw stopped();
      await ledger?.record(changes, () => {
        if (stop.aborted) throw stopped();
      });
    },
  };
}

export class VssStore implements AtomicBatchKVStore, AbortableKVStore {
  readonly storeId: string;
  readonly #engine: StoreEngine;
  readonly #effects: AsyncEffects;
  readonly #clientConfig: VssClientConfig | undefined;
  readonly #ledger: VersionLedger | undefined;
  /** The ledger as the store's operations use it: records of one key in call order. */
  readonly #orderedLedger: OrderedLedger | undefined;
  readonly #onBackgroundError: VssStoreOptions['onBackgroundError'];
  readonly #syncStores = new Set<VssSyncStore>();
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #stop = new AbortController();

  private constructor(engine: StoreEngine, client: VssClient, clientConfig: VssClientConfig | undefined, ledger: VersionLedger | undefined, options: VssStoreOptions) {
    this.storeId = engine.storeId;
    this.#engine = engine;
    // Every request in flight listens on this one signal (and removes its listener when done):
    // more than Node's default of 10 at once is normal (parallel reads), not a leak.
    unlimitedListeners(this.#stop.signal);
    this.#orderedLedger = ledger && new OrderedLedger(ledger);
    this.#effects = clientEffects(client, this.#orderedLedger, this.#stop.signal, engine.storeId);
    this.#clientConfig = clientConfig;
    this.#ledger = ledger;
    this.#onBackgroundError = options.onBackgroundError;
  }

  /**
   * Opens a store: reads the schema marker (or detects a V0 store, or creates the marker on
   * a definitely empty store), learns every key's version with one paginated listing, and
   * checks the version ledger. Fails closed with `StoreOpenError` (cause attached) or
   * `RollbackDetectedError`; never opens an unreadable store as empty.
   */
  static async open(options: VssStoreOptions): Promise<VssStore> {
    checkStoreId(options.storeId);
    const mode = options.writeMode ?? 'conditional';
    if (mode !== 'conditional' && mode !== 'unconditional') throw new StoreOpenError(`unknown writeMode ${JSON.stringify(mode)}`);
    if (options.versionLedger !== undefined && mode !== 'conditional') {
      throw new StoreOpenError('a version ledger needs conditional writes (unconditional writes reset versions to 1)');
    }
    let keys: ReturnType<typeof resolveKeys>;
    let obfuscator: KeyObfuscator;
    try {
      keys = resolveKeys(options.keys);
      obfuscator = new KeyObfuscator(keys.obfuscationMasterKey);
    } catch (cause) {
      throw new StoreOpenError('unusable store keys', { cause });
    }
    const clientConfig = options.client instanceof VssClient ? undefined : options.client;
    const client = options.client instanceof VssClient ? options.client : vssClientFromConfig(options.client, withDefaultTransport(options.client, options.clientRuntime));
    const ledger = typeof options.versionLedger === 'string' ? fileVersionLedger(options.versionLedger) : options.versionLedger;
    const engine = new StoreEngine({ storeId: options.storeId, dataEncryptionKey: keys.dataEncryptionKey, obfuscator, mode });
    const store = new VssStore(engine, client, clientConfig, ledger, options);
    try {
      await runAsync(engine.open(), store.#effects);
      if (ledger) {
        const { changes } = engine.rollbackCheck(await ledger.load());
        await ledger.record(changes);
      }
    } catch (error) {
      await ledger?.close?.();
      if (error instanceof StoreOpenError || error instanceof RollbackDetectedError) throw error;
      throw new StoreOpenError(`cannot open VSS store ${JSON.stringify(options.storeId)}: ${(error as Error)?.message ?? String(error)}`, {
        cause: error,
      });
    }
    return store;
  }

  /** 1 for LDK Node's current layout, 0 for stores written by ldk-node ≤ 0.6. */
  get schemaVersion(): SchemaVersion {
    return this.#engine.layout!.schema;
  }

  get writeMode(): WriteMode {
    return this.#engine.mode;
  }

  async read(primaryNamespace: string, secondaryNamespace: string, key: string): Promise<Uint8Array> {
    this.#checkOpen();
    checkKey(primaryNamespace, secondaryNamespace, key);
    return this.#run(this.#engine.read(this.#engine.target(primaryNamespace, secondaryNamespace, key)));
  }

  /**
   * Resolves once this value, or a newer write/remove of the same key that superseded it,
   * is durable on the server. Writes of one key are applied in call order.
   */
  async write(primaryNamespace: string, secondaryNamespace: string, key: string, value: Uint8Array): Promise<void> {
    this.#checkOpen();
    checkKey(primaryNamespace, secondaryNamespace, key);
    checkValue(value, primaryNamespace, secondaryNamespace, key);
    const target = this.#engine.target(primaryNamespace, secondaryNamespace, key);
    // The caller may reuse its buffer once we return; the write may run later.
    const copy = Uint8Array.from(value);
    return this.#engine.queue.enqueue(target.address.storeKey, () => this.#run(this.#engine.write(target, copy)));
  }

  /**
   * Writes several distinct keys in one PutObjects request: the server applies all of them
   * or none (conditional mode: each key at the version this store last saw). Resolves once
   * all are durable. Per key, the batch takes its place in call order with other writes and
   * removes; it supersedes a write or remove of one of its keys that is still waiting (that
   * caller settles with the batch), and later operations on its keys wait for it. Errors are
   * the single write's: `ConcurrentWriterError` (every key of the batch then needs a read
   * before it is written again: the server does not say which key conflicted),
   * `StoreIOError` (nothing or everything was applied; the next operation on each key
   * reads back first if the reply was lost), `InvalidKeyError` for a bad or repeated key,
   * `InvalidValueError` for a value that is not a Uint8Array (nothing queued or sent).
   */
  async writeBatch(writes: readonly KeyValueWrite[]): Promise<void> {
    this.#checkOpen();
    if (!Array.isArray(writes)) throw new InvalidValueError('writeBatch takes an array of writes');
    // Every entry is checked before anything is queued: a bad one refuses the whole batch.
    const items = writes.map((w) => {
      checkKey(w.primaryNamespace, w.secondaryNamespace, w.key);
      checkValue(w.value, w.primaryNamespace, w.secondaryNamespace, w.key);
      // The caller may reuse its buffers once we return; the batch may run later.
      return { target: this.#engine.target(w.primaryNamespace, w.secondaryNamespace, w.key), value: Uint8Array.from(w.value) };
    });
    const keys = items.map((i) => i.target.address.storeKey);
    if (new Set(keys).size !== keys.length) {
      throw new InvalidKeyError('a batch names the same key more than once (one request cannot write a key twice)');
    }
    if (items.length === 0) return;
    return this.#engine.queue.enqueueBatch(keys, () => this.#run(this.#engine.writeBatch(items)));
  }

  /** With `lazy`, returns at once; failures then go to `onBackgroundError`. */
  async remove(primaryNamespace: string, secondaryNamespace: string, key: string, lazy: boolean): Promise<void> {
    this.#checkOpen();
    checkKey(primaryNamespace, secondaryNamespace, key);
    const done = this.#enqueueRemove(primaryNamespace, secondaryNamespace, key);
    if (!lazy) return done;
    done.catch((error: unknown) => this.#onBackgroundError?.(error, { primaryNamespace, secondaryNamespace, key }));
  }

  async list(primaryNamespace: string, secondaryNamespace: string): Promise<string[]> {
    this.#checkOpen();
    checkNamespace(primaryNamespace, secondaryNamespace);
    return this.#run(this.#engine.list(primaryNamespace, secondaryNamespace));
  }

  async listAll(): Promise<StoreKey[]> {
    this.#checkOpen();
    return this.#run(this.#engine.listAll());
  }

  /** Resolves once every queued write and remove (lazy ones included) has settled. */
  flush(): Promise<void> {
    return this.#engine.queue.whenIdle();
  }

  /**
   * Finishes queued operations, stops sync workers and closes the ledger. Every call resolves
   * only once that is done (a second call, e.g. from another shutdown path, gets the same promise).
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    await this.flush();
    for (const sync of [...this.#syncStores]) sync.close();
    await this.#ledger?.close?.();
  }

  /**
   * Stops the way a crash does, at once (before this returns its promise): new calls fail with
   * `StoreClosedError`, queued operations fail without being sent, requests on the wire are
   * abandoned (the server may or may not apply them, as after a real crash), nothing more is
   * recorded in the version ledger. Resolves once every queued operation has settled.
   */
  abort(): Promise<void> {
    this.#closed = true;
    this.#stop.abort();
    this.#closing ??= (async () => {
      await this.flush();
      for (const sync of [...this.#syncStores]) sync.close();
      await this.#ledger?.close?.();
    })();
    return this.#closing;
  }

  /**
   * A blocking view of this store (for LDK's synchronous KVStore). It shares this store's
   * state; its HTTP requests run in a worker thread built from the store's client config.
   */
  toSyncStore(options: ToSyncStoreOptions = {}): VssSyncStore {
    this.#checkOpen();
    if (!this.#clientConfig) {
      throw new StoreError('toSyncStore needs the store to be opened with a plain VssClientConfig (a VssClient instance cannot be sent to a worker)');
    }
    if (this.#ledger && !this.#ledger.recordSync) {
      throw new StoreError('toSyncStore needs a version ledger with recordSync');
    }
    // Atomics.wait treats NaN as "forever": an unset environment variable turned into a
    // deadline would make a blocked call hang instead of failing.
    const deadlineMs = checkWaitMs('deadlineMs', options.deadlineMs ?? DEFAULT_SYNC_DEADLINE_MS);
    const startupTimeoutMs = checkWaitMs('startupTimeoutMs', options.startupTimeoutMs ?? DEFAULT_WORKER_STARTUP_MS);
    const bridge = new SyncBridge(this.#clientConfig, startupTimeoutMs);
    const host: SyncStoreHost = {
      engine: this.#engine,
      ledger: this.#orderedLedger,
      checkOpen: () => this.#checkOpen(),
      removeLater: (p, s, k) => {
        this.#enqueueRemove(p, s, k).catch((error: unknown) =>
          this.#onBackgroundError?.(error, { primaryNamespace: p, secondaryNamespace: s, key: k }),
        );
      },
      released: (store) => this.#syncStores.delete(store),
    };
    const sync = new VssSyncStore(host, bridge, deadlineMs);
    this.#syncStores.add(sync);
    return sync;
  }

  #enqueueRemove(primaryNamespace: string, secondaryNamespace: string, key: string): Promise<void> {
    const target = this.#engine.target(primaryNamespace, secondaryNamespace, key);
    return this.#engine.queue.enqueue(target.address.storeKey, () => this.#run(this.#engine.remove(target)));
  }

  #run<T>(operation: Operation<T>): Promise<T> {
    return runAsync(operation, this.#effects);
  }

  #checkOpen(): void {
    if (this.#closed) throw new StoreClosedError(`VSS store ${JSON.stringify(this.storeId)} is closed`);
  }
}
