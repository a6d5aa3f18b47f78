/**
 * The PostgreSQL backend's connection settings and startup under failure: a statement waiting on
 * a lock held by a stuck session fails (500) instead of waiting forever, while startup
 * migrations still wait; a database that never answers fails startup after the connect timeout;
 * a connection that breaks while the database is being created fails
 * startup instead of crashing the process; and a stuck statement does not hang /health or
 * shutdown.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { PostgresBackend } from '../../src/server/backends/postgres.js';
import { INTERNAL_ERROR_MESSAGE } from '../../src/server/errors.js';
import { BackendCloseTimeoutError, DEFAULT_LOCK_TIMEOUT_MS, startVssServer } from '../../src/server/index.js';
import { dropDatabase, errorOf, send, TEST_DATABASE_URL, testDatabaseUrl, uniqueDatabaseName } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The promise's outcome, or 'still pending' if it has not settled within `ms` (a hang). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'still pending'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([promise, new Promise<'still pending'>((resolve) => (timer = setTimeout(() => resolve('still pending'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const putBody = (key: string) => vss.PutObjectRequest.encode({ storeId: 's', transactionItems: [keyValue(key, -1n, new Uint8Array([1]))] }).finish();

/** Waits until a statement of `database` matching `like` waits for a lock. */
async function waitingForLock(admin: pg.Client, like: string): Promise<void> {
  // Bounded only so that a broken setup fails instead of hanging.
  for (let attempt = 0; attempt < 3000; attempt++) {
    const { rows } = await admin.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1", [like]);
    if (rows.length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no statement like ${like} waited for a lock`);
}

describe.skipIf(!TEST_DATABASE_URL)(`PostgreSQL connection settings${TEST_DATABASE_URL ? '' : ' — SKIPPED: TEST_DATABASE_URL is not set'}`, () => {
  const database = uniqueDatabaseName('pg_lifecycle');
  /** Holds row and table locks in an open transaction, as a stuck session would. */
  let locker: pg.Client;
  /** Watches pg_stat_activity (which a transaction, such as the locker's, sees frozen). */
  let admin: pg.Client;

  beforeAll(async () => {
    // Creates and migrates the database.
    await (await PostgresBackend.open({ url: testDatabaseUrl(database) })).close();
    locker = new pg.Client({ connectionString: testDatabaseUrl(database) });
    await locker.connect();
    admin = new pg.Client({ connectionString: testDatabaseUrl(database) });
    await admin.connect();
  });

  afterAll(async () => {
    await locker?.end();
    await admin?.end();
    await dropDatabase(database);
  });

  it('sessions get the lock timeout (default 30 s) and statement timeout (default none)', async () => {
    const defaults = await PostgresBackend.open({ url: testDatabaseUrl(database), poolSize: 1 });
    try {
      expect((await defaults.pool.query('SHOW lock_timeout')).rows[0].lock_timeout).toBe(`${DEFAULT_LOCK_TIMEOUT_MS / 1000}s`);
      expect((await defaults.pool.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('0');
    } finally {
      await defaults.close();
    }
    const tuned = await PostgresBackend.open({ url: testDatabaseUrl(database), poolSize: 1, lockTimeoutMs: 0, statementTimeoutMs: 1500 });
    try {
      expect((await tuned.pool.query('SHOW lock_timeout')).rows[0].lock_timeout).toBe('0');
      expect((await tuned.pool.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('1500ms');
    } finally {
      await tuned.close();
    }
    await expect(PostgresBackend.open({ url: testDatabaseUrl(database), lockTimeoutMs: -1 })).rejects.toThrow('lockTimeoutMs must be an integer');
  });

  it('a write waiting on a row lock held by a stuck session fails with a plain 500 after the lock timeout, and works once the lock is gone', async () => {
    const server = await startVssServer({ backend: { kind: 'postgres', url: testDatabaseUrl(database), lockTimeoutMs: 200 }, auth: { kind: 'noop' } });
    try {
      expect((await send(`${server.url}/putObjects`, putBody('locked'))).status).toBe(200);
      await locker.query('BEGIN');
      await locker.query("SELECT 1 FROM vss_db WHERE key = 'locked' FOR UPDATE");
      const stuck = await within(send(`${server.url}/putObjects`, putBody('locked')), 20_000);
      expect(stuck).not.toBe('still pending');
      const response = stuck as Awaited<ReturnType<typeof send>>;
      expect(response.status).toBe(500);
      // Nothing of PostgreSQL's message (the lock, the table) reaches the client.
      expect(errorOf(response)).toEqual({ code: vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, message: INTERNAL_ERROR_MESSAGE });
      // Other keys are served meanwhile.
      expect((await send(`${server.url}/putObjects`, putBody('free'))).status).toBe(200);
      await locker.query('ROLLBACK');
      expect((await send(`${server.url}/putObjects`, putBody('locked'))).status).toBe(200);
    } finally {
      await locker.query('ROLLBACK');
      await server.close();
    }
  });

  it('startup migrations still wait for locks (another instance migrating) instead of failing on the lock timeout', async () => {
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE vss_db_version IN ACCESS EXCLUSIVE MODE');
    try {
      const opening = PostgresBackend.open({ url: testDatabaseUrl(database), lockTimeoutMs: 100 });
      opening.catch(() => {}); // awaited below; a failure meanwhile is not an unhandled rejection
      await waitingForLock(admin, '%vss_db_version%');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await locker.query('ROLLBACK');
      const backend = await opening;
      expect(backend.migration?.from).toBe(backend.migration?.to);
      await backend.close();
    } finally {
      await locker.query('ROLLBACK');
    }
  });

  it('a statement stuck on a lock neither hangs GET /health nor shutdown', async () => {
    const server = await startVssServer({
      // One connection, taken by the stuck statement; no lock timeout, so it stays stuck.
      backend: { kind: 'postgres', url: testDatabaseUrl(database), poolSize: 1, lockTimeoutMs: 0 },
      auth: { kind: 'noop' },
      healthCheckTimeoutMs: 200,
      shutdownGraceMs: 100,
    });
    try {
      expect((await send(`${server.url}/putObjects`, putBody('held'))).status).toBe(200);
      await locker.query('BEGIN');
      await locker.query("SELECT 1 FROM vss_db WHERE key = 'held' FOR UPDATE");
      const stuck = send(`${server.url}/putObjects`, putBody('held')).catch(() => 'cut');
      await waitingForLock(admin, '%vss_db%');
      const health = await within(send(`${server.url.replace(/\/vss$/, '')}/health`, undefined, { method: 'GET' }), 20_000);
      expect(health).not.toBe('still pending');
      expect((health as Awaited<ReturnType<typeof send>>).status).toBe(503);
      // The grace period cuts the stuck request; the pool would wait for its statement forever.
      const closed = await within(
        server.close().then(
          () => 'closed',
          (error: unknown) => error,
        ),
        20_000,
      );
      expect(closed).toBeInstanceOf(BackendCloseTimeoutError);
      expect(await stuck).toBe('cut');
    } finally {
      await locker.query('ROLLBACK');
    }
  });
});

describe.skipIf(!TEST_DATABASE_URL)(`PostgreSQL database creation at startup${TEST_DATABASE_URL ? '' : ' — SKIPPED: TEST_DATABASE_URL is not set'}`, () => {
  let proxy: net.Server;
  let proxyPort: number;
  const cut: string[] = [];

  beforeAll(async () => {
    const target = new URL(TEST_DATABASE_URL as string);
    // Forwards to the test server, but breaks a connection as soon as it asks about pg_database
    // (what creating the database does): a database restart at the worst moment.
    proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 5432), target.hostname);
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      upstream.pipe(client);
      client.on('data', (chunk: Buffer) => {
        if (chunk.includes('pg_database')) {
          cut.push('pg_database');
          client.destroy();
          upstream.destroy();
        } else upstream.write(chunk);
      });
      client.on('close', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    proxyPort = (proxy.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise((resolve) => proxy.close(resolve));
  });

  it('a connection broken while creating the database fails startup with its error instead of crashing the process', async () => {
    const url = new URL(testDatabaseUrl(uniqueDatabaseName('never_created')));
    url.host = `127.0.0.1:${proxyPort}`;
    // In a process of its own: the crash this guards against is an uncaught 'error' event.
    const script = [
      `import { PostgresBackend } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/server/backends/postgres.ts')).href)};`,
      `PostgresBackend.open({ url: ${JSON.stringify(url.toString())} }).then(`,
      `  () => console.log('opened'),`,
      `  (error) => console.log('refused: ' + error.message),`,
      `);`,
    ].join('\n');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(stdout.trim()).toMatch(/^refused: (Connection terminated unexpectedly|.*ECONNRESET)$/);
    expect(cut).toEqual(['pg_database']);
  });
});

describe('a PostgreSQL that accepts connections but never answers', () => {
  let silent: net.Server;
  let port = 0;
  const sockets = new Set<net.Socket>();
  beforeAll(async () => {
    // Accepts TCP and reads, never writes: a hung host or proxy, not a refused connection.
    silent = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    port = (silent.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('fails startup after the connect timeout instead of waiting forever', async () => {
    const opening = PostgresBackend.open({ url: `postgres://postgres@127.0.0.1:${port}/vss`, connectTimeoutMs: 300 });
    const outcome = await within(opening.then(() => 'opened', (error: unknown) => error as Error), 10_000);
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(/timeout/i);
  });

  it('refuses a connect timeout PostgreSQL-style settings cannot take', async () => {
    await expect(PostgresBackend.open({ url: `postgres://postgres@127.0.0.1:${port}/vss`, connectTimeoutMs: -1 })).rejects.toThrow(/connectTimeoutMs must be an integer/);
  });
});
