/**
 * Schema migrations on PGlite and (when TEST_DATABASE_URL is set) PostgreSQL: a fresh database,
 * databases left at each earlier reference migration step (with data), the older store_id
 * CHECK, a pre-migration-framework table, the reference's bookkeeping tests (24, 25) and
 * refusal of a newer schema.
 */
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, migrate, schemaVersion, SchemaTooNewError } from '../../src/server/backends/migrations.js';
import { PgliteBackend, PgliteDriver } from '../../src/server/backends/pglite.js';
import { PgPoolDriver, PostgresBackend } from '../../src/server/backends/postgres.js';
import type { SqlDriver } from '../../src/server/backends/sql-driver.js';
import { startVssServer, type StorageBackend } from '../../src/server/index.js';
import { dropDatabase, TEST_DATABASE_URL, TestClient, testDatabaseUrl, uniqueDatabaseName } from './helpers.js';

/** The reference's migration 3 before 2026-02: store_id could not be empty. */
const OLD_CREATE_WITH_STORE_ID_CHECK = `CREATE TABLE IF NOT EXISTS vss_db (
  user_token character varying(120) NOT NULL CHECK (user_token <> ''),
  store_id character varying(120) NOT NULL CHECK (store_id <> ''),
  key character varying(600) NOT NULL,
  value bytea NULL,
  version bigint NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE,
  last_updated_at TIMESTAMP WITH TIME ZONE,
  PRIMARY KEY (user_token, store_id, key)
);`;

/** What the reference's v0_create_vss_db.sql sets up for a manual installation. */
const MANUAL_SETUP_TABLE = `CREATE TABLE vss_db (
  user_token character varying(120) NOT NULL CHECK (user_token <> ''),
  store_id character varying(120) NOT NULL,
  key character varying(600) NOT NULL,
  value bytea NULL,
  version bigint NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE,
  last_updated_at TIMESTAMP WITH TIME ZONE,
  sort_order BIGSERIAL NOT NULL UNIQUE,
  PRIMARY KEY (user_token, store_id, key)
);`;

/** Insert as the reference server writes rows (explicit timestamps, version -1 semantics). */
const REFERENCE_UPSERT = `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at)
  VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT (user_token, store_id, key) DO UPDATE
  SET value = EXCLUDED.value, version = 1, last_updated_at = EXCLUDED.last_updated_at`;

interface Engine {
  name: string;
  skipReason?: string;
  /** A fresh, empty database. */
  fresh(): Promise<Database>;
}

