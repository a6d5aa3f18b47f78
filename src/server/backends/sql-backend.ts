/**
 * The storage backend on the reference schema (`vss_db`), shared by PostgreSQL and PGlite.
 * Statements mirror the reference server's so both servers can share one database:
 * version -1 upserts (resetting to 1), 0 inserts-if-absent, v updates where version = v;
 * `sort_order` (a sequence) is set on insert only and drives ListKeyVersions order.
 */
import type { Logger } from 'pino';
import { GLOBAL_VERSION_KEY } from '../../protocol/index.js';
import { ConflictError, PayloadTooLargeError } from '../errors.js';
import { Batcher, type BatcherOptions, type BatcherStats } from './batcher.js';
import { CREATE_ONLY_VERSION, drawsSortOrdersFirst, isInsertAttempt, nextVersion, planWrites, statementOrder, UNCONDITIONAL, type WriteStep } from './semantics.js';
import { sqlState, type SqlDriver, type SqlQuery, type SqlSession } from './sql-driver.js';
import type { DeleteItem, ListedKey, ListQuery, PutRequest, StorageBackend, StoredRecord } from './types.js';

const UPSERT: SqlQuery = {
  name: 'vss_put_unconditional',
  text: `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at)
    VALUES ($1, $2, $3, $4, 1, now(), now())
    ON CONFLICT (user_token, store_id, key) DO UPDATE
    SET value = EXCLUDED.value, version = 1, last_updated_at = EXCLUDED.last_updated_at`,
};
const INSERT_IF_ABSENT: SqlQuery = {
  name: 'vss_put_create',
  text: `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at)
    VALUES ($1, $2, $3, $4, 1, now(), now())
    ON CONFLICT DO NOTHING`,
};
// The same inserts with a creation sequence number allocated beforehand (see SqlBackend.put).
const UPSERT_AT: SqlQuery = {
  name: 'vss_put_unconditional_at',
  text: `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at, sort_order)
    VALUES ($1, $2, $3, $4, 1, now(), now(), $5)
    ON CONFLICT (user_token, store_id, key) DO UPDATE
    SET value = EXCLUDED.value, version = 1, last_updated_at = EXCLUDED.last_updated_at`,
};
const INSERT_IF_ABSENT_AT: SqlQuery = {
  name: 'vss_put_create_at',
  text: `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at, sort_order)
    VALUES ($1, $2, $3, $4, 1, now(), now(), $5)
    ON CONFLICT (user_token, store_id, key) DO NOTHING`,
};
const ALLOCATE_SORT_ORDERS: SqlQuery = {
  name: 'vss_allocate_sort_orders',
  text: `SELECT nextval(pg_get_serial_sequence('vss_db', 'sort_order')) AS sort_order FROM generate_series(1, $1::int)`,
};
const UPDATE_IF_VERSION: SqlQuery = {
  name: 'vss_put_update',
  text: `UPDATE vss_db SET value = $4, version = $5, last_updated_at = now()
    WHERE user_token = $1 AND store_id = $2 AND key = $3 AND version = $6`,
};
const DELETE_ANY: SqlQuery = {
  name: 'vss_delete_unconditional',
  text: 'DELETE FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = $3',
};
const DELETE_IF_VERSION: SqlQuery = {
  name: 'vss_delete_versioned',
  text: 'DELETE FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = $3 AND version = $4',
};
// Values up to the inline limit come back in the same round trip; bigger ones are read in
// chunks, because a driver's text protocol would need a string twice the value's size.
const GET: SqlQuery = {
  name: 'vss_get',
  text: `SELECT version, octet_length(value) AS size,
      CASE WHEN octet_length(value) <= $4 THEN value END AS value
    FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = $3`,
};
const GET_CHUNK: SqlQuery = {
  name: 'vss_get_chunk',
  text: 'SELECT substring(value FROM $4::int FOR $5::int) AS chunk FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = $3',
};
const LIST_FIRST: SqlQuery = {
  name: 'vss_list_first',
  text: `SELECT key, version, sort_order FROM vss_db
    WHERE user_token = $1 AND store_id = $2 AND key LIKE $3 AND key <> '${GLOBAL_VERSION_KEY}'
    ORDER BY sort_order DESC LIMIT $4`,
};
const LIST_AFTER: SqlQuery = {
  name: 'vss_list_after',
  text: `SELECT key, version, sort_order FROM vss_db
    WHERE user_token = $1 AND store_id = $2 AND key LIKE $3 AND key <> '${GLOBAL_VERSION_KEY}' AND sort_order < $5
    ORDER BY sort_order DESC LIMIT $4`,
};
const PING: SqlQuery = { name: 'vss_ping', text: 'SELECT 1 AS ok' };

