/**
 * Copying a whole store to another provider (VSS to VSS, or any LDK KVStore), verifying
 * every copy by reading it back. Run it with the node stopped: a store written during the
 * copy would not be copied consistently, so the source is listed again (and its manager read
 * again) at the end, and a change is a `MigrationVerificationError`, never a success.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore, StoreKey, SyncKVStore } from '../store/types.js';
import { KeyNotFoundError, StoreError } from '../store/errors.js';
import { checkKey } from '../store/validation.js';
import { MigrationVerificationError } from './errors.js';
import { CHANNEL_MANAGER_NAMESPACE, CHANNEL_MONITOR_NAMESPACE, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE } from './layout.js';
import { createLimiter } from './concurrency.js';

/** An LDK KVStore as a migration source: reads go to `kvStore`, the key listing to `migratable`. */
export interface LdkMigrationSource {
  kvStore: ldk.KVStore;
  migratable: ldk.MigratableKVStore;
}

export type MigrationSource = AsyncKVStore | SyncKVStore | LdkMigrationSource;
export type MigrationTarget = AsyncKVStore | SyncKVStore | ldk.KVStore;

export interface MigrationProgress {
  copied: number;
  total: number;
  bytes: number;
  /** The key just copied and verified. */
  last: StoreKey;
}

export interface MigrateStoreOptions {
  /**
   * Called after each verified copy. A callback that throws fails the migration like a failed
   * copy; an async one is awaited, and its rejection fails the migration the same way.
   */
  onProgress?: (progress: MigrationProgress) => void;
  /** Parallel copies. Default 8. */
  concurrency?: number;
  /**
   * Allow keys that already exist in the target to be overwritten. Default false: copying
   * over another wallet's data would mix two states.
   */
  overwrite?: boolean;
  /**
   * Accept a source that holds no keys. Default false: an empty source is far more often a
   * mistyped store id or the wrong server than a wallet with nothing in it, and a "successful"
   * migration of nothing leaves a target that restore takes for a new wallet.
   */
  allowEmptySource?: boolean;
}

export interface MigrationResult {
  keys: number;
  bytes: number;
  durationMs: number;
}

/** An LDK KVStore call failed; the IOError kind is all LDK tells us. */
export class LdkKVStoreError extends StoreError {
  constructor(
    op: string,
    readonly ioError: ldk.IOError,
    where: StoreKey,
  ) {
    super(`LDK KVStore ${op} failed with ${ldk.IOError[ioError]} at ${JSON.stringify([where.primaryNamespace, where.secondaryNamespace, where.key])}`);
  }
}

/** The operations migration needs, uniform over all store kinds. */
interface Endpoint {
  read(k: StoreKey): Promise<Uint8Array>;
  write(k: StoreKey, value: Uint8Array): Promise<void>;
  listAll?(): Promise<StoreKey[]>;
}

function isLdkSource(x: MigrationSource): x is LdkMigrationSource {
  return 'kvStore' in x && x.kvStore instanceof ldk.KVStore;
}

function ldkEndpoint(kv: ldk.KVStore, migratable?: ldk.MigratableKVStore): Endpoint {
  return {
    async read(k) {
      const res = kv.read(k.primaryNamespace, k.secondaryNamespace, k.key);
      if (res instanceof ldk.Result_CVec_u8ZIOErrorZ_OK) return res.res;
      const ioError = res instanceof ldk.Result_CVec_u8ZIOErrorZ_Err ? res.err : ldk.IOError.LDKIOError_Other;
      if (ioError === ldk.IOError.LDKIOError_NotFound) throw new KeyNotFoundError(k.primaryNamespace, k.secondaryNamespace, k.key);
      throw new LdkKVStoreError('read', ioError, k);
    },
    async write(k, value) {
      const res = kv.write(k.primaryNamespace, k.secondaryNamespace, k.key, value);
      if (!(res instanceof ldk.Result_NoneIOErrorZ_OK)) {
        throw new LdkKVStoreError('write', res instanceof ldk.Result_NoneIOErrorZ_Err ? res.err : ldk.IOError.LDKIOError_Other, k);
      }
    },
    listAll: migratable
      ? async () => {
          const res = migratable.list_all_keys();
          if (!(res instanceof ldk.Result_CVec_C3Tuple_StrStrStrZZIOErrorZ_OK)) {
            throw new LdkKVStoreError('list_all_keys', res instanceof ldk.Result_CVec_C3Tuple_StrStrStrZZIOErrorZ_Err ? res.err : ldk.IOError.LDKIOError_Other, { primaryNamespace: '', secondaryNamespace: '', key: '' });
          }
          return res.res.map((t) => ({ primaryNamespace: t.get_a(), secondaryNamespace: t.get_b(), key: t.get_c() }));
        }
      : undefined,
  };
}

