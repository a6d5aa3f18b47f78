/**
 * LDK's synchronous `KVStore` (and `MigratableKVStore`) over the store layer's blocking
 * `SyncKVStore`. LDK code that needs a sync store (MonitorUpdatingPersister,
 * read_channel_monitors, OutputSweeper, migrate_kv_store_data) calls these from inside
 * WASM, so every failure becomes an `IOError` result; nothing may throw across the boundary.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore, SyncKVStore } from '../store/types.js';
import {
  ConcurrentWriterError,
  DataIntegrityError,
  InvalidKeyError,
  InvalidValueError,
  KeyBusyError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
  StoreIOError,
  StoreOpenError,
  StoreTimeoutError,
  VersionLedgerError,
} from '../store/errors.js';
import { AuthError, VssClientError } from '../client/errors.js';
import { describeError, stderrLogger, type PersistenceLogger } from './log.js';

const NETWORK_ERROR_KINDS: Record<string, ldk.IOError> = {
  ECONNREFUSED: ldk.IOError.LDKIOError_ConnectionRefused,
  ECONNRESET: ldk.IOError.LDKIOError_ConnectionReset,
  ECONNABORTED: ldk.IOError.LDKIOError_ConnectionAborted,
  EPIPE: ldk.IOError.LDKIOError_BrokenPipe,
  ETIMEDOUT: ldk.IOError.LDKIOError_TimedOut,
};

function errorCode(err: unknown): string | undefined {
  for (let current = err, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    const code = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** The first error of class `type` in `err`'s cause chain. */
function causeOfType<T extends Error>(err: unknown, type: abstract new (...args: never[]) => T): T | undefined {
  for (let current = err, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    if (current instanceof type) return current;
  }
  return undefined;
}

/**
 * The IOError kind LDK should see for a store error. `NotFound` matters most: LDK probes
 * for missing keys (e.g. the next monitor update) and treats any other kind as a failure.
 * A request the store could not complete (`StoreIOError`) gets a transport kind, never
 * `Other`: LDK itself reports data it cannot apply as `Other`, and `readChannelMonitorsWithLdk`
 * tells an unreachable store from corrupt data by the kind alone.
 */
export function ioErrorFor(err: unknown): ldk.IOError {
  if (err instanceof KeyNotFoundError) return ldk.IOError.LDKIOError_NotFound;
  if (err instanceof StoreTimeoutError) return ldk.IOError.LDKIOError_TimedOut;
  if (err instanceof InvalidKeyError || err instanceof InvalidValueError) return ldk.IOError.LDKIOError_InvalidInput;
  if (err instanceof DataIntegrityError || err instanceof RollbackDetectedError) return ldk.IOError.LDKIOError_InvalidData;
  if (err instanceof StoreClosedError || err instanceof StoreOpenError) return ldk.IOError.LDKIOError_NotConnected;
  if (err instanceof ConcurrentWriterError) return ldk.IOError.LDKIOError_Other;
  // An asynchronous write of the key is in flight; nothing was sent.
  if (err instanceof KeyBusyError) return ldk.IOError.LDKIOError_WouldBlock;
  // The local version ledger could not record a change: retrying is safe, the data is fine.
  if (err instanceof VersionLedgerError) return ldk.IOError.LDKIOError_Interrupted;
  const code = errorCode(err);
  const network = code !== undefined ? NETWORK_ERROR_KINDS[code] : undefined;
  if (network !== undefined) return network;
  if (err instanceof StoreIOError) {
    if (causeOfType(err, VssClientError)?.reason === 'timeout') return ldk.IOError.LDKIOError_TimedOut;
    if (causeOfType(err, AuthError)) return ldk.IOError.LDKIOError_PermissionDenied;
    // A 5xx, an incompatible server, a redirect, the sync bridge's worker gone: not the data.
    return ldk.IOError.LDKIOError_NotConnected;
  }
  return ldk.IOError.LDKIOError_Other;
}

export interface LdkKVStoreOptions {
  /** Where failures are logged with their cause (LDK only ever sees the IOError kind). */
  log?: PersistenceLogger;
}

type Op = 'read' | 'write' | 'remove' | 'list' | 'list_all_keys';

/**
 * The IOError for a failed operation, logged with its cause. Runs inside an LDK callback, where
 * a JavaScript exception is fatal to LDK: an error that cannot be described (`String()` throws
 * for an object without a prototype) or a logger that throws must not turn the result into one.
 */