// Batched forms of the single-row statements (see batcher.ts). Rows arrive as parallel arrays
// (values as bytea[]: both drivers send an array parameter as text, in hex), sorted by (user_token,
// store_id, key): every statement locks rows in that order, as multi-item puts do, so
// concurrent writers can wait for each other but never deadlock.
const GET_BATCH: SqlQuery = {
  name: 'vss_get_batch',
  text: `SELECT q.i, d.version, octet_length(d.value) AS size,
      CASE WHEN octet_length(d.value) <= $4 THEN d.value END AS value
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(user_token, store_id, key, i)
    JOIN vss_db d ON d.user_token = q.user_token AND d.store_id = q.store_id AND d.key = q.key`,
};
/** Inserts the input rows in input order; `onConflict` decides what happens to existing ones. */
const insertRowsInOrder = (onConflict: string) => `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at)
    SELECT q.user_token, q.store_id, q.key, q.value, 1, now(), now()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS q(user_token, store_id, key, value, i)
    ORDER BY q.i
    ${onConflict}`;
const UPSERT_BATCH: SqlQuery = {
  name: 'vss_put_unconditional_batch',
  text: insertRowsInOrder(`ON CONFLICT (user_token, store_id, key) DO UPDATE
    SET value = EXCLUDED.value, version = 1, last_updated_at = EXCLUDED.last_updated_at`),
};
const INSERT_IF_ABSENT_BATCH: SqlQuery = {
  name: 'vss_put_create_batch',
  text: insertRowsInOrder('ON CONFLICT DO NOTHING RETURNING user_token, store_id, key'),
};
// An UPDATE joined to the input may visit rows in any order the planner likes, so the rows
// are first locked in input order (FOR UPDATE after ORDER BY locks in sorted order); the
// UPDATE then only touches rows this statement already holds.
const UPDATE_IF_VERSION_BATCH: SqlQuery = {
  name: 'vss_put_update_batch',
  text: `WITH q AS MATERIALIZED (
      SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::bigint[]) WITH ORDINALITY
        AS q(user_token, store_id, key, value, version, next_version, i)
    ), locked AS MATERIALIZED (
      SELECT q.i FROM q JOIN vss_db d
        ON d.user_token = q.user_token AND d.store_id = q.store_id AND d.key = q.key AND d.version = q.version
      ORDER BY q.i
      FOR UPDATE OF d
    )
    UPDATE vss_db d SET value = q.value, version = q.next_version, last_updated_at = now()
    FROM locked JOIN q ON q.i = locked.i
    WHERE d.user_token = q.user_token AND d.store_id = q.store_id AND d.key = q.key AND d.version = q.version
    RETURNING q.i`,
};

/** Default size above which GetObject reads a value in chunks (and the chunk size). */
export const DEFAULT_INLINE_VALUE_LIMIT = 32 * 1024 * 1024;

