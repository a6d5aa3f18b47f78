/**
 * The store's state and its operations (as effect generators, see effects.ts): key layout,
 * encryption, the versions this store believes the server holds, conditional writes, the
 * read-back that settles ambiguous writes, and schema detection at open.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { ConflictError, errorProvesNotApplied, NoSuchKeyError, VssError } from '../client/index.js';
import { CryptoError, decryptStorable, encryptStorable, type KeyObfuscator } from '../crypto/index.js';
import { int64ToBigInt, keyValue, UNCONDITIONAL_VERSION, type vss } from '../protocol/index.js';
import { call, record, type Operation } from './effects.js';
import {
  ConcurrentWriterError,
  DataIntegrityError,
  InvalidKeyError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreError,
  StoreIOError,
  StoreOpenError,
} from './errors.js';
import { decodeSchemaVersion, encodeSchemaVersion, StoreLayout, V0_PROBE_PREFIX, type SchemaVersion, type StoreAddress } from './layout.js';
import type { StoreKey } from './types.js';
import { versionId, type VersionChange } from './version-ledger.js';
import { KeyedWriteQueue } from './write-queue.js';

export type WriteMode = 'conditional' | 'unconditional';

/** A write or remove whose outcome is unknown (its reply was lost); settled by reading back. */
interface UncertainWrite {
  kind: 'write' | 'remove';
  /** The version the key had before the attempt (0 = did not exist). */
  expected: bigint;
  /** SHA-256 of the value a write attempted to store. */
  digest?: Uint8Array;
}

/**
 * What a read-back says: no attempt to settle ('none'), ours committed, ours did not, or an
 * older attempt of ours landed late instead ('superseded': the key is at a version we wrote).
 */
type SettleOutcome = 'none' | 'committed' | 'not-committed' | 'superseded';

/** Late attempts remembered per key (each is a request that failed; more than a few in a row is an outage). */
const MAX_LATE_ATTEMPTS = 8;
/**
 * Keys with late attempts remembered (the oldest is forgotten first). Late writes outlive later
 * writes of their key (see #late), so without a bound a long-lived store on a flaky network
 * would keep one entry per key that ever failed.
 */
const MAX_LATE_KEYS = 4096;

export interface EngineConfig {
  storeId: string;
  dataEncryptionKey: Uint8Array;
  obfuscator: KeyObfuscator;
  mode: WriteMode;
}

/** Where an operation's key lives, in both the caller's and the server's terms. */
export interface Target {
  where: StoreKey;
  address: StoreAddress;
}

const describe = (where: StoreKey) => JSON.stringify([where.primaryNamespace, where.secondaryNamespace, where.key]);

const describeBatch = (items: readonly { target: Target }[]) =>
  `a batch of ${items.length} keys (${items.map((i) => describe(i.target.where)).join(', ')})`;

