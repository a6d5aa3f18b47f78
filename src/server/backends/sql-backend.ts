/**
 * The storage backend on the reference schema (`vss_db`), shared by PostgreSQL and PGlite.
 * Statements mirror the reference server's so both servers can share one database:
 * version -1 upserts (resetting to 1), 0 inserts-if-absent, v updates where version = v;
 * `sort_order` (a sequence) is set on insert only and drives ListKeyVersions order.
 */
import { GLOBAL_VERSION_KEY } from '../../protocol/index.js';
import { ConflictError } from '../errors.js';
import { CREATE_ONLY_VERSION, nextVersion, planWrites, UNCONDITIONAL, type WriteStep } from './semantics.js';
import type { SqlDriver, SqlQuery, SqlSession } from './sql-driver.js';
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

export interface SqlBackendOptions {
  /** Values larger than this many bytes are fetched in chunks of this size. */
  inlineValueLimit?: number;
}

export class SqlBackend implements StorageBackend {
  private readonly inlineValueLimit: number;

  constructor(
    readonly kind: string,
    protected readonly driver: SqlDriver,
    options: SqlBackendOptions = {},
  ) {
    this.inlineValueLimit = options.inlineValueLimit ?? DEFAULT_INLINE_VALUE_LIMIT;
  }

  async get(userToken: string, storeId: string, key: string): Promise<StoredRecord | undefined> {
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
    // Keys within one request are distinct (checked upstream), so statement order cannot change
    // the outcome; a fixed order makes concurrent multi-key puts lock rows in the same order
    // and therefore never deadlock.
    const steps = planWrites(request).sort((a, b) => (a.item.key < b.item.key ? -1 : a.item.key > b.item.key ? 1 : 0));
    if (steps.length === 0) return;
    if (steps.length === 1) {
      // The common single-item put: one autocommit statement, one round trip.
      if (!(await runStep(this.driver, userToken, request.storeId, steps[0]))) throw new ConflictError();
      return;
    }
    await this.driver.transaction(async (session) => {
      for (const step of steps) {
        // Any failed check rolls everything back; the remaining statements cannot change that.
        if (!(await runStep(session, userToken, request.storeId, step))) throw new ConflictError();
      }
    });
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
    await this.driver.close();
  }
}

/** Executes one write; false when its version check failed (zero rows affected). */
async function runStep(session: SqlSession, userToken: string, storeId: string, step: WriteStep): Promise<boolean> {
  const { key, version } = step.item;
  let result;
  if (step.kind === 'delete') {
    result =
      version === UNCONDITIONAL
        ? await session.query(DELETE_ANY, [userToken, storeId, key])
        : await session.query(DELETE_IF_VERSION, [userToken, storeId, key, version.toString()]);
  } else {
    const value = step.item.value;
    if (version === UNCONDITIONAL) result = await session.query(UPSERT, [userToken, storeId, key, value]);
    else if (version === CREATE_ONLY_VERSION) result = await session.query(INSERT_IF_ABSENT, [userToken, storeId, key, value]);
    else {
      result = await session.query(UPDATE_IF_VERSION, [userToken, storeId, key, value, nextVersion(version).toString(), version.toString()]);
    }
  }
  return result.rowCount > 0;
}