/** Async and sync stores share method names; awaiting a plain value is harmless. */
function storeEndpoint(store: AsyncKVStore | SyncKVStore): Endpoint {
  return {
    read: async (k) => store.read(k.primaryNamespace, k.secondaryNamespace, k.key),
    write: async (k, value) => {
      await store.write(k.primaryNamespace, k.secondaryNamespace, k.key, value);
    },
    listAll: async () => store.listAll(),
  };
}

function sourceEndpoint(source: MigrationSource): Endpoint {
  return isLdkSource(source) ? ldkEndpoint(source.kvStore, source.migratable) : storeEndpoint(source);
}

function targetEndpoint(target: MigrationTarget): Endpoint {
  return target instanceof ldk.KVStore ? ldkEndpoint(target) : storeEndpoint(target);
}

const label = (k: StoreKey): string => [k.primaryNamespace, k.secondaryNamespace, k.key].join('/');
const isFullMonitor = (k: StoreKey): boolean =>
  k.primaryNamespace === CHANNEL_MONITOR_NAMESPACE.primary && k.secondaryNamespace === CHANNEL_MONITOR_NAMESPACE.secondary;
const isMonitorData = (k: StoreKey): boolean => isFullMonitor(k) || k.primaryNamespace === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE;
const isManager = (k: StoreKey): boolean =>
  k.primaryNamespace === CHANNEL_MANAGER_NAMESPACE.primary && k.secondaryNamespace === CHANNEL_MANAGER_NAMESPACE.secondary && k.key === CHANNEL_MANAGER_NAMESPACE.key;

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Copies every key of `from` into `to` and reads each copy back to verify it. The full
 * monitors are copied first and the ChannelManager last, so an interrupted migration never
 * leaves a target with a manager but without its monitors, nor one with parts of the
 * channels' state but no monitor (restore refuses a monitor without its manager rather than
 * lose channels, but would take a store with neither for a new wallet).
 * Afterwards the source must still hold exactly the keys copied and the manager copied: a
 * source written during the copy (a node still running) fails with
 * `MigrationVerificationError`. On any failure, copies already running finish before the
 * promise rejects (none start after), so nothing writes to the target after it settles.
 */