interface Database {
  driver: SqlDriver;
  /** Opens a backend on the same database the way the server does at startup (migrating). */
  openBackend(): Promise<StorageBackend>;
  /** Closes the driver and deletes the database. */
  dispose(): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
let pristinePglite: Promise<File | Blob> | undefined;
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const ENGINES: Engine[] = [
  {
    name: 'pglite',
    async fresh() {
      // Cloning a pristine data directory is several times faster than initdb for every test.
      pristinePglite ??= PGlite.create().then(async (template) => {
        const dump = await template.dumpDataDir('none');
        await template.close();
        return dump;
      });
      const db = await PGlite.create({ loadDataDir: await pristinePglite });
      const driver = new PgliteDriver(db);
      return {
        driver,
        // The backend takes over the same instance, as a server restart on the same files would.
        openBackend: () => PgliteBackend.open({ db }),
        dispose: () => driver.close(),
      };
    },
  },
  {
    name: 'postgres',
    skipReason: TEST_DATABASE_URL ? undefined : 'TEST_DATABASE_URL is not set',
    async fresh() {
      const database = uniqueDatabaseName('migrations');
      const admin = new pg.Client({ connectionString: testDatabaseUrl('postgres') });
      await admin.connect();
      await admin.query(`CREATE DATABASE "${database}"`);
      await admin.end();
      const pool = new pg.Pool({ connectionString: testDatabaseUrl(database), max: 2 });
      // Dropping the database at the end terminates connections the pool may still be closing;
      // that is expected here and must not surface as an unhandled error.
      pool.on('error', () => undefined);
      const driver = new PgPoolDriver(pool);
      return {
        driver,
        openBackend: () => PostgresBackend.open({ url: testDatabaseUrl(database) }),
        async dispose() {
          await driver.pool.end().catch(() => undefined);
          await dropDatabase(database);
        },
      };
    },
  },
];

async function upgrades(driver: SqlDriver): Promise<number[]> {
  const result = await driver.query({ text: 'SELECT upgrade_from FROM vss_db_upgrades' });
  return result.rows.map((row) => Number(row.upgrade_from));
}

async function withServer<T>(backend: StorageBackend, work: (client: TestClient) => Promise<T>): Promise<T> {
  const server = await startVssServer({ backend, auth: { kind: 'noop' } });
  try {
    return await work(new TestClient(server.url, 'store'));
  } finally {
    await server.close();
    await backend.close();
  }
}

for (const engine of ENGINES) {
  const title = engine.skipReason ? `${engine.name} migrations — SKIPPED: ${engine.skipReason}` : `${engine.name} migrations`;
  describe.skipIf(engine.skipReason !== undefined)(title, () => {
    const fresh = async () => {
      const database = await engine.fresh();
      cleanups.push(() => database.dispose());
      return database;
    };

    it('a fresh database gets all 7 reference migrations and the reference schema; rerunning is a no-op', async () => {
      const { driver } = await fresh();
      expect(await schemaVersion(driver)).toBe(0);
      expect(await migrate(driver)).toEqual({ from: 0, to: 7 });
      expect(await migrate(driver)).toEqual({ from: 7, to: 7 });
      expect(await upgrades(driver)).toEqual([0]);
      expect(await schemaVersion(driver)).toBe(7);
      const columns = await driver.query({
        text: `SELECT column_name, data_type, is_nullable, character_maximum_length, column_default
          FROM information_schema.columns WHERE table_name = 'vss_db' ORDER BY ordinal_position`,
      });
      expect(columns.rows.map((c) => [c.column_name, c.data_type, c.is_nullable, c.character_maximum_length])).toEqual([
        ['user_token', 'character varying', 'NO', 120],
        ['store_id', 'character varying', 'NO', 120],
        ['key', 'character varying', 'NO', 600],
        ['value', 'bytea', 'YES', null],
        ['version', 'bigint', 'NO', null],
        ['created_at', 'timestamp with time zone', 'YES', null],
        ['last_updated_at', 'timestamp with time zone', 'YES', null],
        ['sort_order', 'bigint', 'NO', null],
      ]);
      expect(String(columns.rows[7].column_default)).toContain("nextval('vss_db_sort_order_seq'");
      // contype 'n' (NOT NULL as constraints) exists only in newer PostgreSQL versions such as PGlite's.
      const constraints = await driver.query({ text: "SELECT conname FROM pg_constraint WHERE conrelid = 'vss_db'::regclass AND contype <> 'n' ORDER BY conname" });
      expect(constraints.rows.map((r) => r.conname)).toEqual(['vss_db_pkey', 'vss_db_sort_order_key', 'vss_db_user_token_check']);
      const index = await driver.query({ text: "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_vss_db_sort_order'" });
      expect(String(index.rows[0]?.indexdef)).toMatch(/\(user_token, store_id, sort_order DESC\) INCLUDE \(key, version\)/);
    });

    it('reference test 24 (new_migrations_increments_upgrades): appended migrations run once and are logged', async () => {
      const { driver } = await fresh();
      const dummy = 'SELECT 1 WHERE FALSE;';
      expect(await migrate(driver)).toEqual({ from: 0, to: 7 });
      expect(await migrate(driver, [...MIGRATIONS, dummy])).toEqual({ from: 7, to: 8 });
      expect(await upgrades(driver)).toEqual([0, 7]);
      expect(await migrate(driver, [...MIGRATIONS, dummy, dummy, dummy])).toEqual({ from: 8, to: 10 });
      expect(await upgrades(driver)).toEqual([0, 7, 8]);
      expect(await schemaVersion(driver)).toBe(10);
      expect(await migrate(driver, [...MIGRATIONS, dummy, dummy, dummy])).toEqual({ from: 10, to: 10 });
    });

    it('reference test 25 (no downgrades): a newer schema is refused by migrate and by the server start', async () => {
      const database = await fresh();
      await migrate(database.driver, [...MIGRATIONS, 'SELECT 1 WHERE FALSE;']);
      await expect(migrate(database.driver)).rejects.toBeInstanceOf(SchemaTooNewError);
      expect(await upgrades(database.driver)).toEqual([0]);
      const opening = database.openBackend();
      await expect(opening).rejects.toBeInstanceOf(SchemaTooNewError);
      await expect(opening).rejects.toThrow(/newer than the 7 migrations/);
    });

    for (const step of [3, 4, 5, 6]) {
      it(`a database at reference migration step ${step} with data is upgraded in place`, async () => {
        const database = await fresh();
        expect(await migrate(database.driver, MIGRATIONS.slice(0, step))).toEqual({ from: 0, to: step });
        const written = new Date('2025-09-01T00:00:00Z');
        // From step 4 on the table exists and holds data written the reference's way.
        const oldKeys = step >= 4 ? ['old_a', 'old_b'] : [];
        for (const key of oldKeys) {
          await database.driver.query({ text: REFERENCE_UPSERT }, ['unauth-user', 'store', key, Buffer.from(`value of ${key}`), written, written]);
        }
        const backend = await database.openBackend();
        await withServer(backend, async (client) => {
          const outcome = (backend as PostgresBackend | PgliteBackend).migration;
          expect(outcome).toEqual({ from: step, to: 7 });
          expect(await upgrades(database.driver)).toEqual([0, step]);
          for (const key of oldKeys) expect(new TextDecoder().decode((await client.get(key)).value)).toBe(`value of ${key}`);
          await client.put(undefined, [{ key: 'new', version: 0n, value: 'v' }]);
          if (oldKeys.length) {
            await client.put(undefined, [{ key: 'old_a', version: 1n, value: 'updated' }]);
            expect((await client.get('old_a')).version).toBe(2n);
          }
          const keys = (await client.list()).keys.map((k) => k.key);
          // Pre-migration rows get arbitrary relative order; new rows always come first.
          expect(keys[0]).toBe('new');
          expect(keys.slice(1).sort()).toEqual(oldKeys);
        });
      });
    }

    it('drops the old store_id CHECK so an older database accepts the empty store id', async () => {
      const database = await fresh();
      await migrate(database.driver, [...MIGRATIONS.slice(0, 3), OLD_CREATE_WITH_STORE_ID_CHECK]);
      await expect(database.driver.query({ text: REFERENCE_UPSERT }, ['unauth-user', '', 'k', Buffer.from('v'), new Date(), new Date()])).rejects.toThrow(/store_id_check/);
      const backend = await database.openBackend();
      await withServer(backend, async (client) => {
        const empty = client.withStore('');
        await empty.put(undefined, [{ key: 'k', version: 0n, value: 'v' }]);
        expect((await empty.get('k')).version).toBe(1n);
      });
    });

    it('adopts a manually created table (v0_create_vss_db.sql) without bookkeeping tables', async () => {
      const database = await fresh();
      await database.driver.query({ text: MANUAL_SETUP_TABLE });
      await database.driver.query({ text: REFERENCE_UPSERT }, ['unauth-user', 'store', 'manual', Buffer.from('m'), new Date(), new Date()]);
      const backend = await database.openBackend();
      await withServer(backend, async (client) => {
        expect((backend as PostgresBackend | PgliteBackend).migration).toEqual({ from: 0, to: 7 });
        expect((await client.list()).keys.map((k) => k.key)).toEqual(['manual']);
      });
    });
  });
}

describe.skipIf(!TEST_DATABASE_URL)(
  `PostgreSQL database creation and concurrent start${TEST_DATABASE_URL ? '' : ' — SKIPPED: TEST_DATABASE_URL is not set'}`,
  () => {
    it('creates the database when missing, and concurrent starts migrate exactly once', async () => {
      const database = uniqueDatabaseName('create');
      cleanups.push(() => dropDatabase(database));
      const admin = new pg.Client({ connectionString: testDatabaseUrl('postgres') });
      await admin.connect();
      try {
        expect((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount).toBe(0);
        const backends = await Promise.all([0, 1, 2].map(() => PostgresBackend.open({ url: testDatabaseUrl(database) })));
        expect((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount).toBe(1);
        expect(backends.map((b) => b.migration?.from).sort()).toEqual([0, 7, 7]);
        const log = await backends[0].pool.query('SELECT upgrade_from FROM vss_db_upgrades');
        expect(log.rows.map((r) => r.upgrade_from)).toEqual([0]);
        await Promise.all(backends.map((b) => b.close()));
      } finally {
        await admin.end();
      }
    });

    it('shares data with the reference server: rows written by the reference SQL are served, and ours read back with the reference SELECT', async () => {
      const database = uniqueDatabaseName('interop');
      cleanups.push(() => dropDatabase(database));
      const backend = await PostgresBackend.open({ url: testDatabaseUrl(database) });
      await backend.pool.query(REFERENCE_UPSERT, ['unauth-user', 'store', 'from_reference', Buffer.from([0, 1, 2, 255]), new Date(), new Date()]);
      const server = await startVssServer({ backend, auth: { kind: 'noop' } });
      try {
        const client = new TestClient(server.url, 'store');
        expect([...(await client.get('from_reference')).value]).toEqual([0, 1, 2, 255]);
        await client.put(0n, [{ key: 'from_us', version: 0n, value: 'ours' }]);
        const row = await backend.pool.query('SELECT key, value, version FROM vss_db WHERE user_token=$1 AND store_id=$2 AND key=$3', ['unauth-user', 'store', 'from_us']);
        expect(row.rows[0]).toMatchObject({ key: 'from_us', version: '1' });
        expect(Buffer.from(row.rows[0].value).toString()).toBe('ours');
        const global = await backend.pool.query("SELECT version FROM vss_db WHERE user_token='unauth-user' AND store_id='store' AND key='global_version'");
        expect(global.rows[0]?.version).toBe('1');
      } finally {
        await server.close();
        await backend.close();
      }
    });
  },
);
