/**
 * PostgreSQL backend through `pg`: a connection pool, named (prepared) statements, the
 * reference's migrations, and creation of the database when it does not exist yet.
 */
import pg from 'pg';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS, MAX_POSTGRES_TIMEOUT_MS } from '../limits.js';
import { migrate, type MigrationOutcome } from './migrations.js';
import { SqlBackend, type SqlBackendOptions } from './sql-backend.js';
import { sqlState, type SqlDriver, type SqlQuery, type SqlResult, type SqlSession } from './sql-driver.js';

export interface PostgresBackendOptions extends SqlBackendOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** Pool size (the reference uses 10). */
  poolSize?: number;
  /** TLS: true = verify against system roots; `{ ca }` = also trust this root certificate PEM. */
  ssl?: boolean | { ca: string };
  /** Create the database if it does not exist (default true). */
  createDatabase?: boolean;
  /** Database to connect to for creating the VSS database (default `postgres`). */
  defaultDatabase?: string;
  /** Apply missing migrations at startup (default true). */
  migrate?: boolean;
  /**
   * How long a statement may wait for a lock (PostgreSQL's `lock_timeout`) before failing, in
   * ms; 0 waits forever. Default DEFAULT_LOCK_TIMEOUT_MS (30 s; see there why).
   */
  lockTimeoutMs?: number;
  /** How long a statement may run (PostgreSQL's `statement_timeout`), in ms; 0 (default) is no limit. */
  statementTimeoutMs?: number;
  /**
   * How long getting a connection may take (opening one, or waiting for a pooled one), in ms;
   * 0 waits forever. Default DEFAULT_CONNECT_TIMEOUT_MS (10 s).
   */
  connectTimeoutMs?: number;
}

const GENERIC_PLANS = 'SET plan_cache_mode = force_generic_plan';
const INVALID_CATALOG_NAME = '3D000';
const DUPLICATE_DATABASE = '42P04';

/** Buffers go to PostgreSQL as binary parameters; plain Uint8Arrays are wrapped without copying. */
function toDriverParams(params: readonly unknown[] | undefined): unknown[] | undefined {
  return params?.map((param) =>
    param instanceof Uint8Array && !Buffer.isBuffer(param) ? Buffer.from(param.buffer, param.byteOffset, param.byteLength) : param,
  );
}

function queryConfig(query: SqlQuery, params: readonly unknown[] | undefined): pg.QueryConfig {
  return query.name ? { name: query.name, text: query.text, values: toDriverParams(params) } : { text: query.text, values: toDriverParams(params) };
}

class PgSession implements SqlSession {
  constructor(private readonly client: pg.PoolClient) {}
  async query(query: SqlQuery, params?: readonly unknown[]): Promise<SqlResult> {
    const result = await this.client.query(queryConfig(query, params));
    return { rows: result.rows, rowCount: result.rowCount ?? 0 };
  }
}

export class PgPoolDriver implements SqlDriver {
  /**
   * Callers waiting for a connection (the pool is busy). pg-pool never serves a waiter once
   * end() has been called, nor fails it: close() fails them itself, or they would hang forever.
   */
  private readonly waiting = new Set<(error: Error) => void>();

  constructor(readonly pool: pg.Pool) {}

  async query(query: SqlQuery, params?: readonly unknown[]): Promise<SqlResult> {
    return this.withClient(async (client, broken) => {
      try {
        const result = await client.query(queryConfig(query, params));
        return { rows: result.rows, rowCount: result.rowCount ?? 0 };
      } catch (error) {
        // As pg's pool.query does: a connection whose statement failed is not reused.
        broken(error as Error);
        throw error;
      }
    });
  }

  async transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    return this.withClient(async (client, broken) => {
      try {
        await client.query('BEGIN');
        const result = await work(new PgSession(client));
        await client.query('COMMIT');
        return result;
      } catch (error) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          // A connection that cannot roll back must not go back into the pool.
          broken(rollbackError as Error);
        }
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    const ended = this.pool.end();
    for (const fail of [...this.waiting]) fail(new Error('the PostgreSQL backend was closed while this request waited for a connection'));
    await ended;
  }

  /**
   * Runs `work` on a pooled connection, which goes back to the pool afterwards unless `work`
   * marks it broken. While `work` holds it, an error event of the connection (it broke: a
   * database restart, pg_terminate_backend) marks it broken: pg emits one on a checked-out
   * client too, and an 'error' event without a listener would crash the process.
   */
  private async withClient<T>(work: (client: pg.PoolClient, broken: (error: Error) => void) => Promise<T>): Promise<T> {
    const client = await this.connect();
    let discard: Error | undefined;
    const broken = (error: Error) => {
      discard ??= error;
    };
    client.on('error', broken);
    try {
      return await work(client, broken);
    } finally {
      client.off('error', broken);
      client.release(discard);
    }
  }

  /** pool.connect(), failed by close() instead of waiting forever. */
  private connect(): Promise<pg.PoolClient> {
    return new Promise((resolve, reject) => {
      const fail = (error: Error) => {
        this.waiting.delete(fail);
        reject(error);
      };
      this.waiting.add(fail);
      this.pool.connect().then(
        (client) => {
          if (this.waiting.delete(fail)) resolve(client);
          // Failed by close() meanwhile (a connection being opened is still handed out after end()).
          else client.release();
        },
        (error: unknown) => {
          this.waiting.delete(fail);
          reject(error);
        },
      );
    });
  }
}

/** The URL with its database replaced (for connecting to the maintenance database). */
function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parsed.toString();
}

