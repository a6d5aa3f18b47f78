/**
 * The store's blocking API. Keys, encryption, expected versions and ordering all stay in
 * the calling thread's `StoreEngine` (the same one the async API uses); only the HTTP
 * requests run in the bridge's worker.
 *
 * Overlap with the async API on the same key: a sync write/remove of a key whose async
 * write/remove is already running fails with `KeyBusyError` (nothing sent); one that is only
 * queued is superseded by the sync operation, and its callers settle with the sync outcome.
 */
import { runSync, type Operation, type VssCall } from './effects.js';
import type { StoreEngine } from './engine.js';
import { KeyBusyError } from './errors.js';
import type { SyncBridge } from './sync-bridge.js';
import type { StoreKey, SyncKVStore } from './types.js';
import { checkKey, checkNamespace, checkValue } from './validation.js';
import type { VersionLedger } from './version-ledger.js';
import { REQUEST_CODECS, RESPONSE_CODECS } from './wire.js';

/** What the sync API needs from its VssStore. */
export interface SyncStoreHost {
  engine: StoreEngine;
  /** Records versions from the blocking path (the store's call-ordered view of its ledger). */
  ledger: Pick<VersionLedger, 'recordSync'> | undefined;
  checkOpen(): void;
  /** Queues a remove on the async path (for lazy removes, which need not block). */
  removeLater(primaryNamespace: string, secondaryNamespace: string, key: string): void;
  /** Called when the sync store is closed, so the VssStore forgets it. */
  released(store: VssSyncStore): void;
}

export class VssSyncStore implements SyncKVStore {
  readonly #host: SyncStoreHost;
  readonly #bridge: SyncBridge;
  readonly #deadlineMs: number;

  constructor(host: SyncStoreHost, bridge: SyncBridge, deadlineMs: number) {
    this.#host = host;
    this.#bridge = bridge;
    this.#deadlineMs = deadlineMs;
  }

  read(primaryNamespace: string, secondaryNamespace: string, key: string): Uint8Array {
    this.#checkUsable();
    checkKey(primaryNamespace, secondaryNamespace, key);
    const engine = this.#host.engine;
    return this.#run(engine.read(engine.target(primaryNamespace, secondaryNamespace, key)));
  }

  write(primaryNamespace: string, secondaryNamespace: string, key: string, value: Uint8Array): void {
    this.#checkUsable();
    checkKey(primaryNamespace, secondaryNamespace, key);
    // Before #exclusive: a refused value must not supersede (and fail) queued async writes.
    checkValue(value, primaryNamespace, secondaryNamespace, key);
    const engine = this.#host.engine;
    const target = engine.target(primaryNamespace, secondaryNamespace, key);
    this.#exclusive(target.address.storeKey, () => engine.write(target, value));
  }

  /** A lazy remove is queued on the async path and returns at once (LDK allows that). */
  remove(primaryNamespace: string, secondaryNamespace: string, key: string, lazy: boolean): void {
    this.#checkUsable();
    checkKey(primaryNamespace, secondaryNamespace, key);
    if (lazy) {
      this.#host.removeLater(primaryNamespace, secondaryNamespace, key);
      return;
    }
    const engine = this.#host.engine;
    const target = engine.target(primaryNamespace, secondaryNamespace, key);
    this.#exclusive(target.address.storeKey, () => engine.remove(target));
  }

  list(primaryNamespace: string, secondaryNamespace: string): string[] {
    this.#checkUsable();
    checkNamespace(primaryNamespace, secondaryNamespace);
    return this.#run(this.#host.engine.list(primaryNamespace, secondaryNamespace));
  }

  listAll(): StoreKey[] {
    this.#checkUsable();
    return this.#run(this.#host.engine.listAll());
  }

  /**
   * A call that cannot reach the worker (view closed, worker dead) fails before the engine
   * runs: otherwise the engine would take the failure for a request of unknown outcome, mark
   * the key uncertain and, for a remove, forget its version in the ledger, for nothing sent.
   */
  #checkUsable(): void {
    this.#host.checkOpen();
    this.#bridge.checkUsable();
  }

  /** Stops the worker; later calls fail. */
  close(): void {
    this.#bridge.close();
    this.#host.released(this);
  }

  #exclusive(storeKey: string, operation: () => Operation<void>): void {
    const queue = this.#host.engine.queue;
    if (queue.isRunning(storeKey)) {
      throw new KeyBusyError('an asynchronous write or remove of this key is still in flight; nothing was sent');
    }
    if (queue.hasBatch(storeKey)) {
      // Running now would overtake a batch queued earlier, and a batch cannot be superseded.
      throw new KeyBusyError('an asynchronous batch write of this key is queued; nothing was sent');
    }
    const superseded = queue.takeWaiting(storeKey);
    try {
      this.#run(operation());
    } catch (error) {
      for (const waiter of superseded) waiter.reject(error);
      throw error;
    }
    for (const waiter of superseded) waiter.resolve();
  }

  #run<T>(operation: Operation<T>): T {
    // The monotonic clock: a stepped wall clock must not stretch or cut the deadline.
    const deadlineAt = performance.now() + this.#deadlineMs;
    const ledger = this.#host.ledger;
    return runSync(operation, {
      vss: (call: VssCall) => {
        const body = (REQUEST_CODECS[call.operation] as { encode(m: unknown): { finish(): Uint8Array } }).encode(call.request).finish();
        const answer = this.#bridge.call(call.operation, body, deadlineAt);
        return RESPONSE_CODECS[call.operation].decode(answer);
      },
      record: (changes) => ledger?.recordSync?.(changes),
    });
  }
}
