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
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
  StoreOpenError,
  StoreTimeoutError,
} from '../store/errors.js';
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

/**
 * The IOError kind LDK should see for a store error. `NotFound` matters most: LDK probes
 * for missing keys (e.g. the next monitor update) and treats any other kind as a failure.
 */
export function ioErrorFor(err: unknown): ldk.IOError {
  if (err instanceof KeyNotFoundError) return ldk.IOError.LDKIOError_NotFound;
  if (err instanceof StoreTimeoutError) return ldk.IOError.LDKIOError_TimedOut;
  if (err instanceof InvalidKeyError || err instanceof InvalidValueError) return ldk.IOError.LDKIOError_InvalidInput;
  if (err instanceof DataIntegrityError || err instanceof RollbackDetectedError) return ldk.IOError.LDKIOError_InvalidData;
  if (err instanceof StoreClosedError || err instanceof StoreOpenError) return ldk.IOError.LDKIOError_NotConnected;
  if (err instanceof ConcurrentWriterError) return ldk.IOError.LDKIOError_Other;
  const code = errorCode(err);
  return (code !== undefined ? NETWORK_ERROR_KINDS[code] : undefined) ?? ldk.IOError.LDKIOError_Other;
}

export interface LdkKVStoreOptions {
  /** Where failures are logged with their cause (LDK only ever sees the IOError kind). */
  log?: PersistenceLogger;
}

type Op = 'read' | 'write' | 'remove' | 'list' | 'list_all_keys';

function logFailure(logger: PersistenceLogger, op: Op, where: string[], err: unknown): void {
  // A missing key is an expected answer, not a failure.
  if (err instanceof KeyNotFoundError) return;
  logger.error({ op, key: where.join('/'), ioError: ldk.IOError[ioErrorFor(err)], cause: describeError(err) }, 'LDK KVStore operation failed');
}

function kvStoreInterface(store: SyncKVStore, logger: PersistenceLogger): ldk.KVStoreInterface {
  return {
    read(primary, secondary, key) {
      try {
        return ldk.Result_CVec_u8ZIOErrorZ.constructor_ok(store.read(primary, secondary, key));
      } catch (err) {
        logFailure(logger, 'read', [primary, secondary, key], err);
        return ldk.Result_CVec_u8ZIOErrorZ.constructor_err(ioErrorFor(err));
      }
    },
    write(primary, secondary, key, buf) {
      try {
        // LDK owns `buf` only for the duration of the call; the store may keep it longer.
        store.write(primary, secondary, key, Uint8Array.from(buf));
        return ldk.Result_NoneIOErrorZ.constructor_ok();
      } catch (err) {
        logFailure(logger, 'write', [primary, secondary, key], err);
        return ldk.Result_NoneIOErrorZ.constructor_err(ioErrorFor(err));
      }
    },
    remove(primary, secondary, key, lazy) {
      try {
        store.remove(primary, secondary, key, lazy);
        return ldk.Result_NoneIOErrorZ.constructor_ok();
      } catch (err) {
        logFailure(logger, 'remove', [primary, secondary, key], err);
        return ldk.Result_NoneIOErrorZ.constructor_err(ioErrorFor(err));
      }
    },
    list(primary, secondary) {
      try {
        return ldk.Result_CVec_StrZIOErrorZ.constructor_ok(store.list(primary, secondary));
      } catch (err) {
        logFailure(logger, 'list', [primary, secondary], err);
        return ldk.Result_CVec_StrZIOErrorZ.constructor_err(ioErrorFor(err));
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
          logFailure(logger, 'list_all_keys', [], err);
          return ldk.Result_CVec_C3Tuple_StrStrStrZZIOErrorZ.constructor_err(ioErrorFor(err));
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