/** `prefix%` for LIKE with the prefix's own `%`, `_` and `\` matched literally. */
export function likePrefixPattern(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, '\\$&')}%`;
}

function toBigInt(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' || typeof value === 'string') return BigInt(value);
  throw new TypeError(`expected an integer column, got ${typeof value}`);
}

function toBytes(value: unknown): Uint8Array {
  if (value === null || value === undefined) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`expected a bytea column, got ${typeof value}`);
}

/** Values up to this size take part in batches (a batch stays a few MiB at most). */
export const BATCH_VALUE_LIMIT = 256 * 1024;

/**
 * One batch statement of each kind at a time: under load, everything that arrives while it runs
 * leaves together as the next one (measured with bench/server.ts: fewer, larger batches cost
 * the server and PostgreSQL less per request than two or four at a time, at the same throughput).
 * A batch normally takes well under a millisecond (a read) or one commit (a write); one that
 * takes 20 ms is waiting for something and stops holding back the others. Gathering (waiting
 * after a large batch for the next one to fill) is off: it made batches larger, but in alternating
 * runs of bench/server.ts it gave no more puts/s and 8 % fewer gets/s on a quiet machine (the wait
 * became latency), and no difference under a CPU hog; see docs/server.md.
 */
export const DEFAULT_BATCHING: BatcherOptions = {
  maxInFlight: 1,
  maxBatchSize: 64,
  stallMs: 20,
  gather: false,
};

export interface SqlBackendOptions {
  /** Values larger than this many bytes are fetched in chunks of this size. */
  inlineValueLimit?: number;
  /**
   * Natural batching of concurrent single-row gets and single-item puts (batcher.ts): how many
   * batch statements of each kind may run at once, how many requests one may carry, and when a
   * slow one stops counting, and whether to gather after a large batch (off by default).
   * `false` runs every request on its own. Default DEFAULT_BATCHING.
   */
  batching?: false | Partial<BatcherOptions>;
  /**
   * Largest value, in bytes, a put may carry: a larger one is refused with PayloadTooLargeError
   * (413, naming the limit) before any statement runs. For a storage that cannot hold values
   * up to the request body limit (PGlite sets one); default: no limit of its own.
   */
  maxValueSize?: number;
  logger?: Logger;
}

/** Throws unless `maxValueSize` is undefined or a whole number of bytes. */
export function checkMaxValueSize(maxValueSize: number | undefined): void {
  if (maxValueSize !== undefined && !(Number.isSafeInteger(maxValueSize) && maxValueSize >= 0)) {
    throw new RangeError(`maxValueSize must be a whole number of bytes from 0, not ${maxValueSize}`);
  }
}

/** One row a batched request reads or writes. */
interface RowRef {
  userToken: string;
  storeId: string;
  key: string;
}

interface RowWrite extends RowRef {
  version: bigint;
  value: Uint8Array;
}

/** A batched get found a value too big to carry in a batch; it is read on its own. */
const TOO_LARGE_FOR_BATCH = Symbol('too large for a batch');
type BatchedGet = StoredRecord | undefined | typeof TOO_LARGE_FOR_BATCH;

type PutKind = 'unconditional' | 'create' | 'update';

/** Row identity; NUL cannot occur in these strings (validated upstream), so it separates them unambiguously. */
function rowKey(row: RowRef): string {
  return `${row.userToken}\0${row.storeId}\0${row.key}`;
}

/** Input positions ordered by row identity: the lock order of every write statement. */
function lockOrder(rows: readonly RowRef[]): number[] {
  const keys = rows.map(rowKey);
  return keys.map((_, i) => i).sort((a, b) => (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0));
}

/**
 * SQLSTATE prefixes after which a statement's outcome is unknown although PostgreSQL answered:
 * 08 connection exception; 57P operator intervention (admin or crash shutdown, the session
 * terminated); 58 system error (an I/O failure, such as the fsync of the WAL at commit, which is
 * a PANIC); XX internal error (PostgreSQL itself in a state it did not expect). Plain 57014
 * (statement timeout, cancel) stays rolled back.
 */
const UNKNOWN_OUTCOME_PREFIXES = ['08', '57P', '58', 'XX'];
/**
 * Severities that end the session or the server: the error may come after the commit record.
 * The `S` field is localized (pg does not expose the untranslated `V`), so only English servers
 * are caught here; the SQLSTATE prefixes above cover the usual codes of such errors anyway.
 */
const SESSION_ENDING_SEVERITIES = new Set(['FATAL', 'PANIC']);

/**
 * Whether a failed write statement certainly changed nothing: PostgreSQL answered with an
 * ordinary error (so the autocommit statement rolled back), rather than the connection or the
 * server going down, when the statement may or may not have committed. Only then may a batch's
 * writes be retried one by one: retrying a create that did commit would answer "conflict".
 */
export function statementRolledBack(error: unknown): boolean {
  const code = sqlState(error);
  const severity = (error as { severity?: unknown } | null)?.severity;
  if (code === undefined || typeof severity !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return false;
  if (SESSION_ENDING_SEVERITIES.has(severity.toUpperCase())) return false;
  return !UNKNOWN_OUTCOME_PREFIXES.some((prefix) => code.startsWith(prefix));
}

export class SqlBackend implements StorageBackend {
  private readonly inlineValueLimit: number;
  private readonly batchInlineLimit: number;
  private readonly maxValueSize: number | undefined;
  private readonly getBatcher?: Batcher<RowRef, BatchedGet>;
  private readonly putBatchers?: Readonly<Record<PutKind, Batcher<RowWrite, boolean>>>;
  private readonly logger?: Logger;

  constructor(
    readonly kind: string,
    protected readonly driver: SqlDriver,
    options: SqlBackendOptions = {},
  ) {
    this.inlineValueLimit = options.inlineValueLimit ?? DEFAULT_INLINE_VALUE_LIMIT;
    this.logger = options.logger;
    checkMaxValueSize(options.maxValueSize);
    this.maxValueSize = options.maxValueSize;
    this.batchInlineLimit = Math.min(this.inlineValueLimit, BATCH_VALUE_LIMIT);
    const batching = options.batching === false ? false : { ...DEFAULT_BATCHING, ...options.batching };
    if (batching) {
      const onBatchError = (error: unknown, size: number) =>
        this.logger?.warn({ err: error, size }, 'batched statement failed; retrying its requests one by one where safe');
      this.getBatcher = new Batcher<RowRef, BatchedGet>(
        {
          runBatch: (rows) => this.getBatch(rows),
          runOne: (row) => this.getAlone(row.userToken, row.storeId, row.key),
          // Reads change nothing: the same row may appear twice in a batch, and retrying is always safe.
          retryable: () => true,
          onBatchError,
        },
        batching,
      );
      const putBatcher = (kind: PutKind) =>
        new Batcher<RowWrite, boolean>(
          {
            runBatch: (rows) => this.putBatch(kind, rows),
            runOne: (row) => runStep(this.driver, row.userToken, row.storeId, { kind: 'put', item: row }),
            keyOf: rowKey,
            retryable: statementRolledBack,
            onBatchError,
          },
          batching,
        );
      this.putBatchers = { unconditional: putBatcher('unconditional'), create: putBatcher('create'), update: putBatcher('update') };
    }
  }

  /** Batching counters (undefined when batching is off), for tests and diagnostics. */
  get batchStats(): { get: BatcherStats; put: Record<PutKind, BatcherStats> } | undefined {
    if (!this.getBatcher || !this.putBatchers) return undefined;
    return {
      get: this.getBatcher.stats,
      put: {
        unconditional: this.putBatchers.unconditional.stats,
        create: this.putBatchers.create.stats,
        update: this.putBatchers.update.stats,
      },
    };
  }

  async get(userToken: string, storeId: string, key: string): Promise<StoredRecord | undefined> {
    if (this.getBatcher) {
      const found = await this.getBatcher.run({ userToken, storeId, key });
      if (found !== TOO_LARGE_FOR_BATCH) return found;
    }
    return this.getAlone(userToken, storeId, key);
  }

  private async getBatch(rows: readonly RowRef[]): Promise<BatchedGet[]> {
    const result = await this.driver.query(GET_BATCH, [
      rows.map((row) => row.userToken),
      rows.map((row) => row.storeId),
      rows.map((row) => row.key),
      this.batchInlineLimit,
    ]);
    const found: BatchedGet[] = rows.map(() => undefined);
    for (const row of result.rows) {
      const index = Number(row.i) - 1;
      found[index] =
        row.size === null || Number(row.size) <= this.batchInlineLimit
          ? { key: rows[index].key, version: toBigInt(row.version), value: toBytes(row.value) }
          : TOO_LARGE_FOR_BATCH;
    }
    return found;
  }

  /** Runs one kind of single-item put for several distinct rows in one statement; true where it applied. */
  private async putBatch(kind: PutKind, rows: readonly RowWrite[]): Promise<boolean[]> {
    const order = lockOrder(rows);
    const sorted = order.map((i) => rows[i]);
    const params: unknown[] = [
      sorted.map((row) => row.userToken),
      sorted.map((row) => row.storeId),
      sorted.map((row) => row.key),
      sorted.map((row) => row.value),
    ];
    const applied: boolean[] = rows.map(() => false);
    if (kind === 'unconditional') {
      await this.driver.query(UPSERT_BATCH, params);
      return applied.map(() => true);
    }
    if (kind === 'create') {
      const inserted = new Set((await this.driver.query(INSERT_IF_ABSENT_BATCH, params)).rows.map((row) => rowKey({
        userToken: String(row.user_token),
        storeId: String(row.store_id),
        key: String(row.key),
      })));
      return rows.map((row) => inserted.has(rowKey(row)));
    }
    params.push(
      sorted.map((row) => row.version.toString()),
      sorted.map((row) => nextVersion(row.version).toString()),
    );
    for (const row of (await this.driver.query(UPDATE_IF_VERSION_BATCH, params)).rows) applied[order[Number(row.i) - 1]] = true;
    return applied;
  }

  private async getAlone(userToken: string, storeId: string, key: string): Promise<StoredRecord | undefined> {
    const params = [userToken, storeId, key];
    const result = await this.driver.query(GET, [...params, this.inlineValueLimit]);
    const row = result.rows[0];
    if (!row) return undefined;
    if (row.size === null || Number(row.size) <= this.inlineValueLimit) {
      return { key, version: toBigInt(row.version), value: toBytes(row.value) };
    }
    // A consistent snapshot for all chunks: a concurrent -1 write keeps the version at 1,
    // so comparing versions between chunks would not detect it.
    return this.driver.transaction(async (session) => {
      await session.query({ text: 'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ' });
      const head = (await session.query(GET, [...params, this.inlineValueLimit])).rows[0];
      if (!head) return undefined;
      const size = Number(head.size ?? 0);
      const value = new Uint8Array(size);
      for (let offset = 0; offset < size; offset += this.inlineValueLimit) {
        const chunk = toBytes((await session.query(GET_CHUNK, [...params, offset + 1, this.inlineValueLimit])).rows[0]?.chunk);
        value.set(chunk, offset);
      }
      return { key, version: toBigInt(head.version), value };
    });
  }

  async put(userToken: string, request: PutRequest): Promise<void> {
    this.checkValueSizes(request);
    // Keys within one request are distinct (checked upstream), so statement order cannot change
    // whether the request applies; a fixed order makes concurrent multi-key puts lock rows in the
    // same order and therefore never deadlock.
    const planned = planWrites(request);
    const steps = statementOrder(planned);
    if (steps.length === 0) return;
    if (steps.length === 1) {
      // The common single-item put: one autocommit statement, one round trip (possibly shared
      // with other requests' puts of the same kind).
      const step = steps[0];
      const batcher =
        step.kind === 'put' && step.item.value.byteLength <= BATCH_VALUE_LIMIT ? this.putBatchers?.[putKind(step.item.version)] : undefined;
      const applied =
        batcher && step.kind === 'put'
          ? await batcher.run({ userToken, storeId: request.storeId, key: step.item.key, version: step.item.version, value: step.item.value })
          : await runStep(this.driver, userToken, request.storeId, step);
      if (!applied) throw new ConflictError();
      return;
    }
    // Statement order does decide the creation sequence (ListKeyVersions order): the reference
    // numbers the keys a request creates in request order. When key order differs from that,
    // the numbers are drawn first, in request order, and each insert uses its own.
    const inserts = planned.filter(isInsertAttempt);
    const needsOwnSortOrders = drawsSortOrdersFirst(planned);
    await this.driver.transaction(async (session) => {
      const sortOrders = needsOwnSortOrders ? await allocateSortOrders(session, inserts) : undefined;
      for (const step of steps) {
        // Any failed check rolls everything back; the remaining statements cannot change that.
        if (!(await runStep(session, userToken, request.storeId, step, sortOrders?.get(step)))) throw new ConflictError();
      }
    });
  }

  /** Refuses a request with a value this storage cannot hold, before anything is written. */
  private checkValueSizes(request: PutRequest): void {
    const limit = this.maxValueSize;
    if (limit === undefined) return;
    const largest = request.transactionItems.reduce((max, item) => Math.max(max, item.value.byteLength), 0);
    if (largest > limit) {
      throw new PayloadTooLargeError(
        `A value of ${largest} bytes exceeds the ${limit}-byte value limit of this server's ${this.kind} storage`,
      );
    }
  }

  async delete(userToken: string, storeId: string, item: DeleteItem): Promise<void> {
    await runStep(this.driver, userToken, storeId, { kind: 'delete', item });
  }

  async list(userToken: string, query: ListQuery): Promise<ListedKey[]> {
    if (query.limit <= 0) return [];
    const params: unknown[] = [userToken, query.storeId, likePrefixPattern(query.keyPrefix), query.limit];
    const result =
      query.beforeSortOrder === undefined
        ? await this.driver.query(LIST_FIRST, params)
        : await this.driver.query(LIST_AFTER, [...params, query.beforeSortOrder.toString()]);
    return result.rows.map((row) => ({ key: String(row.key), version: toBigInt(row.version), sortOrder: toBigInt(row.sort_order) }));
  }

  async checkHealth(): Promise<void> {
    await this.driver.query(PING);
  }

  async close(): Promise<void> {
    // How well batching worked over the server's life: requests per statement, for sizing and tuning.
    const stats = this.batchStats;
    if (stats) this.logger?.info({ batching: stats }, 'request batching since start');
    await this.driver.close();
  }
}