/** The database a connection URL names (pg's own default is the user name). */
export function databaseName(url: string): string {
  const parsed = new URL(url);
  const name = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  return name || decodeURIComponent(parsed.username) || process.env.USER || 'postgres';
}

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Creates `database` on the server `url` points at, unless it exists (a concurrent creator is fine). */
export async function ensureDatabase(
  url: string,
  database: string,
  defaultDatabase: string,
  ssl?: pg.ClientConfig['ssl'],
  connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS,
): Promise<boolean> {
  const client = new pg.Client({ connectionString: withDatabase(url, defaultDatabase), ssl, connectionTimeoutMillis: connectTimeoutMs });
  // pg emits 'error' when the connection breaks (a database restart, pg_terminate_backend), even
  // while a query is running, whose promise then rejects with the same error. Without a listener
  // the event would crash the process instead of failing startup with that message.
  client.on('error', () => {});
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount) return false;
    try {
      await client.query(`CREATE DATABASE ${quoteIdentifier(database)}`);
      return true;
    } catch (error) {
      // A concurrent creator wins the race with 42P04, or with a unique violation on pg_database.
      if (sqlState(error) === DUPLICATE_DATABASE) return false;
      if ((await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount) return false;
      throw error;
    }
  } finally {
    await client.end();
  }
}

function checkedTimeout(name: string, ms: number): number {
  if (!Number.isSafeInteger(ms) || ms < 0 || ms > MAX_POSTGRES_TIMEOUT_MS) throw new RangeError(`${name} must be an integer from 0 to ${MAX_POSTGRES_TIMEOUT_MS} (ms), not ${ms}`);
  return ms;
}

/**
 * The driver for the startup migrations, whose transaction lifts the timeouts: it waits for the
 * advisory lock while another instance migrates, and a migration's ALTER TABLE waits for the
 * requests of servers still running and may rewrite a large table. Failing there would only
 * stop this instance from starting.
 */
function withoutTimeouts(driver: SqlDriver): SqlDriver {
  return {
    query: (query, params) => driver.query(query, params),
    transaction: (work) =>
      driver.transaction(async (session) => {
        await session.query({ text: 'SET LOCAL lock_timeout = 0' });
        await session.query({ text: 'SET LOCAL statement_timeout = 0' });
        return work(session);
      }),
    close: () => driver.close(),
  };
}

export class PostgresBackend extends SqlBackend {
  private constructor(
    private readonly pgDriver: PgPoolDriver,
    options: SqlBackendOptions,
    /** Outcome of the startup migration run (undefined when migrations were skipped). */
    readonly migration: MigrationOutcome | undefined,
  ) {
    super('postgres', pgDriver, options);
  }

  /** The underlying pool (for diagnostics and tests). */
  get pool(): pg.Pool {
    return this.pgDriver.pool;
  }

  static async open(options: PostgresBackendOptions): Promise<PostgresBackend> {
    const ssl = options.ssl === true ? { rejectUnauthorized: true } : options.ssl === false ? undefined : options.ssl;
    const lockTimeoutMs = checkedTimeout('lockTimeoutMs', options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS);
    const statementTimeoutMs = checkedTimeout('statementTimeoutMs', options.statementTimeoutMs ?? 0);
    const connectTimeoutMs = checkedTimeout('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    // Set per session rather than as startup parameters, which connection poolers such as
    // PgBouncer refuse unless told to ignore them.
    const timeouts = `SET lock_timeout = ${lockTimeoutMs}; SET statement_timeout = ${statementTimeoutMs}`;
    const makePool = () => {
      const pool = new pg.Pool({
        connectionString: options.url,
        max: options.poolSize ?? 10,
        ssl,
        // Covers opening a connection and waiting for a pooled one (pg-pool applies it to both).
        connectionTimeoutMillis: connectTimeoutMs,
        // Prepared statements over unnest() arrays (the batches) would otherwise be re-planned
        // on every execution, because the planner's custom plans look cheaper than its generic
        // one. Every statement here is a keyed lookup or an ordered scan of one store, whose
        // generic plan is as good. A server too old for the setting works, with more planning.
        onConnect: async (client) => {
          await client.query(timeouts);
          await client.query(GENERIC_PLANS).catch((error: unknown) => options.logger?.warn({ err: error }, 'could not prefer generic plans'));
        },
      });
      // An idle connection dying (e.g. a database restart) must not crash the process.
      // pg-pool attaches the dead pg.Client to the error; serialized into the log it dumps the
      // client's internals (connection parameters, TLS options, socket state: kilobytes per
      // line), none of which says what went wrong. The pool has already discarded the client.
      pool.on('error', (error) => {
        Reflect.deleteProperty(error, 'client');
        options.logger?.warn({ err: error }, 'idle PostgreSQL connection failed');
      });
      return pool;
    };
    let pool = makePool();
    try {
      await pool.query('SELECT 1');
    } catch (error) {
      await pool.end();
      if (sqlState(error) !== INVALID_CATALOG_NAME || options.createDatabase === false) throw error;
      const name = databaseName(options.url);
      const created = await ensureDatabase(options.url, name, options.defaultDatabase ?? 'postgres', ssl, connectTimeoutMs);
      if (created) options.logger?.info({ database: name }, 'created PostgreSQL database');
      pool = makePool();
    }
    const driver = new PgPoolDriver(pool);
    try {
      const migration = options.migrate === false ? undefined : await migrate(withoutTimeouts(driver));
      if (migration && migration.from !== migration.to) options.logger?.info(migration, 'applied database migrations');
      return new PostgresBackend(driver, options, migration);
    } catch (error) {
      await pool.end();
      throw error;
    }
  }
}
