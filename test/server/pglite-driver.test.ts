/**
 * PgliteDriver: the wire-protocol driver of the PGlite backend (named statements prepared once
 * per instance, bytea parameters in binary, one call per execution, PGlite's own locks), and the
 * in-memory tuning of PgliteBackend (file growth, WAL zero-fill).
 */
import { PGlite } from '@electric-sql/pglite';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readlink, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgliteBackend, PgliteDriver } from '../../src/server/backends/pglite.js';
import { DATA_DIR_LOCK_FILE, DataDirInUseError, STALE_AFTER_MS, STALE_SAME_HOST_AFTER_MS } from '../../src/server/backends/data-dir-lock.js';

const LOCK_MODULE = fileURLToPath(new URL('../../src/server/backends/data-dir-lock.ts', import.meta.url));
import { statementRolledBack } from '../../src/server/backends/sql-backend.js';
import { sqlState, type SqlQuery } from '../../src/server/backends/sql-driver.js';

const ROUND_TRIP: SqlQuery = { name: 'test_bytea_round_trip', text: 'SELECT $1::bytea AS value, octet_length($1::bytea) AS size' };
const ARRAY_ROUND_TRIP: SqlQuery = {
  name: 'test_bytea_array',
  text: 'SELECT i, v AS value, octet_length(v) AS size FROM unnest($1::bytea[]) WITH ORDINALITY AS u(v, i) ORDER BY i',
};
const INSERT: SqlQuery = { name: 'test_insert', text: 'INSERT INTO t (k, v) SELECT k, $2 FROM unnest($1::text[]) AS u(k)' };
const UPDATE: SqlQuery = { name: 'test_update', text: 'UPDATE t SET v = $2 WHERE k = ANY ($1::text[])' };
const SELECT: SqlQuery = { name: 'test_select', text: 'SELECT k, v, n FROM t WHERE k = ANY ($1::text[]) ORDER BY k' };