/**
 * Draws one creation sequence number per insert attempt and assigns them in the given (request)
 * order. Undefined when `sort_order` has no sequence of its own (a hand-made schema): the inserts
 * then take the column default, in statement order.
 */
async function allocateSortOrders(session: SqlSession, inserts: readonly WriteStep[]): Promise<Map<WriteStep, bigint> | undefined> {
  const rows = (await session.query(ALLOCATE_SORT_ORDERS, [inserts.length])).rows;
  if (rows.length !== inserts.length || rows.some((row) => row.sort_order === null)) return undefined;
  const drawn = rows.map((row) => toBigInt(row.sort_order)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return new Map(inserts.map((step, i) => [step, drawn[i]]));
}

function putKind(version: bigint): PutKind {
  return version === UNCONDITIONAL ? 'unconditional' : version === CREATE_ONLY_VERSION ? 'create' : 'update';
}

/** Executes one write; false when its version check failed (zero rows affected). */
async function runStep(session: SqlSession, userToken: string, storeId: string, step: WriteStep, sortOrder?: bigint): Promise<boolean> {
  const { key, version } = step.item;
  let result;
  if (step.kind === 'delete') {
    result =
      version === UNCONDITIONAL
        ? await session.query(DELETE_ANY, [userToken, storeId, key])
        : await session.query(DELETE_IF_VERSION, [userToken, storeId, key, version.toString()]);
  } else {
    const value = step.item.value;
    const at = sortOrder?.toString();
    if (version === UNCONDITIONAL) {
      result = at === undefined ? await session.query(UPSERT, [userToken, storeId, key, value]) : await session.query(UPSERT_AT, [userToken, storeId, key, value, at]);
    } else if (version === CREATE_ONLY_VERSION) {
      result =
        at === undefined
          ? await session.query(INSERT_IF_ABSENT, [userToken, storeId, key, value])
          : await session.query(INSERT_IF_ABSENT_AT, [userToken, storeId, key, value, at]);
    } else {
      result = await session.query(UPDATE_IF_VERSION, [userToken, storeId, key, value, nextVersion(version).toString(), version.toString()]);
    }
  }
  return result.rowCount > 0;
}