export async function migrateStore(from: MigrationSource, to: MigrationTarget, options: MigrateStoreOptions = {}): Promise<MigrationResult> {
  const started = performance.now();
  const source = sourceEndpoint(from);
  const target = targetEndpoint(to);
  const keys = await source.listAll!();
  if (keys.length === 0 && !options.allowEmptySource) {
    throw new MigrationVerificationError(
      'the source holds no keys: check its store id, server and keys (a mistyped store id opens as an empty store). ' +
        'Nothing was copied; pass allowEmptySource: true to migrate an empty store deliberately',
    );
  }
  // Checked before anything is written: a key no LDK store accepts (a temp file's name, a
  // component over 120 characters) would fail its own copy part way through, leaving a partial
  // target that a re-run refuses (it already holds keys) and that can never complete.
  const invalid = keys.flatMap((k) => {
    try {
      checkKey(k.primaryNamespace, k.secondaryNamespace, k.key);
      return [];
    } catch (err) {
      return [`${JSON.stringify([k.primaryNamespace, k.secondaryNamespace, k.key])} (${(err as Error).message})`];
    }
  });
  if (invalid.length > 0) {
    throw new MigrationVerificationError(
      `the source lists ${invalid.length} key(s) that are not valid LDK keys, e.g. ${invalid.slice(0, 3).join(', ')}; ` +
        'remove them from the source and migrate again (nothing was copied)',
    );
  }
  // Full monitors first (all of them durable before anything else starts), the manager last:
  // a target cut off at any point then holds either nothing of the source's channels or a
  // monitor without a manager, which restore refuses. Deltas or other data copied before the
  // monitors would leave a target that restore takes for a new wallet (nothing to restore).
  const monitors = keys.filter(isFullMonitor);
  const managers = keys.filter(isManager);
  const bulk = keys.filter((k) => !isFullMonitor(k) && !isManager(k));
  const ordered = [...monitors, ...bulk, ...managers];

  if (options.overwrite && !target.listAll) {
    // Without a listing, leftover monitor data in the target could not be refused (see below).
    throw new MigrationVerificationError('overwrite: true needs a target that can list its keys (an AsyncKVStore or SyncKVStore, not a bare LDK KVStore)');
  }
  const existing = target.listAll ? await target.listAll() : undefined;
  if (existing && !options.overwrite) {
    const present = new Set(existing.map(label));
    const clash = ordered.find((k) => present.has(label(k)));
    if (clash) throw new MigrationVerificationError(`target already holds ${label(clash)}; pass overwrite: true to replace existing keys`);
  }
  if (existing && options.overwrite) {
    // Overwriting replaces the source's keys, it removes nothing: a monitor or monitor update
    // the target holds and the source does not would be read by a restore as part of the
    // copied state (a leftover delta above the copied full monitor gets applied to it).
    const inSource = new Set(keys.map(label));
    const foreign = existing.filter((k) => isMonitorData(k) && !inSource.has(label(k)));
    if (foreign.length > 0) {
      throw new MigrationVerificationError(
        `target holds ${foreign.length} monitor key(s) the source does not (e.g. ${label(foreign[0])}); a restore from the copy would ` +
          'read them as part of the copied state. Remove them, or migrate into an empty store (nothing was copied)',
      );
    }
    // Likewise a manager: with a source that has none, the copy would pair another wallet's
    // manager with the source's monitors (LDK force-closes channels its manager does not know).
    const foreignManager = existing.find((k) => isManager(k) && !inSource.has(label(k)));
    if (foreignManager) {
      throw new MigrationVerificationError(
        `target holds a ChannelManager (${label(foreignManager)}) and the source has none; a restore from the copy would pair it with the ` +
          "source's monitors. Remove it, or migrate into an empty store (nothing was copied)",
      );
    }
  }

  const limit = createLimiter(options.concurrency ?? 8);
  let copied = 0;
  let bytes = 0;
  let failed = false;
  const copiedManagers = new Map<string, Uint8Array>();
  const copy = async (k: StoreKey): Promise<void> => {
    if (failed) return; // another copy failed: start nothing new
    const value = await source.read(k).catch((err: unknown) => {
      // Listed a moment ago, gone now: a bare "key not found" would not say that the source
      // is being written to (a node still running), which is what the user must fix.
      if (err instanceof KeyNotFoundError) {
        throw new MigrationVerificationError(`${label(k)} was listed in the source but is gone: the source changed while it was being copied; stop the node and migrate again into an empty target`, {
          cause: err,
        });
      }
      throw err;
    });
    if (!options.overwrite && !target.listAll) {
      // No listing on this target: probe the key itself before writing over it.
      const exists = await target.read(k).then(
        () => true,
        (err: unknown) => {
          if (err instanceof KeyNotFoundError) return false;
          throw err;
        },
      );
      if (exists) throw new MigrationVerificationError(`target already holds ${label(k)}; pass overwrite: true to replace existing keys`);
    }
    await target.write(k, value);
    const back = await target.read(k);
    if (!equalBytes(back, value)) throw new MigrationVerificationError(`copy of ${label(k)} reads back different (${back.length} bytes instead of ${value.length})`);
    copied++;
    bytes += value.length;
    if (isManager(k)) copiedManagers.set(label(k), value);
    // Awaited: an async callback's rejection would otherwise be unhandled (and end the process).
    await (options.onProgress?.({ copied, total: ordered.length, bytes, last: k }) as unknown);
  };
  const copyPhase = async (phase: StoreKey[]): Promise<void> => {
    const outcomes = await Promise.allSettled(
      phase.map((k) =>
        limit(async () => {
          try {
            await copy(k);
          } catch (err) {
            failed = true;
            throw err;
          }
        }),
      ),
    );
    const firstFailure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (firstFailure) throw firstFailure.reason;
  };
  await copyPhase(monitors);
  await copyPhase(bulk);
  for (const k of managers) await copy(k);
  await checkSourceUnchanged(source, ordered, copiedManagers);
  return { keys: copied, bytes, durationMs: performance.now() - started };
}

/**
 * The source after the copy: the same keys, and the same manager bytes. New or removed keys
 * (monitor updates, a new channel's monitor) or a newer manager mean the node was running and
 * the target holds a mix of two moments.
 */
async function checkSourceUnchanged(source: Endpoint, copiedKeys: StoreKey[], copiedManagers: Map<string, Uint8Array>): Promise<void> {
  const now = await source.listAll!();
  const before = new Set(copiedKeys.map(label));
  const after = new Set(now.map(label));
  const added = [...after].filter((k) => !before.has(k));
  const removed = [...before].filter((k) => !after.has(k));
  const changed: string[] = [];
  for (const k of now.filter(isManager)) {
    const copiedValue = copiedManagers.get(label(k));
    if (copiedValue && !equalBytes(await source.read(k), copiedValue)) changed.push(label(k));
  }
  if (added.length + removed.length + changed.length === 0) return;
  const sample = (keys: string[]): string => (keys.length === 0 ? '' : ` (${keys.slice(0, 3).join(', ')}${keys.length > 3 ? ', ...' : ''})`);
  throw new MigrationVerificationError(
    `the source changed while it was being copied: ${added.length} key(s) added${sample(added)}, ${removed.length} removed${sample(removed)}, ` +
      `${changed.length} rewritten${sample(changed)}. The target is not a consistent copy; stop the node and migrate again into an empty target (overwrite: true refuses monitor data the source no longer has)`,
  );
}
