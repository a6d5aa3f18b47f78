/**
 * LDK's key-value data model, independent of where the bytes live. VssStore implements
 * these over VSS; the LDK layer adapts them to LDK's KVStore trait.
 */

/** One stored entry's address in LDK's data model. */
export interface StoreKey {
  primaryNamespace: string;
  secondaryNamespace: string;
  key: string;
}

/**
 * Asynchronous store with LDK's KVStore semantics.
 * - `read` rejects with `KeyNotFoundError` when the key does not exist.
 * - Writes and removes of one key take effect in call order.
 * - `remove` with `lazy = true` may return before the removal is durable.
 * - `list` returns the keys of exactly one (primary, secondary) namespace.
 */
export interface AsyncKVStore {
  read(primaryNamespace: string, secondaryNamespace: string, key: string): Promise<Uint8Array>;
  write(primaryNamespace: string, secondaryNamespace: string, key: string, value: Uint8Array): Promise<void>;
  remove(primaryNamespace: string, secondaryNamespace: string, key: string, lazy: boolean): Promise<void>;
  list(primaryNamespace: string, secondaryNamespace: string): Promise<string[]>;
  /** Every key in the store (for migrations), excluding the store's own internal keys. */
  listAll(): Promise<StoreKey[]>;
}

/** One entry of an atomic batch write. */
export interface KeyValueWrite extends StoreKey {
  value: Uint8Array;
}

/**
 * An AsyncKVStore that can also write several keys in one all-or-nothing request
 * (VssStore does, with a PutObjects transaction). `writeBatch` resolves once every entry is
 * durable and rejects if none is; it is never partly applied. Each key keeps its call order
 * with the store's other writes and removes.
 */
export interface AtomicBatchKVStore extends AsyncKVStore {
  writeBatch(writes: readonly KeyValueWrite[]): Promise<void>;
}

/** Whether `store` offers atomic batch writes. */
export function supportsAtomicBatch(store: AsyncKVStore): store is AtomicBatchKVStore {
  return typeof (store as Partial<AtomicBatchKVStore>).writeBatch === 'function';
}

/**
 * A store that can be stopped the way a crash stops it: nothing queued is sent any more,
 * requests on the wire are abandoned (the server may or may not have applied them), no
 * graceful flush. For crash tests, and for a process that must stop writing at once.
 */
export interface AbortableKVStore extends AsyncKVStore {
  abort(): Promise<void>;
}

/** Whether `store` can be aborted. */
export function supportsAbort(store: AsyncKVStore): store is AbortableKVStore {
  return typeof (store as Partial<AbortableKVStore>).abort === 'function';
}

/** The same contract, blocking the calling thread (for LDK code that needs a sync store). */
export interface SyncKVStore {
  read(primaryNamespace: string, secondaryNamespace: string, key: string): Uint8Array;
  write(primaryNamespace: string, secondaryNamespace: string, key: string, value: Uint8Array): void;
  remove(primaryNamespace: string, secondaryNamespace: string, key: string, lazy: boolean): void;
  list(primaryNamespace: string, secondaryNamespace: string): string[];
  listAll(): StoreKey[];
}
