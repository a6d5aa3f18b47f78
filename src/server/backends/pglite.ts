/**
 * Embedded PostgreSQL (PGlite, WebAssembly) running the same schema, migrations and SQL as
 * the PostgreSQL backend: the zero-setup default of `ldk-vss serve`. One in-process
 * connection; PGlite queues concurrent queries and transactions itself.
 */
import { PGlite, types, type QueryOptions, type Transaction } from '@electric-sql/pglite';
import { mkdir } from 'node:fs/promises';
import { migrate, type MigrationOutcome } from './migrations.js';
import { SqlBackend, type SqlBackendOptions } from './sql-backend.js';
import type { SqlDriver, SqlQuery, SqlResult, SqlSession } from './sql-driver.js';

export interface PgliteBackendOptions extends SqlBackendOptions {
  /** Directory for the database files; undefined keeps everything in memory. */
  dataDir?: string;
  /** An already created PGlite instance to use instead (the backend takes ownership and closes it). */
  db?: PGlite;
}

type Queryable = Pick<PGlite, 'query'> | Transaction;

const BYTEA_OID = 17;
const BYTEA_ARRAY_OID = 1001;

function serializeBytea(value: unknown): string {
  if (!(value instanceof Uint8Array)) throw new TypeError('bytea parameter must be a Uint8Array');
  return `\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
}

/**
 * PGlite's own bytea conversion walks the value byte by byte in JavaScript (minutes for
 * 100 MiB); Buffer's native hex codec does the same in milliseconds. Arrays (the batch
 * statements' values) get the same element conversion.
 */
const BYTEA_CODEC: QueryOptions = {
  serializers: {
    [BYTEA_OID]: serializeBytea,
    [BYTEA_ARRAY_OID]: (values: unknown) => types.arraySerializer(values, serializeBytea, BYTEA_ARRAY_OID),
  },
  parsers: { [BYTEA_OID]: (text: string) => Buffer.from(text.slice(2), 'hex') },
};

async function run(db: Queryable, query: SqlQuery, params?: readonly unknown[]): Promise<SqlResult> {
  const result = await db.query<Record<string, unknown>>(query.text, params ? [...params] : undefined, BYTEA_CODEC);
  return { rows: result.rows, rowCount: result.affectedRows ?? 0 };
}

export class PgliteDriver implements SqlDriver {
  constructor(readonly db: PGlite) {}

  query(query: SqlQuery, params?: readonly unknown[]): Promise<SqlResult> {
    return run(this.db, query, params);
  }

  transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    return this.db.transaction((tx) => work({ query: (query, params) => run(tx, query, params) }));
  }

  async close(): Promise<void> {
    if (!this.db.closed) await this.db.close();
  }
}

export class PgliteBackend extends SqlBackend {
  private constructor(
    private readonly pgliteDriver: PgliteDriver,
    options: SqlBackendOptions,
    readonly migration: MigrationOutcome,
    readonly dataDir: string | undefined,
  ) {
    super('pglite', pgliteDriver, options);
  }

  get db(): PGlite {
    return this.pgliteDriver.db;
  }

  static async open(options: PgliteBackendOptions = {}): Promise<PgliteBackend> {
    if (options.db === undefined && options.dataDir !== undefined) await mkdir(options.dataDir, { recursive: true });
    const db = options.db ?? (await PGlite.create(options.dataDir));
    const driver = new PgliteDriver(db);
    try {
      const migration = await migrate(driver);
      if (migration.from !== migration.to) options.logger?.info({ ...migration, dataDir: options.dataDir }, 'applied database migrations');
      return new PgliteBackend(driver, options, migration, options.dataDir);
    } catch (error) {
      await db.close();
      throw error;
    }
  }
}