const bytesEqual = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Maps any failure to the store's typed errors, keeping the original as `cause`. */
export function storeFailure(error: unknown, context: string): StoreError {
  if (error instanceof StoreError) return error;
  if (error instanceof CryptoError) return new DataIntegrityError(`${context}: ${error.message}`, { cause: error });
  if (error instanceof VssError) return new StoreIOError(`${context}: ${error.message}`, { cause: error });
  return new StoreIOError(`${context}: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}

export class StoreEngine {
  readonly storeId: string;
  readonly mode: WriteMode;
  readonly queue = new KeyedWriteQueue();
  layout: StoreLayout | undefined;
  /** Server versions this store believes current, by store key (absent = no such key). */
  readonly versions = new Map<string, bigint>();
  readonly #uncertain = new Map<string, UncertainWrite>();
  /**
   * Attempts whose outcome was unknown and whose request may still reach the server (a broken
   * connection or an aborted request does not stop a request already sent). If one lands
   * later, the next compare-and-set meets our own change, not another writer's.
   * Writes are kept whatever their read-back said (the client may have sent one more than
   * once), also after later writes of the key apply: VSS restarts a re-created key at version
   * 1, so after a remove one can still land on a later version of the same number, and its
   * landing stays recognisable (our sealed value). A remove is kept only once found not
   * applied, and dropped as soon as a later change of ours is known applied or the key is seen
   * at another version: from then on a vanished key is acknowledged data lost, never to be
   * explained away as the remove the caller asked for.
   */
  readonly #late = new Map<string, UncertainWrite[]>();
  /** Keys whose last conditional write met another version; writes fail fast until a read. */
  readonly #conflicted = new Set<string>();
  /** Sequence number of the last local change per key, so stale reads/lists never teach us. */
  readonly #lastChange = new Map<string, number>();
  #sequence = 0;
  readonly #dataKey: Uint8Array;
  readonly #obfuscator: KeyObfuscator;

  constructor(config: EngineConfig) {
    this.storeId = config.storeId;
    this.mode = config.mode;
    this.#dataKey = config.dataEncryptionKey;
    this.#obfuscator = config.obfuscator;
  }

  get conditional(): boolean {
    return this.mode === 'conditional';
  }

  target(primaryNamespace: string, secondaryNamespace: string, key: string): Target {
    const where = { primaryNamespace, secondaryNamespace, key };
    const layout = this.#layout();
    const address = layout.address(primaryNamespace, secondaryNamespace, key);
    // The marker decides how the store is read at open: overwriting or removing it through
    // the KV API would make the store unopenable (or look like a wrong seed).
    if (address.storeKey === layout.schemaMarker().storeKey) {
      throw new InvalidKeyError(`${describe(where)} is reserved for the store's schema marker`);
    }
    return { where, address };
  }

  /** Ledger id of a store key. */
  id(storeKey: string): string {
    return versionId(this.storeId, storeKey);
  }

  // ---------------------------------------------------------------- open

  /**
   * Determines the schema (reading the marker, else probing for V0, else creating the V1
   * marker on a definitely empty store) and learns every key's version with one paginated
   * listing. Anything other than a readable marker, a recognisable V0 store or an empty
   * store fails: never treat an unreadable store as empty.
   */
  *open(): Operation<{ schema: SchemaVersion; created: boolean }> {
    const v1 = new StoreLayout(1, this.#obfuscator);
    const marker = v1.schemaMarker();
    for (let attempt = 0; attempt < 2; attempt++) {
      let schema: SchemaVersion | undefined;
      try {
        const found = yield* this.#getObject(marker.storeKey);
        const { value } = decryptStorable(found.value?.value ?? new Uint8Array(), this.#dataKey, marker.aad);
        schema = decodeSchemaVersion(value);
      } catch (error) {
        if (error instanceof CryptoError) {
          throw new StoreOpenError('the schema marker does not decrypt with this key: wrong seed/keys, or the marker was tampered with', {
            cause: new DataIntegrityError('schema marker failed authentication', { cause: error }),
          });
        }
        if (!(error instanceof NoSuchKeyError)) throw storeFailure(error, 'reading the schema marker');
      }
      const listed = yield* this.#listEverything();
      let created = false;
      if (schema === undefined) {
        if (listed.size === 0) {
          const storable = encryptStorable(encodeSchemaVersion(1), UNCONDITIONAL_VERSION, this.#dataKey, { aad: marker.aad });
          try {
            yield* call('putObjects', {
              storeId: this.storeId,
              transactionItems: [keyValue(marker.storeKey, this.conditional ? 0n : UNCONDITIONAL_VERSION, storable)],
            });
          } catch (error) {
            // Another instance created the store at the same moment: start over and read its marker.
            if (error instanceof ConflictError && attempt === 0) continue;
            throw storeFailure(error, 'creating the schema marker');
          }
          listed.set(marker.storeKey, 1n);
          schema = 1;
          created = true;
        } else if (listed.has(marker.storeKey) && attempt === 0) {
          // The marker was absent when read and present when listed: another instance created
          // the store in between. Read its marker again rather than calling the store foreign.
          continue;
        } else if ([...listed.keys()].some((k) => k.startsWith(V0_PROBE_PREFIX))) {
          schema = 0;
        } else {
          throw new StoreOpenError(
            `store ${JSON.stringify(this.storeId)} holds ${listed.size} keys but no schema marker readable with these keys: wrong seed/keys, or not an LDK Node store`,
          );
        }
      }
      this.layout = new StoreLayout(schema, this.#obfuscator);
      if (schema === 0) this.#checkV0Ownership(listed, marker.storeKey);
      for (const [storeKey, version] of listed) this.versions.set(storeKey, version);
      return { schema, created };
    }
    throw new StoreOpenError('the schema marker appeared and vanished while opening the store');
  }

  /** A V0 store has no marker to authenticate the keys; deobfuscating some of its keys does. */
  #checkV0Ownership(listed: Map<string, bigint>, markerKey: string): void {
    const layout = this.#layout();
    let checked = 0;
    for (const storeKey of listed.keys()) {
      // A V0 marker (00 00) still sits at the V1 address, which is not a V0 key; it was
      // authenticated when it decrypted.
      if (storeKey === markerKey) continue;
      if (checked++ >= 16) break;
      try {
        layout.parse(storeKey);
      } catch (error) {
        throw new StoreOpenError('this V0 store\'s keys do not deobfuscate with these keys: wrong seed/keys', { cause: error });
      }
    }
  }

  /**
   * GetObject of one key. A reply carrying another key (a broken server, or a proxy caching by
   * URL: every GetObject is a POST to the same path) is refused as such; its value would
   * otherwise fail to decrypt (the key is its AAD) and read as a wrong seed, tampering, or
   * another writer. A reply without a key (protobuf's empty default) is left to decryption.
   */
  *#getObject(storeKey: string): Operation<vss.GetObjectResponse> {
    const found = yield* call('getObject', { storeId: this.storeId, key: storeKey });
    const served = found.value?.key;
    if (served && served !== storeKey) {
      throw new DataIntegrityError(
        `the server answered a read of store key ${JSON.stringify(storeKey)} with the value of another key (${JSON.stringify(served.slice(0, 200))}): a broken server or proxy`,
      );
    }
    return found;
  }

  *#listEverything(): Operation<Map<string, bigint>> {
    const listed = new Map<string, bigint>();
    yield* this.#paginate(undefined, (kv) => {
      listed.set(kv.key ?? '', int64ToBigInt(kv.version));
    });
    return listed;
  }

  /**
   * Compares the versions a ledger remembers with the server's; a key that is older on the
   * server, or missing, means the server lost writes this device saw acknowledged.
   */
  rollbackCheck(saved: ReadonlyMap<string, bigint>): { changes: VersionChange[] } {
    const server = new Map<string, bigint>();
    for (const [storeKey, version] of this.versions) server.set(this.id(storeKey), version);
    let behind = 0;
    let missing = 0;
    for (const [id, version] of saved) {
      const current = server.get(id);
      if (current === undefined) missing += 1;
      else if (current < version) behind += 1;
    }
    if (behind + missing > 0) {
      // Not one remembered key on the server, not even the schema marker that every open
      // lists (a wiped server gets a new one under the same id): the ledger's ids hash another
      // store's id. Say so rather than blaming the server.
      const noneKnown = missing === saved.size && server.size > 0;
      throw new RollbackDetectedError(
        `the server is behind what this device saw: ${behind} keys have older versions and ${missing} are missing. ` +
          'The server went back in time (restored from an old backup or lost writes), or another writer rewrote the store. Refusing to open.' +
          (noneKnown
            ? ' None of the keys the version ledger remembers belongs to this store, not even its schema marker: ' +
              'is the ledger file also used by another store (another storeId or seed), or kept across a reset of a development server? ' +
              'Each store needs its own ledger file, deleted when its server is deliberately reset.'
            : ''),
      );
    }
    const changes: VersionChange[] = [];
    for (const [id, version] of server) if (saved.get(id) !== version) changes.push({ id, version });
    return { changes };
  }

  // ---------------------------------------------------------------- reads

  *read(target: Target): Operation<Uint8Array> {
    const { storeKey, aad } = target.address;
    const startedAt = this.#sequence;
    let found: vss.GetObjectResponse;
    try {
      found = yield* this.#getObject(storeKey);
    } catch (error) {
      if (error instanceof NoSuchKeyError) {
        yield* this.#learn(storeKey, null, startedAt);
        throw new KeyNotFoundError(target.where.primaryNamespace, target.where.secondaryNamespace, target.where.key, { cause: error });
      }
      throw storeFailure(error, `reading ${describe(target.where)}`);
    }
    const serverVersion = int64ToBigInt(found.value?.version);
    // The key was present at another version after any late remove of ours was found not
    // applied (no local change since this read started): from then on that remove cannot
    // explain the key vanishing, even while the version is not adopted (a write uncertain).
    if (serverVersion !== this.versions.get(storeKey) && (this.#lastChange.get(storeKey) ?? -1) <= startedAt) this.#forgetLateRemoves(storeKey);
    let opened: { value: Uint8Array; version: bigint };
    try {
      opened = decryptStorable(found.value?.value ?? new Uint8Array(), this.#dataKey, aad);
    } catch (error) {
      throw storeFailure(error, `value of ${describe(target.where)} failed to decrypt`);
    }
    // Values written conditionally seal their version; a mismatch means the server serves a
    // ciphertext under a version it was not written for (a replayed or rolled-back value).
    if (opened.version !== UNCONDITIONAL_VERSION && opened.version !== serverVersion) {
      throw new DataIntegrityError(
        `value of ${describe(target.where)} was sealed for version ${opened.version} but is served as version ${serverVersion}`,
      );
    }
    yield* this.#learn(storeKey, serverVersion, startedAt);
    return opened.value;
  }

  *list(primaryNamespace: string, secondaryNamespace: string): Operation<string[]> {
    const layout = this.#layout();
    return yield* this.#listKeys(layout, layout.listPrefix(primaryNamespace, secondaryNamespace), (storeKey) =>
      layout.keyInNamespace(storeKey, primaryNamespace, secondaryNamespace),
    );
  }

  *listAll(): Operation<StoreKey[]> {
    const layout = this.#layout();
    return yield* this.#listKeys(layout, undefined, (storeKey) => layout.parse(storeKey));
  }

  /**
   * The keys listed under `keyPrefix` (all keys when undefined), each as `keyOf` reads its store
   * key; a store key `keyOf` maps to undefined is left out, and so is the schema marker. The
   * versions of the keys kept are checked against what this store learned before the listing.
   */
  *#listKeys<K>(layout: StoreLayout, keyPrefix: string | undefined, keyOf: (storeKey: string) => K | undefined): Operation<K[]> {
    const marker = layout.schemaMarker().storeKey;
    const startedAt = this.#sequence;
    const keys: K[] = [];
    const listed: Array<[string, bigint]> = [];
    yield* this.#paginate(keyPrefix, (kv) => {
      const storeKey = kv.key ?? '';
      if (storeKey === marker) return;
      const key = keyOf(storeKey);
      if (key === undefined) return;
      keys.push(key);
      listed.push([storeKey, int64ToBigInt(kv.version)]);
    });
    this.#checkListed(listed, startedAt);
    return keys;
  }

  *#paginate(keyPrefix: string | undefined, onKey: (kv: vss.KeyValue.$Properties) => void): Operation<void> {
    let pageToken: string | undefined;
    const seenTokens = new Set<string>();
    do {
      let page: vss.ListKeyVersionsResponse;
      try {
        page = yield* call('listKeyVersions', {
          storeId: this.storeId,
          ...(keyPrefix !== undefined ? { keyPrefix } : {}),
          ...(pageToken !== undefined ? { pageToken } : {}),
        });
      } catch (error) {
        throw storeFailure(error, 'listing keys');
      }
      for (const kv of page.keyVersions) {
        try {
          onKey(kv);
        } catch (error) {
          throw storeFailure(error, 'listing keys');
        }
      }
      pageToken = page.nextPageToken || undefined;
      if (pageToken !== undefined) {
        if (seenTokens.has(pageToken)) throw new StoreIOError('the server repeated a page token while listing keys');
        seenTokens.add(pageToken);
      }
    } while (pageToken !== undefined);
  }

  /**
   * Adopts a version the server showed us in a read, unless a local change to the key happened
   * since the request was made (then the answer may predate it). A version LOWER than one this
   * store already knew is a rollback and is refused.
   */
  *#learn(storeKey: string, version: bigint | null, startedAt: number): Operation<void> {
    if (!this.#checkServerVersion(storeKey, version, startedAt)) return;
    this.#conflicted.delete(storeKey);
    const known = this.versions.get(storeKey);
    if (version === (known ?? null)) return;
    // What this store knows changed: an answer to a request sent before now may predate it (a
    // read or listing served before another writer's change, arriving after this one), so it
    // must neither teach an older version nor be taken for a rollback.
    this.#touch(storeKey);
    if (version === null) {
      // Our own remove landed late (#checkServerVersion let the absence through only then).
      this.versions.delete(storeKey);
      this.#forgetLateRemoves(storeKey);
      yield* record([{ id: this.id(storeKey), version: null }]);
      return;
    }
    this.versions.set(storeKey, version);
    yield* record([{ id: this.id(storeKey), version }]);
  }

  /**
   * A listing only checks for rollback: it adopts nothing. The caller never saw the values, so
   * taking another writer's newer version from a listing would let this store's next write
   * overwrite data it never read (and would lift a conflict without a read).
   */
  #checkListed(listed: ReadonlyArray<[string, bigint]>, startedAt: number): void {
    for (const [storeKey, version] of listed) this.#checkServerVersion(storeKey, version, startedAt);
  }

  /**
   * Whether a version the server showed us speaks for the key's current state (no local change
   * since the request started, no write of uncertain outcome); throws RollbackDetectedError when
   * it is lower than one this store already saw.
   */
  #checkServerVersion(storeKey: string, version: bigint | null, startedAt: number): boolean {
    if (!this.conditional) return false;
    if (!this.queue.isIdle(storeKey) || this.#uncertain.has(storeKey)) return false;
    if ((this.#lastChange.get(storeKey) ?? -1) > startedAt) return false;
    const known = this.versions.get(storeKey);
    // A remove of ours that a read-back found not applied, expecting the version this store
    // still believes, landed after all: the key is gone because the caller removed it. (Another
    // writer's delete of that same version looks alike and has the same effect.)
    if (known !== undefined && version === null && this.#lateAttempts(storeKey).some((late) => late.kind === 'remove')) return true;
    if (known !== undefined && (version === null || version < known)) {
      throw new RollbackDetectedError(
        `the server holds ${version === null ? 'no' : `version ${version} of the`} key this store last saw at version ${known}: ` +
          'the server went back in time, or another writer deleted and re-created it',
      );
    }
    return true;
  }

  // ---------------------------------------------------------------- writes

  *write(target: Target, value: Uint8Array): Operation<void> {
    const { storeKey, aad } = target.address;
    if (!this.conditional) {
      const storable = encryptStorable(value, UNCONDITIONAL_VERSION, this.#dataKey, { aad });
      try {
        yield* call('putObjects', { storeId: this.storeId, transactionItems: [keyValue(storeKey, UNCONDITIONAL_VERSION, storable)] });
      } catch (error) {
        throw storeFailure(error, `writing ${describe(target.where)}`);
      }
      this.#touch(storeKey);
      this.versions.set(storeKey, 1n);
      return;
    }
    yield* this.#settleUncertain(target);
    this.#failIfConflicted(target);
    for (let tries = 0; ; tries++) {
      const expected = this.versions.get(storeKey) ?? 0n;
      const next = expected + 1n;
      const storable = encryptStorable(value, next, this.#dataKey, { aad });
      try {
        yield* call('putObjects', { storeId: this.storeId, transactionItems: [keyValue(storeKey, expected, storable)] });
      } catch (error) {
        const attempt: UncertainWrite = { kind: 'write', expected, digest: sha256(value) };
        if ((yield* this.#afterFailedWrite(error, target, attempt, 'writing', tries === 0)) === 'retry') continue;
        return;
      }
      this.#applied(storeKey);
      this.versions.set(storeKey, next);
      yield* record([{ id: this.id(storeKey), version: next }]);
      return;
    }
  }

  /**
   * Writes several distinct keys in ONE PutObjects: the server applies all of them or none.
   * Each item carries its own expected version (conditional mode), so a conflict on any key
   * fails the whole batch. The server does not say which item conflicted, so every key of
   * the batch is then treated as conflicted until it is read. A lost reply leaves every key
   * uncertain, settled per key by reading back (all of them or none committed).
   */
  *writeBatch(items: readonly { target: Target; value: Uint8Array }[]): Operation<void> {
    if (items.length === 0) return;
    const keys = items.map((i) => i.target.address.storeKey);
    if (!this.conditional) {
      const transactionItems = items.map(({ target, value }) =>
        keyValue(target.address.storeKey, UNCONDITIONAL_VERSION, encryptStorable(value, UNCONDITIONAL_VERSION, this.#dataKey, { aad: target.address.aad })),
      );
      try {
        yield* call('putObjects', { storeId: this.storeId, transactionItems });
      } catch (error) {
        throw storeFailure(error, `writing ${describeBatch(items)}`);
      }
      for (const storeKey of keys) {
        this.#touch(storeKey);
        this.versions.set(storeKey, 1n);
      }
      return;
    }
    for (const { target } of items) {
      yield* this.#settleUncertain(target);
      this.#failIfConflicted(target);
    }
    for (let tries = 0; ; tries++) {
      const expected = keys.map((k) => this.versions.get(k) ?? 0n);
      const transactionItems = items.map(({ target, value }, i) =>
        keyValue(target.address.storeKey, expected[i], encryptStorable(value, expected[i] + 1n, this.#dataKey, { aad: target.address.aad })),
      );
      try {
        yield* call('putObjects', { storeId: this.storeId, transactionItems });
      } catch (error) {
        for (const storeKey of keys) this.#touch(storeKey);
        const attempts = items.map(({ value }, i): UncertainWrite => ({ kind: 'write', expected: expected[i], digest: sha256(value) }));
        if (error instanceof ConflictError) {
          // The batch applied all or nothing, so its keys tell one story: all ours (an earlier
          // attempt of this batch committed), some moved by an older attempt of ours that
          // landed late (retry once), or another writer.
          // After a lost reply every key is uncertain, even if reading one of them back fails.
          if (error.afterAmbiguousAttempt) items.forEach(({ target }, i) => this.#uncertain.set(target.address.storeKey, attempts[i]));
          const outcomes: SettleOutcome[] = [];
          try {
            for (const [i, { target }] of items.entries()) {
              outcomes.push(yield* this.#explainConflict(target, attempts[i], error.afterAmbiguousAttempt));
            }
          } catch (settleError) {
            if (settleError instanceof ConcurrentWriterError) for (const k of keys) this.#conflicted.add(k);
            throw settleError;
          }
          if (error.afterAmbiguousAttempt && outcomes.every((o) => o === 'committed')) return;
          if (tries === 0 && outcomes.includes('superseded') && !outcomes.includes('committed')) continue;
          for (const storeKey of keys) this.#conflicted.add(storeKey);
          throw new ConcurrentWriterError(
            `writing ${describeBatch(items)}: the server holds a version other than the one this store last saw for at least one of them. ` +
              'Another writer changed a key, or the server lost writes. Nothing was overwritten; read the keys before writing them again.',
            { cause: error },
          );
        }
        if (!errorProvesNotApplied(error)) items.forEach(({ target }, i) => this.#uncertain.set(target.address.storeKey, attempts[i]));
        throw storeFailure(error, `writing ${describeBatch(items)}`);
      }
      const changes: VersionChange[] = [];
      keys.forEach((storeKey, i) => {
        this.#applied(storeKey);
        this.versions.set(storeKey, expected[i] + 1n);
        changes.push({ id: this.id(storeKey), version: expected[i] + 1n });
      });
      yield* record(changes);
      return;
    }
  }

  *remove(target: Target): Operation<void> {
    const { storeKey } = target.address;
    if (!this.conditional) {
      try {
        yield* call('deleteObject', { storeId: this.storeId, keyValue: keyValue(storeKey, UNCONDITIONAL_VERSION) });
      } catch (error) {
        throw storeFailure(error, `removing ${describe(target.where)}`);
      }
      this.#touch(storeKey);
      this.versions.delete(storeKey);
      return;
    }
    yield* this.#settleUncertain(target);
    this.#failIfConflicted(target);
    for (let tries = 0; ; tries++) {
      const expected = this.versions.get(storeKey);
      if (expected === undefined) {
        // 'ours': a create of ours landed late; its version is now known, so remove it.
        if ((yield* this.#removeUnknown(target)) === 'ours' && tries === 0) continue;
        return;
      }
      // Forget the version BEFORE deleting: a ledger may under-state what the server holds
      // (less detection) but must never over-state it (a false rollback alarm).
      yield* record([{ id: this.id(storeKey), version: null }]);
      try {
        // DeleteObject ignores versions; a delete item inside a put is checked (409 on mismatch).
        yield* call('putObjects', { storeId: this.storeId, deleteItems: [keyValue(storeKey, expected)] });
      } catch (error) {
        if (errorProvesNotApplied(error) && !(error instanceof ConflictError)) yield* record([{ id: this.id(storeKey), version: expected }]);
        if ((yield* this.#afterFailedWrite(error, target, { kind: 'remove', expected }, 'removing', tries === 0)) === 'retry') continue;
        return;
      }
      this.#applied(storeKey);
      this.versions.delete(storeKey);
      return;
    }
  }

  /**
   * Remove of a key with no known version. Absent on the server: a no-op, as LDK expects. But
   * another writer may have created it since open, and removing it unseen would discard that
   * writer's data, so one read tells (only for keys this store does not know to exist). The one
   * exception is our own create that failed and landed late: then the version is adopted.
   */
  *#removeUnknown(target: Target): Operation<'absent' | 'ours'> {
    const { storeKey, aad } = target.address;
    let found: vss.GetObjectResponse;
    try {
      found = yield* this.#getObject(storeKey);
    } catch (error) {
      if (error instanceof NoSuchKeyError) return 'absent';
      throw storeFailure(error, `checking ${describe(target.where)} before removing it`);
    }
    const current = int64ToBigInt(found.value?.version);
    for (const late of this.#lateAttempts(storeKey)) {
      if ((yield* this.#outcome(late, found.value ?? undefined, current, aad, storeKey)) === 'committed') {
        this.#forgetLateRemoves(storeKey);
        return 'ours';
      }
    }
    this.#conflicted.add(storeKey);
    throw new ConcurrentWriterError(
      `removing ${describe(target.where)}: the server holds version ${int64ToBigInt(found.value?.version)} of a key this store never saw ` +
        '(another writer created it). Nothing was removed; read the key before removing it.',
    );
  }

  /**
   * Returns 'committed' only if a read-back proved the failed attempt committed after all, and
   * 'retry' (only when `mayRetry`) if the conflict was an older attempt of ours landing late;
   * otherwise throws.
   */
  *#afterFailedWrite(error: unknown, target: Target, attempt: UncertainWrite, verb: string, mayRetry: boolean): Operation<'committed' | 'retry'> {
    const { storeKey } = target.address;
    this.#touch(storeKey);
    if (error instanceof ConflictError) {
      const outcome = yield* this.#explainConflict(target, attempt, error.afterAmbiguousAttempt);
      if (outcome === 'committed') return 'committed';
      if (outcome === 'superseded' && mayRetry) return 'retry';
      this.#conflicted.add(storeKey);
      throw new ConcurrentWriterError(
        `${verb} ${describe(target.where)}: the server's version is not ${attempt.expected}, the one this store last saw. ` +
          'Another writer changed the key, or the server lost writes. Nothing was overwritten.',
        { cause: error },
      );
    }
    if (!errorProvesNotApplied(error)) this.#uncertain.set(storeKey, attempt);
    throw storeFailure(error, `${verb} ${describe(target.where)}`);
  }

  /**
   * Why a compare-and-set met another version, where our own requests can tell: an earlier
   * attempt of this one committed ('committed', only after an ambiguous attempt), or an older
   * attempt of ours landed late ('superseded'). 'none' or 'not-committed' when neither; throws
   * ConcurrentWriterError when the read-back shows another writer.
   */
  *#explainConflict(target: Target, attempt: UncertainWrite, ambiguous: boolean): Operation<SettleOutcome> {
    const { storeKey } = target.address;
    if (ambiguous) {
      this.#uncertain.set(storeKey, attempt);
      return yield* this.#settleUncertain(target);
    }
    const late = this.#lateAttempts(storeKey);
    if (late.length === 0) return 'none';
    this.#uncertain.set(storeKey, late[late.length - 1]);
    const outcome = yield* this.#settleUncertain(target);
    return outcome === 'committed' ? 'superseded' : outcome;
  }

  /**
   * Settles a write or remove whose reply was lost by reading the key back: our value at the
   * next version means it committed; the old version means it did not (but its request may
   * still land, so it is remembered as late); an older late attempt of ours having landed
   * instead means 'superseded'; anything else is another writer's doing. Network failures
   * leave it unsettled (to be retried).
   */
  *#settleUncertain(target: Target): Operation<SettleOutcome> {
    const { storeKey, aad } = target.address;
    const attempt = this.#uncertain.get(storeKey);
    if (!attempt) return 'none';
    let found: vss.KeyValue.$Properties | undefined;
    try {
      found = (yield* this.#getObject(storeKey)).value ?? undefined;
    } catch (error) {
      if (!(error instanceof NoSuchKeyError)) throw storeFailure(error, `checking the outcome of an earlier write of ${describe(target.where)}`);
    }
    const current = found ? int64ToBigInt(found.version) : undefined;
    this.#uncertain.delete(storeKey);
    this.#touch(storeKey);
    const outcome = yield* this.#outcome(attempt, found, current, aad, storeKey);
    const late = this.#lateAttempts(storeKey);
    // A write whose outcome was unknown may still land (or land again: the client may have
    // sent it more than once), even after a remove and a re-create brought the key back to
    // the version it expects; its landing stays recognisable (our sealed value).
    if (attempt.kind === 'write') this.#rememberLate(storeKey, attempt);
    if (outcome === 'not-committed') {
      // A remove too: the key then vanishes while this store still believes the version it
      // expected (see #checkServerVersion, and #explainConflict for a compare-and-set).
      if (attempt.kind === 'remove') this.#rememberLate(storeKey, attempt);
      return outcome;
    }
    this.#forgetLateRemoves(storeKey);
    if (outcome === 'committed') return outcome;
    for (const older of late) {
      if (older !== attempt && (yield* this.#outcome(older, found, current, aad, storeKey)) === 'committed') return 'superseded';
    }
    this.#conflicted.add(storeKey);
    throw new ConcurrentWriterError(
      `an earlier ${attempt.kind} of ${describe(target.where)} had an unknown outcome, and the server now holds ` +
        `${current === undefined ? 'no value' : `version ${current}`} that is neither the old state nor ours: another writer changed the key`,
    );
  }

  /** What the key's current state says about one attempt; adopts the version when it committed. */
  *#outcome(
    attempt: UncertainWrite,
    found: vss.KeyValue.$Properties | undefined,
    current: bigint | undefined,
    aad: Uint8Array,
    storeKey: string,
  ): Operation<'committed' | 'not-committed' | 'neither'> {
    if (attempt.kind === 'write') {
      if (current === attempt.expected || (current === undefined && attempt.expected === 0n)) return 'not-committed';
      if (current === attempt.expected + 1n && found && this.#holds(found, aad, current, attempt.digest)) {
        this.versions.set(storeKey, current);
        yield* record([{ id: this.id(storeKey), version: current }]);
        return 'committed';
      }
      return 'neither';
    }
    if (current === undefined) {
      this.versions.delete(storeKey);
      yield* record([{ id: this.id(storeKey), version: null }]);
      return 'committed';
    }
    // Not applied yet, but the request may still land: the ledger keeps the key forgotten (it may
    // under-state what the server holds, never over-state it).
    if (current === attempt.expected) return 'not-committed';
    return 'neither';
  }

  /** Whether a stored value is exactly what we attempted to write at `version`. */
  #holds(found: vss.KeyValue.$Properties, aad: Uint8Array, version: bigint, digest: Uint8Array | undefined): boolean {
    try {
      const opened = decryptStorable(found.value ?? new Uint8Array(), this.#dataKey, aad);
      return opened.version === version && digest !== undefined && bytesEqual(sha256(opened.value), digest);
    } catch {
      return false;
    }
  }

  #failIfConflicted(target: Target): void {
    if (this.#conflicted.has(target.address.storeKey)) {
      throw new ConcurrentWriterError(
        `${describe(target.where)} was changed by another writer; read it before writing it again (nothing was sent)`,
      );
    }
  }

  #touch(storeKey: string): void {
    this.#lastChange.set(storeKey, ++this.#sequence);
  }

  /**
   * Late attempts that could apply now: those expecting the version this store believes the
   * key has. Once the store learned another version (a read, another writer, our own write),
   * the others cannot, unless a remove and a re-create bring the key back to their version.
   */
  #lateAttempts(storeKey: string): UncertainWrite[] {
    const expected = this.versions.get(storeKey) ?? 0n;
    return (this.#late.get(storeKey) ?? []).filter((late) => late.expected === expected);
  }

  #rememberLate(storeKey: string, attempt: UncertainWrite): void {
    const known = this.#late.get(storeKey) ?? [];
    if (known.includes(attempt)) return;
    // Re-inserted so that the key most recently failed is the last one forgotten.
    this.#late.delete(storeKey);
    this.#late.set(storeKey, [...known, attempt].slice(-MAX_LATE_ATTEMPTS));
    if (this.#late.size > MAX_LATE_KEYS) this.#late.delete(this.#late.keys().next().value!);
  }

  /** A later change of ours is known applied (or a late remove landed): see #late. */
  #forgetLateRemoves(storeKey: string): void {
    const known = this.#late.get(storeKey);
    if (!known) return;
    const writes = known.filter((late) => late.kind === 'write');
    if (writes.length > 0) this.#late.set(storeKey, writes);
    else this.#late.delete(storeKey);
  }

  /** A compare-and-set of ours applied: no late remove may explain the key's absence any more. */
  #applied(storeKey: string): void {
    this.#touch(storeKey);
    this.#forgetLateRemoves(storeKey);
  }

  #layout(): StoreLayout {
    if (!this.layout) throw new StoreOpenError('the store is not open');
    return this.layout;
  }
}

