/**
 * The SQL backends under failure: connections that die mid-statement (pg_terminate_backend
 * from another connection), a pool with no free connection, and close() while requests are
 * queued. Every request must get an answer; an acknowledged write must be readable afterwards;
 * a reported failure must either not have applied or be an unknown outcome (never a conflict).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConflictError } from '../../src/server/errors.js';
import { PgliteBackend } from '../../src/server/backends/pglite.js';
import { PostgresBackend } from '../../src/server/backends/postgres.js';
import type { SqlBackend } from '../../src/server/backends/sql-backend.js';
import type { PutItem } from '../../src/server/backends/types.js';
import { dropDatabase, str, TEST_DATABASE_URL, testDatabaseUrl, text, uniqueDatabaseName } from './helpers.js';

type Outcome = 'applied' | 'conflict' | { failed: unknown };

const putOne = (backend: SqlBackend, userToken: string, storeId: string, item: PutItem): Promise<Outcome> =>
  backend.put(userToken, { storeId, transactionItems: [item], deleteItems: [] }).then(
    () => 'applied' as const,
    (error: unknown) => (error instanceof ConflictError ? ('conflict' as const) : { failed: error }),
  );

/** Each promise's outcome, or 'still pending' for one that has not settled within `ms` (a hang). */
async function outcomesWithin<T>(promises: ReadonlyArray<Promise<T>>, ms: number): Promise<Array<T | 'still pending'>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<'still pending'>((resolve) => (timer = setTimeout(() => resolve('still pending'), ms)));
  try {
    return await Promise.all(promises.map((promise) => Promise.race([promise, deadline])));
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until a statement of the admin connection's database matching `like` waits for a lock; returns its backend pid. */
async function pidWaitingForLock(admin: pg.Client, like: string): Promise<number> {
  // Bounded only so that a broken setup fails instead of hanging; normally the first rounds find it.
  for (let attempt = 0; attempt < 3000; attempt++) {
    const { rows } = await admin.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1",
      [like],
    );
    if (rows.length === 1) return rows[0].pid;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no statement like ${like} waited for a lock`);
}

describe.skipIf(!TEST_DATABASE_URL)(`PostgreSQL backend under failure${TEST_DATABASE_URL ? '' : ' — SKIPPED: TEST_DATABASE_URL is not set'}`, () => {
  const database = uniqueDatabaseName('backend_failures');
  let backend: PostgresBackend;
  /** Holds row locks (an open transaction), as a long transaction of another client would. */
  let locker: pg.Client;
  /** Terminates other connections. */
  let admin: pg.Client;
  let userCounter = 0;
  const newUser = () => `user-${++userCounter}`;

  /** Error events emitted on a pooled connection nobody listened to: each one would have crashed the process. */
  const unheardErrors: unknown[] = [];

  beforeAll(async () => {
    backend = await PostgresBackend.open({ url: testDatabaseUrl(database), poolSize: 4 });
    const watched = new WeakSet<pg.PoolClient>();
    backend.pool.on('acquire', (client) => {
      if (watched.has(client)) return;
      watched.add(client);
      const emit = client.emit.bind(client);
      client.emit = ((event: string | symbol, ...args: unknown[]) => {
        if (event === 'error' && client.listenerCount('error') === 0) {
          unheardErrors.push(args[0]);
          return false;
        }
        return emit(event, ...args);
      }) as typeof client.emit;
    });
    locker = new pg.Client({ connectionString: testDatabaseUrl(database) });
    admin = new pg.Client({ connectionString: testDatabaseUrl(database) });
    await Promise.all([locker.connect(), admin.connect()]);
  });
  afterAll(async () => {
    await Promise.allSettled([locker?.end(), admin?.end(), backend?.close()]);
    await dropDatabase(database);
  });

  const stored = async (userToken: string, storeId: string, key: string) => {
    const record = await backend.get(userToken, storeId, key);
    return record && { version: record.version, value: str(record.value) };
  };
  const lockRow = async (userToken: string, storeId: string, key: string) => {
    await locker.query('BEGIN');
    await locker.query('SELECT 1 FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = $3 FOR UPDATE', [userToken, storeId, key]);
  };

  it('fails a multi-item put whose connection is terminated mid-statement, keeps the process alive, and serves the next requests', async () => {
    const userToken = newUser();
    await backend.put(userToken, { storeId: 's', transactionItems: [{ key: 'x', version: -1n, value: text('x0') }], deleteItems: [] });
    await lockRow(userToken, 's', 'x');
    try {
      // LDK's usual write: two items, one transaction, held up by the lock on x.
      const put = backend.put(userToken, {
        storeId: 's',
        transactionItems: [
          { key: 'x', version: 1n, value: text('x1') },
          { key: 'y', version: 0n, value: text('y1') },
        ],
        deleteItems: [],
      });
      const outcome = put.then(() => 'applied', (error: unknown) => error);
      await admin.query('SELECT pg_terminate_backend($1)', [await pidWaitingForLock(admin, 'UPDATE vss_db%')]);
      expect(await outcome).toMatchObject({ code: '57P01' });
    } finally {
      await locker.query('ROLLBACK');
    }
    // By now the connection's end has arrived too; pg emits an 'error' event for it on the
    // checked-out connection, which, unheard, crashed the process (see unheardErrors).
    expect(await stored(userToken, 's', 'x')).toEqual({ version: 1n, value: 'x0' });
    expect(await stored(userToken, 's', 'y')).toBeUndefined();
    await backend.put(userToken, {
      storeId: 's',
      transactionItems: [
        { key: 'x', version: 1n, value: text('x1') },
        { key: 'y', version: 0n, value: text('y1') },
      ],
      deleteItems: [],
    });
    expect(await stored(userToken, 's', 'y')).toEqual({ version: 1n, value: 'y1' });
    expect(unheardErrors).toEqual([]);
  });

  it('fails every request of a batch whose connection is terminated mid-statement as an unknown outcome, never as a conflict', async () => {
    const userToken = newUser();
    const storeId = 'batch';
    for (const key of ['a', 'b', 'c', 'd']) await backend.put(userToken, { storeId, transactionItems: [{ key, version: -1n, value: text(`${key}0`) }], deleteItems: [] });
    await lockRow(userToken, storeId, 'c');
    const before = structuredClone(backend.batchStats?.put.update);
    let outcomes: Outcome[];
    try {
      // a goes alone at once; b, c and d queue behind it and leave as one compare-and-set batch,
      // which waits for the lock on c until its connection is terminated.
      const puts = ['a', 'b', 'c', 'd'].map((key) => putOne(backend, userToken, storeId, { key, version: 1n, value: text(`${key}1`) }));
      await admin.query('SELECT pg_terminate_backend($1)', [await pidWaitingForLock(admin, '%unnest%')]);
      outcomes = await Promise.all(puts);
    } finally {
      await locker.query('ROLLBACK');
    }
    expect(outcomes[0]).toBe('applied');
    // Retried alone, b and d would have applied; but the statement might have committed (it
    // did not here), so nothing may be retried and nothing may be called a conflict.
    for (const outcome of outcomes.slice(1)) expect(outcome).toEqual({ failed: expect.objectContaining({ code: '57P01' }) });
    expect(backend.batchStats?.put.update).toMatchObject({ batches: (before?.batches ?? 0) + 1, failedBatches: (before?.failedBatches ?? 0) + 1 });
    expect(await stored(userToken, storeId, 'a')).toEqual({ version: 2n, value: 'a1' });
    for (const key of ['b', 'c', 'd']) expect(await stored(userToken, storeId, key), key).toEqual({ version: 1n, value: `${key}0` });
    // The pool replaced the terminated connection: the same writes now apply.
    const again = await Promise.all(['b', 'c', 'd'].map((key) => putOne(backend, userToken, storeId, { key, version: 1n, value: text(`${key}1`) })));
    expect(again).toEqual(['applied', 'applied', 'applied']);
  });

  it('answers every request waiting for a connection with an error when the backend closes, and applies none of them', async () => {
    const closing = await PostgresBackend.open({ url: testDatabaseUrl(database), poolSize: 1, migrate: false });
    const held = await closing.pool.connect();
    const userToken = newUser();
    const storeId = 'closing';
    const requests: Array<Promise<unknown>> = [
      closing.get(userToken, storeId, 'a').then((record) => record ?? 'absent', (error: unknown) => ({ failed: error })),
      ...['a', 'b', 'c'].map((key) => putOne(closing, userToken, storeId, { key, version: 0n, value: text(key) })),
      ...['d', 'e'].map((key) => putOne(closing, userToken, storeId, { key, version: -1n, value: text(key) })),
      closing
        .put(userToken, { storeId, transactionItems: [{ key: 'f', version: 0n, value: text('f') }, { key: 'g', version: 0n, value: text('g') }], deleteItems: [] })
        .then(() => 'applied', (error: unknown) => ({ failed: error })),
      closing.list(userToken, { storeId, keyPrefix: '', limit: 10 }).then(() => 'listed', (error: unknown) => ({ failed: error })),
    ];
    // Everything waits for the one connection, held here; the batched puts queue behind the first.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const closed = closing.close();
    held.release();
    await closed;
    const outcomes = await outcomesWithin(requests, 10_000);
    for (const outcome of outcomes) expect(outcome).toEqual({ failed: expect.any(Error) });
    for (const key of ['a', 'b', 'c', 'd', 'e', 'f', 'g']) expect(await stored(userToken, storeId, key), key).toBeUndefined();
  });

  it('keeps every write acknowledged before close readable, and applies none that failed for the close', async () => {
    const closing = await PostgresBackend.open({ url: testDatabaseUrl(database), poolSize: 2, migrate: false });
    const userToken = newUser();
    const storeId = 'close-race';
    // More than one batch of each kind (64 at most per statement).
    const keys = Array.from({ length: 400 }, (_, i) => `k${i}`);
    const puts = keys.map((key, i) => putOne(closing, userToken, storeId, { key, version: i % 2 === 0 ? 0n : -1n, value: text(`v-${key}`) }));
    // Closed once the first two (a lone create and a lone upsert) are answered: others are then
    // running as batches, queued behind them, or waiting for a connection.
    await Promise.all(puts.slice(0, 2));
    await new Promise((resolve) => setImmediate(resolve));
    await closing.close();
    const outcomes = await outcomesWithin(puts, 10_000);
    expect(outcomes).not.toContain('still pending');
    expect(outcomes).not.toContain('conflict');
    for (const [i, key] of keys.entries()) {
      expect(await stored(userToken, storeId, key), `${key}: ${JSON.stringify(outcomes[i])}`).toEqual(
        outcomes[i] === 'applied' ? { version: 1n, value: `v-${key}` } : undefined,
      );
    }
  });
});

describe('PGlite backend closed while requests are queued', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ldk-vss-backend-failures-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('answers every request, and every write acknowledged before the close is there after a reopen; failed ones are not', async () => {
    const dataDir = join(dir, 'data');
    const userToken = 'user';
    const storeId = 'close-race';
    const first = await PgliteBackend.open({ dataDir });
    await first.put(userToken, { storeId, transactionItems: [{ key: 'existing', version: -1n, value: text('old') }], deleteItems: [] });
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const requests: Array<Promise<unknown>> = [
      ...keys.map((key, i) => putOne(first, userToken, storeId, { key, version: i % 2 === 0 ? 0n : -1n, value: text(`v-${key}`) })),
      ...keys.map((key) => first.get(userToken, storeId, key).then((record) => record ?? 'absent', (error: unknown) => ({ failed: error }))),
      first
        .put(userToken, { storeId, transactionItems: [{ key: 'm1', version: 0n, value: text('m') }, { key: 'm2', version: 0n, value: text('m') }], deleteItems: [] })
        .then(() => 'applied', (error: unknown) => ({ failed: error })),
    ];
    await Promise.race(requests);
    await first.close();
    const outcomes = await outcomesWithin(requests, 10_000);
    expect(outcomes).not.toContain('still pending');
    expect(outcomes).not.toContain('conflict');
    const reopened = await PgliteBackend.open({ dataDir });
    try {
      for (const [i, key] of keys.entries()) {
        const record = await reopened.get(userToken, storeId, key);
        expect(record && str(record.value), `${key}: ${JSON.stringify(outcomes[i])}`).toBe(outcomes[i] === 'applied' ? `v-${key}` : undefined);
      }
      const multiApplied = outcomes[outcomes.length - 1] === 'applied';
      expect((await reopened.get(userToken, storeId, 'm2')) !== undefined).toBe(multiApplied);
      expect(str((await reopened.get(userToken, storeId, 'existing'))?.value)).toBe('old');
    } finally {
      await reopened.close();
    }
  });
});