function failure(logger: PersistenceLogger, op: Op, where: string[], err: unknown): ldk.IOError {
  let kind: ldk.IOError;
  try {
    kind = ioErrorFor(err);
  } catch {
    kind = ldk.IOError.LDKIOError_Other;
  }
  // A missing key is an expected answer, not a failure. (Decided by the kind: `instanceof`
  // itself throws for some values, e.g. a revoked Proxy, and nothing may throw here.)
  if (kind === ldk.IOError.LDKIOError_NotFound) return kind;
  let cause: string;
  try {
    cause = describeError(err);
  } catch {
    cause = `an undescribable ${typeof err} was thrown`;
  }
  try {
    logger.error({ op, key: where.join('/'), ioError: ldk.IOError[kind], cause }, 'LDK KVStore operation failed');
  } catch {
    // Nowhere left to report it; the caller still gets its IOError.
  }
  return kind;
}

function kvStoreInterface(store: SyncKVStore, logger: PersistenceLogger): ldk.KVStoreInterface {
  return {
    read(primary, secondary, key) {
      try {
        return ldk.Result_CVec_u8ZIOErrorZ.constructor_ok(store.read(primary, secondary, key));
      } catch (err) {
        return ldk.Result_CVec_u8ZIOErrorZ.constructor_err(failure(logger, 'read', [primary, secondary, key], err));
      }
    },
    write(primary, secondary, key, buf) {
      try {
        // LDK owns `buf` only for the duration of the call; the store may keep it longer.
        store.write(primary, secondary, key, Uint8Array.from(buf));
        return ldk.Result_NoneIOErrorZ.constructor_ok();
      } catch (err) {
        return ldk.Result_NoneIOErrorZ.constructor_err(failure(logger, 'write', [primary, secondary, key], err));
      }
    },
    remove(primary, secondary, key, lazy) {
      try {
        store.remove(primary, secondary, key, lazy);
        return ldk.Result_NoneIOErrorZ.constructor_ok();
      } catch (err) {
        // LDK's contract: a remove succeeds when no data is left under the key, whether or not
        // there was any (LDK removes windows of update keys, including ids that never existed).
        const kind = failure(logger, 'remove', [primary, secondary, key], err);
        return kind === ldk.IOError.LDKIOError_NotFound ? ldk.Result_NoneIOErrorZ.constructor_ok() : ldk.Result_NoneIOErrorZ.constructor_err(kind);
      }
    },
    list(primary, secondary) {
      try {
        return ldk.Result_CVec_StrZIOErrorZ.constructor_ok(store.list(primary, secondary));
      } catch (err) {
        return ldk.Result_CVec_StrZIOErrorZ.constructor_err(failure(logger, 'list', [primary, secondary], err));
      }
    },
  };
}

/** An LDK `KVStore` backed by a blocking store. */
export function toLdkKVStore(store: SyncKVStore, options: LdkKVStoreOptions = {}): ldk.KVStore {
  return ldk.KVStore.new_impl(kvStoreInterface(store, options.log ?? stderrLogger));
}

/** An LDK `MigratableKVStore` (a KVStore that can enumerate every key) backed by a blocking store. */
export function toLdkMigratableKVStore(store: SyncKVStore, options: LdkKVStoreOptions = {}): ldk.MigratableKVStore {
  const logger = options.log ?? stderrLogger;
  return ldk.MigratableKVStore.new_impl(
    {
      list_all_keys() {
        try {
          const triples = store.listAll().map((k) => ldk.ThreeTuple_StrStrStrZ.constructor_new(k.primaryNamespace, k.secondaryNamespace, k.key));
          return ldk.Result_CVec_C3Tuple_StrStrStrZZIOErrorZ.constructor_ok(triples);
        } catch (err) {
          return ldk.Result_CVec_C3Tuple_StrStrStrZZIOErrorZ.constructor_err(failure(logger, 'list_all_keys', [], err));
        }
      },
    },
    kvStoreInterface(store, logger),
  );
}

/** An async store that can also hand out a blocking view of itself (as `VssStore` does). */
export interface SyncCapableStore extends AsyncKVStore {
  toSyncStore(options?: { deadlineMs?: number }): SyncKVStore;
}

/**
 * A store as LDK sees it: the async store for the non-blocking paths (VssPersister,
 * manager writes) plus a blocking `SyncKVStore` view for LDK code that needs one.
 */
export class LdkVssStore {
  readonly syncStore: SyncKVStore;

  constructor(
    readonly store: SyncCapableStore,
    private readonly options: LdkKVStoreOptions & { deadlineMs?: number } = {},
  ) {
    this.syncStore = store.toSyncStore({ deadlineMs: options.deadlineMs });
  }

  toLdkKVStore(): ldk.KVStore {
    return toLdkKVStore(this.syncStore, this.options);
  }

  toLdkMigratableKVStore(): ldk.MigratableKVStore {
    return toLdkMigratableKVStore(this.syncStore, this.options);
  }
}