describe('PgliteDriver', () => {
  let db: PGlite;
  let driver: PgliteDriver;

  beforeAll(async () => {
    db = await PGlite.create();
    driver = new PgliteDriver(db);
    await driver.query({ text: 'CREATE TABLE t (k text PRIMARY KEY, v bytea, n bigint DEFAULT 7)' });
  });
  afterAll(async () => {
    await driver.close();
  });

  it('round-trips bytea parameters of every size and byte value, and reuses the prepared statement', async () => {
    const everyByte = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (const value of [new Uint8Array(0), everyByte, randomBytes(7000), randomBytes(1 << 20)]) {
      const { rows } = await driver.query(ROUND_TRIP, [value]);
      expect(rows).toHaveLength(1);
      expect(Number(rows[0].size)).toBe(value.byteLength);
      expect(Buffer.compare(rows[0].value as Uint8Array, value)).toBe(0);
    }
    // A view into a larger buffer sends only its own bytes.
    const backing = randomBytes(64);
    const view = backing.subarray(10, 20);
    expect(Buffer.compare((await driver.query(ROUND_TRIP, [view])).rows[0].value as Uint8Array, view)).toBe(0);
    const prepared = await driver.query({ text: "SELECT count(*) AS n FROM pg_prepared_statements WHERE name = 'test_bytea_round_trip'" });
    expect(Number(prepared.rows[0].n)).toBe(1);
  });

  it('sends bytea[] parameters, including an empty array and empty elements', async () => {
    const values = [randomBytes(330), new Uint8Array(0), Uint8Array.from([0, 92, 120, 34, 44, 123, 125]), randomBytes(9000)];
    const { rows } = await driver.query(ARRAY_ROUND_TRIP, [values]);
    expect(rows.map((row) => Number(row.size))).toEqual(values.map((v) => v.byteLength));
    rows.forEach((row, i) => expect(Buffer.compare(row.value as Uint8Array, values[i])).toBe(0));
    expect((await driver.query(ARRAY_ROUND_TRIP, [[]])).rows).toEqual([]);
  });

  it('reports affected rows for INSERT, UPDATE, DELETE and SELECT, and parses columns by type', async () => {
    expect((await driver.query(INSERT, [['a', 'b', 'c'], Uint8Array.from([1])])).rowCount).toBe(3);
    expect((await driver.query(UPDATE, [['a', 'c', 'missing'], Uint8Array.from([2, 3])])).rowCount).toBe(2);
    const selected = await driver.query(SELECT, [['a', 'b']]);
    expect(selected.rowCount).toBe(2);
    expect(selected.rows.map((row) => [row.k, [...(row.v as Uint8Array)], String(row.n)])).toEqual([
      ['a', [2, 3], '7'],
      ['b', [1], '7'],
    ]);
    expect((await driver.query({ text: 'DELETE FROM t WHERE k = $1' }, ['b'])).rowCount).toBe(1);
    expect((await driver.query({ text: 'DELETE FROM t' })).rowCount).toBe(2);
  });

  it('throws PostgreSQL errors with their SQLSTATE and keeps working afterwards', async () => {
    await driver.query(INSERT, [['dup'], new Uint8Array(0)]);
    const error = await driver.query(INSERT, [['dup'], new Uint8Array(0)]).catch((e: unknown) => e);
    expect(sqlState(error)).toBe('23505');
    // An answered error means the autocommit statement rolled back: batches may retry alone.
    expect(statementRolledBack(error)).toBe(true);
    expect(sqlState(await driver.query({ text: 'SELECT * FROM no_such_table' }).catch((e: unknown) => e))).toBe('42P01');
    expect((await driver.query(SELECT, [['dup']])).rows).toHaveLength(1);
    await driver.query({ text: 'DELETE FROM t' });
  });

  it('commits a transaction, and rolls it back when the work throws or a statement fails', async () => {
    await driver.transaction(async (session) => {
      await session.query(INSERT, [['kept'], new Uint8Array(0)]);
    });
    await expect(
      driver.transaction(async (session) => {
        await session.query(INSERT, [['thrown'], new Uint8Array(0)]);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    const failed = await driver
      .transaction(async (session) => {
        await session.query(INSERT, [['failed'], new Uint8Array(0)]);
        await session.query(INSERT, [['kept'], new Uint8Array(0)]);
      })
      .catch((e: unknown) => e);
    expect(sqlState(failed)).toBe('23505');
    expect((await driver.query({ text: 'SELECT k FROM t ORDER BY k' })).rows).toEqual([{ k: 'kept' }]);
    expect(db.isInTransaction()).toBe(false);
    await driver.query({ text: 'DELETE FROM t' });
  });

  it('never lets PGlite API calls or other statements into its transaction', async () => {
    let releaseWork!: () => void;
    const held = new Promise<void>((resolve) => (releaseWork = resolve));
    let insideStarted!: () => void;
    const started = new Promise<void>((resolve) => (insideStarted = resolve));
    const transaction = driver.transaction(async (session) => {
      await session.query(INSERT, [['tx'], new Uint8Array(0)]);
      insideStarted();
      await held;
      throw new Error('roll back');
    });
    await started;
    // Both wait for the transaction to end, so neither sees (or commits) its uncommitted row.
    const viaPglite = db.query<{ n: number }>('SELECT count(*)::int AS n FROM t');
    const viaDriver = driver.query({ text: 'SELECT count(*)::int AS n FROM t' });
    releaseWork();
    await expect(transaction).rejects.toThrow('roll back');
    expect((await viaPglite).rows[0].n).toBe(0);
    expect((await viaDriver).rows[0].n).toBe(0);
  });

  it('keeps no reply after returning it: memory stays flat over many large reads', async () => {
    // PGlite's execProtocolRaw also collected every reply, in a list only its own query API
    // empties: each value read stayed on the heap as hex text, until V8 ran out and the server died.
    setFlagsFromString('--expose-gc');
    const collectGarbage = runInNewContext('gc') as () => void;
    const value = randomBytes(1 << 20);
    await driver.query(INSERT, [['big'], value]);
    const read = async () => {
      const { rows } = await driver.query(SELECT, [['big']]);
      expect(Buffer.compare(rows[0].v as Uint8Array, value)).toBe(0);
    };
    await read();
    collectGarbage();
    // Values arrive in binary, outside the JavaScript heap: both count.
    const used = () => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const before = used();
    for (let i = 0; i < 64; i++) await read();
    collectGarbage();
    // Kept replies would be 64 MiB or more; what remains is noise.
    expect(used() - before).toBeLessThan(32 << 20);
    await driver.query({ text: 'DELETE FROM t' });
  });

  it('reads bytea columns in binary: the exact bytes, from a reply about the size of the value, not its hex text', async () => {
    // Every reply chunk PGlite hands the driver, counted.
    const stream = db.execProtocolRawStream.bind(db);
    let replyBytes = 0;
    db.execProtocolRawStream = (message, options) =>
      stream(message, { ...options, onRawData: (chunk) => ((replyBytes += chunk.byteLength), options.onRawData(chunk)) });
    const MIXED: SqlQuery = {
      name: 'test_bytea_binary_result',
      text: `SELECT $1::bytea AS value, octet_length($1::bytea) AS size, 'kéy ✓'::text AS key, 9007199254740993::int8 AS version,
          NULL::bytea AS nothing, true AS flag, '\\x0102'::bytea AS fixed, ARRAY['\\x03'::bytea] AS list`,
    };
    try {
      const everyByte = Uint8Array.from({ length: 256 }, (_, i) => i);
      const large = randomBytes(3 << 20);
      for (const value of [new Uint8Array(0), everyByte, large]) {
        replyBytes = 0;
        const { rows } = await driver.query(MIXED, [value]);
        const row = rows[0];
        expect(Buffer.isBuffer(row.value)).toBe(true);
        expect(Buffer.compare(row.value as Buffer, value)).toBe(0);
        expect([...(row.fixed as Buffer)]).toEqual([1, 2]);
        expect(row.nothing).toBeNull();
        // Hex text would be twice the value and then some.
        expect(replyBytes).toBeLessThan(value.byteLength + 1024);
        // The other columns stay in text, parsed as PGlite's own API parses them.
        const viaPglite = (await db.query<Record<string, unknown>>(MIXED.text, [value])).rows[0];
        for (const column of ['size', 'key', 'version', 'flag', 'list']) expect(row[column]).toEqual(viaPglite[column]);
      }
    } finally {
      db.execProtocolRawStream = stream;
    }
  });

  it('reassembles rows that PGlite splits across reply chunks, at every offset', async () => {
    // PGlite flushes its replies in 8 KiB pieces: these sizes move the row boundaries (and the
    // 5-byte message headers) across the piece boundaries byte by byte.
    const ROWS: SqlQuery = { name: 'test_bytea_rows', text: 'SELECT g, $1::bytea AS value FROM generate_series(1, 4) AS g' };
    for (let size = 8100; size <= 8200; size++) {
      const value = randomBytes(size);
      const { rows, rowCount } = await driver.query(ROWS, [value]);
      expect(rowCount).toBe(4);
      expect(rows.map((row) => row.g)).toEqual([1, 2, 3, 4]);
      for (const row of rows) expect(Buffer.compare(row.value as Uint8Array, value)).toBe(0);
    }
  });

  it('shares prepared statements between drivers over one instance', async () => {
    const second = new PgliteDriver(db);
    const value = randomBytes(16);
    expect(Buffer.compare((await second.query(ROUND_TRIP, [value])).rows[0].value as Uint8Array, value)).toBe(0);
  });
});

describe('PgliteBackend in memory', () => {
  let backend: PgliteBackend;

  beforeAll(async () => {
    backend = await PgliteBackend.open();
  });
  afterAll(async () => {
    await backend.close();
  });

  it('does not zero-fill WAL segments in memory', async () => {
    expect((await backend.db.query('SHOW wal_init_zero')).rows).toEqual([{ wal_init_zero: 'off' }]);
  });

  it('keeps values intact through many file growths and WAL segment switches', async () => {
    const values = new Map<string, Uint8Array>();
    // About 20 MiB of values: the table's file grows many times and WAL moves to new segments.
    for (let i = 0; i < 160; i++) {
      const value = randomBytes(128 * 1024);
      values.set(`k${i % 40}`, value);
      await backend.put('u', { storeId: 's', transactionItems: [{ key: `k${i % 40}`, version: -1n, value }], deleteItems: [] });
    }
    await backend.db.query('CHECKPOINT');
    for (const [key, value] of values) {
      const record = await backend.get('u', 's', key);
      expect(record && Buffer.compare(record.value, value)).toBe(0);
    }
  });
});

/** Runs `work` with a fresh temporary data directory, removed afterwards. */
async function withDataDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ldk-vss-pglite-'));
  try {
    await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('PgliteBackend on disk', () => {
  it('flushes every commit to disk: fsync on, WAL flushed with fsync, and the flush reaches the real file', async () => {
    await withDataDir(async (dir) => {
      const backend = await PgliteBackend.open({ dataDir: dir });
      try {
        expect((await backend.db.query('SHOW fsync')).rows).toEqual([{ fsync: 'on' }]);
        expect((await backend.db.query('SHOW wal_sync_method')).rows).toEqual([{ wal_sync_method: 'fsync' }]);
        // Emscripten's NODEFS has no fsync of its own: count the calls that reach ours.
        const streams = (backend.db as unknown as { mod: { NODEFS: { stream_ops: { fsync?: (stream: unknown) => number } } } }).mod.NODEFS.stream_ops;
        const realFsync = streams.fsync;
        expect(typeof realFsync).toBe('function');
        let flushes = 0;
        streams.fsync = (stream) => {
          flushes++;
          return realFsync!(stream);
        };
        for (let i = 0; i < 5; i++) {
          await backend.put('user', { storeId: 's', transactionItems: [{ key: `k${i}`, version: 0n, value: randomBytes(300) }], deleteItems: [] });
        }
        expect(flushes).toBeGreaterThanOrEqual(5);
      } finally {
        await backend.close();
      }
      const reopened = await PgliteBackend.open({ dataDir: dir });
      try {
        expect((await reopened.get('user', 's', 'k4'))?.version).toBe(1n);
      } finally {
        await reopened.close();
      }
    });
  });

  it('keeps zero-filled WAL segments (the default) in a data directory', async () => {
    await withDataDir(async (dir) => {
      const backend = await PgliteBackend.open({ dataDir: dir });
      try {
        expect((await backend.db.query('SHOW wal_init_zero')).rows).toEqual([{ wal_init_zero: 'on' }]);
      } finally {
        await backend.close();
      }
    });
  });
});

describe('one server per data directory', () => {
  const lockPath = (dir: string) => join(dir, DATA_DIR_LOCK_FILE);
  /** A lock file as another holder would have left it. */
  const writeLock = async (dir: string, holder: { pid: number; host?: string }, ageMs = 0) => {
    const pidNamespace = await readlink('/proc/self/ns/pid').catch(() => undefined);
    await writeFile(lockPath(dir), JSON.stringify({ host: hostname(), pidNamespace, token: 'theirs', since: '2026-01-01T00:00:00Z', ...holder }));
    const at = new Date(Date.now() - ageMs);
    await utimes(lockPath(dir), at, at);
  };

  it('refuses a second backend on a directory in use (however the path is spelled), and opens it again once the first is closed', async () => {
    await withDataDir(async (dir) => {
      const first = await PgliteBackend.open({ dataDir: dir });
      try {
        for (const spelling of [dir, `${dir}/`, join(dir, '..', basename(dir))]) {
          const error = await PgliteBackend.open({ dataDir: spelling }).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(DataDirInUseError);
          expect((error as Error).message).toContain(`in use by process ${process.pid} on ${hostname()}`);
        }
        expect(JSON.parse(await readFile(lockPath(dir), 'utf8'))).toMatchObject({ pid: process.pid, host: hostname() });
      } finally {
        await first.close();
      }
      await expect(readFile(lockPath(dir))).rejects.toMatchObject({ code: 'ENOENT' });
      const second = await PgliteBackend.open({ dataDir: dir });
      await second.close();
    });
  });

  it('refuses a lock held by another live process here, or refreshed recently from elsewhere', async () => {
    await withDataDir(async (dir) => {
      await writeLock(dir, { pid: process.ppid });
      await expect(PgliteBackend.open({ dataDir: dir })).rejects.toThrow(new RegExp(`in use by process ${process.ppid} `));
      // Holders that cannot be checked by pid, not waited for: refused while their lock is fresh.
      await writeLock(dir, { pid: 1, host: 'another-host' });
      await expect(PgliteBackend.open({ dataDir: dir, lockWaitMs: 0 })).rejects.toBeInstanceOf(DataDirInUseError);
      // This process's pid with another token: another thread of this process holds it.
      await writeLock(dir, { pid: process.pid });
      await expect(PgliteBackend.open({ dataDir: dir, lockWaitMs: 0 })).rejects.toBeInstanceOf(DataDirInUseError);
      // A half-written lock (a server that crashed while creating it) is judged by its age too.
      await writeFile(lockPath(dir), '{"pid": 12');
      await expect(PgliteBackend.open({ dataDir: dir, lockWaitMs: 0 })).rejects.toBeInstanceOf(DataDirInUseError);
    });
  });

  it('waits for a holder it cannot check by pid: refused once it sees a refresh, taken over once the lock goes stale', async () => {
    await withDataDir(async (dir) => {
      // Alive elsewhere: the holder keeps refreshing its lock.
      await writeLock(dir, { pid: 1, host: 'another-host' });
      const refresher = setInterval(() => {
        const now = new Date();
        utimes(lockPath(dir), now, now).catch(() => {});
      }, 200);
      try {
        // A wait far longer than the test's timeout: only a refresh seen can end it in time.
        await expect(PgliteBackend.open({ dataDir: dir, lockWaitMs: 600_000 })).rejects.toBeInstanceOf(DataDirInUseError);
      } finally {
        clearInterval(refresher);
      }
      // Gone (a container restarted with a new pid namespace): its lock goes stale while we wait.
      await writeLock(dir, { pid: 1, host: 'another-host' }, STALE_AFTER_MS - 1_500);
      const backend = await PgliteBackend.open({ dataDir: dir, lockWaitMs: 20_000 });
      expect(JSON.parse(await readFile(lockPath(dir), 'utf8')).pid).toBe(process.pid);
      await backend.close();
    });
  });

  it('takes over a lock whose holder is gone: a dead pid here, a stale lock from elsewhere, an old lock whose pid was reused', async () => {
    await withDataDir(async (dir) => {
      const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      const deadPid = Number(dead.stdout);
      expect(deadPid).toBeGreaterThan(0);
      const cases: Array<[string, { pid: number; host?: string }, number]> = [
        ['dead pid on this host', { pid: deadPid }, 0],
        ['another host, not refreshed', { pid: 1, host: 'another-host' }, STALE_AFTER_MS + 5_000],
        ['live pid, not refreshed for long (reused after a reboot)', { pid: process.ppid }, STALE_SAME_HOST_AFTER_MS + 5_000],
        ['this pid, not refreshed (a thread or earlier process that is gone)', { pid: process.pid }, STALE_AFTER_MS + 5_000],
      ];
      for (const [what, holder, ageMs] of cases) {
        await writeLock(dir, holder, ageMs);
        const backend = await PgliteBackend.open({ dataDir: dir });
        expect(JSON.parse(await readFile(lockPath(dir), 'utf8')).pid, what).toBe(process.pid);
        await backend.close();
      }
    });
  });

  it('lets exactly one of two servers starting at the same instant take over a stale lock', async () => {
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
    // Each child spins until the agreed instant, then takes the lock and holds it a moment.
    const script = `import { lockDataDir } from ${JSON.stringify(LOCK_MODULE)};
      const [dir, goAt] = [process.argv[1], Number(process.argv[2])];
      while (Date.now() < goAt) {}
      lockDataDir(dir).then(() => { process.stdout.write('locked'); setTimeout(() => {}, 500); }, (e) => process.stdout.write(e.name));`;
    const contender = (dir: string, goAt: number) =>
      new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir, String(goAt)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (chunk) => (out += chunk));
        child.on('close', () => resolve(out));
      });
    for (let round = 0; round < 3; round++) {
      await withDataDir(async (dir) => {
        await writeLock(dir, { pid: dead });
        const goAt = Date.now() + 3_000;
        const outcomes = await Promise.all([contender(dir, goAt), contender(dir, goAt)]);
        expect(outcomes.sort(), `round ${round}`).toEqual(['DataDirInUseError', 'locked']);
      });
    }
  });
});
