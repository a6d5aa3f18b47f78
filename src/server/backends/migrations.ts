/**
 * The reference server's schema migrations, verbatim in effect and in the same bookkeeping
 * tables (`vss_db_version` holds how many migrations ran, `vss_db_upgrades` logs where each
 * run started), so a database is interchangeable between the reference server and this one.
 * The list is append-only: never edit or reorder an entry.
 */
import type { SqlDriver, SqlSession } from './sql-driver.js';

export const MIGRATIONS: readonly string[] = [
  'CREATE TABLE vss_db_version (db_version INTEGER);',
  'INSERT INTO vss_db_version VALUES(1);',
  'CREATE TABLE vss_db_upgrades (upgrade_from INTEGER);',
  `CREATE TABLE IF NOT EXISTS vss_db (
    user_token character varying(120) NOT NULL CHECK (user_token <> ''),
    store_id character varying(120) NOT NULL,
    key character varying(600) NOT NULL,
    value bytea NULL,
    version bigint NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE,
    last_updated_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (user_token, store_id, key)
  );`,
  'ALTER TABLE vss_db DROP CONSTRAINT IF EXISTS vss_db_store_id_check;',
  'ALTER TABLE vss_db ADD COLUMN IF NOT EXISTS sort_order BIGSERIAL NOT NULL UNIQUE;',
  'CREATE INDEX IF NOT EXISTS idx_vss_db_sort_order ON vss_db (user_token, store_id, sort_order DESC) INCLUDE (key, version);',
];

/** Serializes concurrent starts of several servers on one database (arbitrary fixed key). */
const MIGRATION_LOCK_KEY = '8526227625384650071';

export class SchemaTooNewError extends Error {
  override readonly name = 'SchemaTooNewError';
  constructor(
    readonly databaseVersion: number,
    readonly supportedVersion: number,
  ) {
    super(
      `database schema version ${databaseVersion} is newer than the ${supportedVersion} migrations this server knows; ` +
        'refusing to start (downgrades are not allowed, upgrade the server instead)',
    );
  }
}

export interface MigrationOutcome {
  /** Number of migrations applied before this run. */
  from: number;
  /** Number applied after it (= migrations.length). */
  to: number;
}

async function currentVersion(session: SqlSession): Promise<number> {
  const exists = await session.query({ text: "SELECT to_regclass('vss_db_version') IS NOT NULL AS present" });
  if (!exists.rows[0]?.present) return 0;
  const result = await session.query({ text: 'SELECT db_version FROM vss_db_version' });
  if (result.rows.length !== 1) throw new Error(`vss_db_version must hold exactly one row, found ${result.rows.length}`);
  // Anything but a count would pick the wrong migrations (a negative one slices from the end of
  // the list, NULL reads as 0); the reference refuses such a row too.
  const raw = result.rows[0].db_version;
  const version = raw === null || raw === undefined ? Number.NaN : Number(raw);
  if (!Number.isSafeInteger(version) || version < 0) throw new Error(`vss_db_version holds ${String(raw)}, which is not a number of applied migrations`);
  return version;
}

/** Reads how many migrations a database has applied (0 for a fresh one). */
export async function schemaVersion(driver: SqlDriver): Promise<number> {
  return currentVersion(driver);
}

/**
 * Applies the missing migrations in one transaction, like the reference runner. Refuses a
 * database that has applied more migrations than `migrations` holds.
 */
export async function migrate(driver: SqlDriver, migrations: readonly string[] = MIGRATIONS): Promise<MigrationOutcome> {
  return driver.transaction(async (session) => {
    await session.query({ text: 'SELECT pg_advisory_xact_lock($1::bigint)' }, [MIGRATION_LOCK_KEY]);
    const from = await currentVersion(session);
    if (from > migrations.length) throw new SchemaTooNewError(from, migrations.length);
    if (from === migrations.length) return { from, to: from };
    for (const statement of migrations.slice(from)) await session.query({ text: statement });
    await session.query({ text: 'INSERT INTO vss_db_upgrades VALUES ($1)' }, [from]);
    await session.query({ text: 'UPDATE vss_db_version SET db_version = $1' }, [migrations.length]);
    return { from, to: migrations.length };
  });
}
