/**
 * Natural batching of single-row operations (src/server/backends/batcher.ts and the batch
 * statements of sql-backend.ts): the batcher's rules on a scripted runner, then the SQL
 * backends under concurrency, where every request must get exactly the outcome it would have
 * had alone — on PGlite and on PostgreSQL (when TEST_DATABASE_URL is set).
 */
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { ConflictError, startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { Batcher, type BatcherOptions, type BatchRunner } from '../../src/server/backends/batcher.js';
import { PgliteBackend, PgliteDriver } from '../../src/server/backends/pglite.js';
import { PgPoolDriver, PostgresBackend } from '../../src/server/backends/postgres.js';
import { BATCH_VALUE_LIMIT, DEFAULT_BATCHING, SqlBackend, statementRolledBack } from '../../src/server/backends/sql-backend.js';
import type { SqlDriver, SqlQuery } from '../../src/server/backends/sql-driver.js';
import type { PutItem } from '../../src/server/backends/types.js';
import { backendCase, newIdentity, send, str, text, type OpenedBackend } from './helpers.js';

// ---------------------------------------------------------------------------------------
// The batcher on a scripted runner

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Inputs are "key:tag" strings; results echo the input. Every call waits until released. */
class ScriptedRunner implements BatchRunner<string, string> {
  readonly calls: string[][] = [];
  private readonly gates: Array<Deferred<void>> = [];
  batchError?: Error;
  retryableErrors = true;
  /** Inputs whose runOne fails. */
  readonly failAlone = new Set<string>();

  async runBatch(inputs: readonly string[]): Promise<string[]> {
    this.calls.push([...inputs]);
    await this.gate();
    if (this.batchError) throw this.batchError;
    return inputs.map((input) => `done ${input}`);
  }

  async runOne(input: string): Promise<string> {
    this.calls.push([input]);
    await this.gate();
    if (this.failAlone.has(input)) throw new Error(`${input} failed`);
    return `done ${input}`;
  }

  keyOf(input: string): string {
    return input.split(':')[0];
  }

  retryable(): boolean {
    return this.retryableErrors;
  }

  private gate(): Promise<void> {
    const gate = deferred<void>();
    this.gates.push(gate);
    return gate.promise;
  }

  /** Lets the oldest waiting call finish. */
  async release(): Promise<void> {
    const gate = this.gates.shift();
    expect(gate, 'a call to release').toBeDefined();
    gate?.resolve();
    await new Promise((resolve) => setImmediate(resolve));
  }

  async releaseAll(): Promise<void> {
    while (this.gates.length > 0) await this.release();
  }
}

const batcherOptions: BatcherOptions = { maxInFlight: 1, maxBatchSize: 64, stallMs: 60_000, gather: DEFAULT_BATCHING.gather };

describe('Batcher', () => {
  it('runs a lone request at once and on its own', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, batcherOptions);
    const result = batcher.run('a:1');
    expect(runner.calls).toEqual([['a:1']]);
    await runner.release();
    await expect(result).resolves.toBe('done a:1');
    expect(batcher.stats).toMatchObject({ single: 1, batches: 0 });
  });

  it('sends the requests that queued while a batch ran together, each with its own result', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, batcherOptions);
    const first = batcher.run('a:1');
    const queued = ['b:1', 'c:1', 'd:1'].map((input) => batcher.run(input));
    expect(runner.calls).toEqual([['a:1']]);
    await runner.release();
    expect(runner.calls).toEqual([['a:1'], ['b:1', 'c:1', 'd:1']]);
    await runner.release();
    expect(await Promise.all([first, ...queued])).toEqual(['done a:1', 'done b:1', 'done c:1', 'done d:1']);
    expect(batcher.stats).toMatchObject({ single: 1, batches: 1, batchedRequests: 3 });
  });

  it('keeps a repeated key out of the batch and runs its requests in arrival order', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, batcherOptions);
    const all = ['x:0', 'k:1', 'm:1', 'k:2', 'n:1', 'k:3'].map((input) => batcher.run(input));
    await runner.release();
    expect(runner.calls[1]).toEqual(['k:1', 'm:1', 'n:1']);
    await runner.release();
    expect(runner.calls[2]).toEqual(['k:2']);
    await runner.release();
    expect(runner.calls[3]).toEqual(['k:3']);
    await runner.release();
    expect(await Promise.all(all)).toHaveLength(6);
  });

  it('with many requests queued for one key, each runs once and in order, and other keys still get through', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, { ...batcherOptions, maxBatchSize: 2 });
    const inputs = ['x:0', ...Array.from({ length: 30 }, (_, i) => `k:${i}`), 'z:1', 'k:30'];
    const all = inputs.map((input) => batcher.run(input));
    await runner.releaseAll();
    expect(await Promise.all(all)).toEqual(inputs.map((input) => `done ${input}`));
    const ran = runner.calls.flat();
    expect([...ran].sort()).toEqual([...inputs].sort());
    expect(ran.filter((input) => input.startsWith('k:'))).toEqual(inputs.filter((input) => input.startsWith('k:')));
    expect(runner.calls.every((call) => new Set(call.map((input) => input.split(':')[0])).size === call.length)).toBe(true);
  });

  it('lets reads (no key) share a batch even when they repeat', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher<string, string>(
      { runBatch: (inputs) => runner.runBatch(inputs), runOne: (input) => runner.runOne(input), retryable: () => true },
      batcherOptions,
    );
    const all = ['a', 'b', 'b', 'a'].map((input) => batcher.run(input));
    await runner.release();
    expect(runner.calls[1]).toEqual(['b', 'b', 'a']);
    await runner.releaseAll();
    expect(await Promise.all(all)).toEqual(['done a', 'done b', 'done b', 'done a']);
  });

  it('caps a batch at maxBatchSize and runs at most maxInFlight at once', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, { ...batcherOptions, maxInFlight: 2, maxBatchSize: 3 });
    const all = Array.from({ length: 9 }, (_, i) => batcher.run(`k${i}:1`));
    expect(runner.calls).toEqual([['k0:1'], ['k1:1']]);
    await runner.release();
    expect(runner.calls.slice(2)).toEqual([['k2:1', 'k3:1', 'k4:1']]);
    await runner.release();
    expect(runner.calls.slice(3)).toEqual([['k5:1', 'k6:1', 'k7:1']]);
    await runner.releaseAll();
    expect(runner.calls.slice(4)).toEqual([['k8:1']]);
    expect(await Promise.all(all)).toHaveLength(9);
  });

  describe('gathering after a large batch', () => {
    const gather = { minBatch: 4, fraction: 0.8, maxWaitMs: 40 };
    const turn = () => new Promise((resolve) => setImmediate(resolve));

    /** Runs a lone request and then a batch of `size`, and releases both: the state after a batch of that size. */
    async function afterBatchOf(runner: ScriptedRunner, batcher: Batcher<string, string>, size: number): Promise<void> {
      const all = Array.from({ length: size + 1 }, (_, i) => batcher.run(`warm${i}:1`));
      await runner.release();
      expect(runner.calls.at(-1)).toHaveLength(size);
      await runner.release();
      await Promise.all(all);
    }

    /** `input` must start at once and alone (no gathering wait), and get its own result. */
    async function expectRunsAtOnce(runner: ScriptedRunner, batcher: Batcher<string, string>, input: string): Promise<void> {
      const result = batcher.run(input);
      expect(runner.calls.at(-1)).toEqual([input]);
      await runner.release();
      await expect(result).resolves.toBe(`done ${input}`);
    }

    it('waits for most of the last batch to queue again, then sends them as one batch', async () => {
      const runner = new ScriptedRunner();
      const batcher = new Batcher(runner, { ...batcherOptions, gather });
      await afterBatchOf(runner, batcher, 5);
      const calls = runner.calls.length;
      // ceil(5 * 0.8) = 4 awaited: three requests wait, the fourth sends all four.
      const next = ['a:1', 'b:1', 'c:1'].map((input) => batcher.run(input));
      await turn();
      expect(runner.calls).toHaveLength(calls);
      next.push(batcher.run('d:1'));
      expect(runner.calls.slice(calls)).toEqual([['a:1', 'b:1', 'c:1', 'd:1']]);
      await runner.release();
      expect(await Promise.all(next)).toEqual(['done a:1', 'done b:1', 'done c:1', 'done d:1']);
    });

    it('sends what has queued once maxWaitMs have passed since the large batch, when no more requests come', async () => {
      // The batcher's clock and timer are faked (setImmediate stays real for `turn`), so the
      // test checks the wait exactly: not one millisecond early, and not later either.
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
      try {
        const runner = new ScriptedRunner();
        const batcher = new Batcher(runner, { ...batcherOptions, gather });
        await afterBatchOf(runner, batcher, 4);
        const calls = runner.calls.length;
        const lone = batcher.run('a:1');
        await turn();
        expect(runner.calls).toHaveLength(calls);
        vi.advanceTimersByTime(gather.maxWaitMs - 1);
        await turn();
        expect(runner.calls).toHaveLength(calls);
        vi.advanceTimersByTime(1);
        await turn();
        expect(runner.calls).toHaveLength(calls + 1);
        expect(runner.calls.at(-1)).toEqual(['a:1']);
        await runner.release();
        await expect(lone).resolves.toBe('done a:1');
        // The wait applies once: the next lone request runs at once.
        await expectRunsAtOnce(runner, batcher, 'b:1');
      } finally {
        vi.useRealTimers();
      }
    });

    it('does not delay a request that arrives after the wait window of the large batch has passed', async () => {
      const runner = new ScriptedRunner();
      const batcher = new Batcher(runner, { ...batcherOptions, gather });
      await afterBatchOf(runner, batcher, 6);
      await new Promise((resolve) => setTimeout(resolve, gather.maxWaitMs + 10));
      await expectRunsAtOnce(runner, batcher, 'a:1');
    });

    it('never delays a request after a batch smaller than minBatch, nor when gathering is off', async () => {
      for (const [options, size] of [
        [{ ...batcherOptions, gather }, 3],
        [{ ...batcherOptions, gather: false as const }, 10],
      ] as const) {
        const runner = new ScriptedRunner();
        const batcher = new Batcher(runner, options);
        await afterBatchOf(runner, batcher, size);
        await expectRunsAtOnce(runner, batcher, 'a:1');
      }
    });
  });

  it('retries each request of a rolled-back batch alone, so only the guilty one fails', async () => {
    const runner = new ScriptedRunner();
    const onBatchError = vi.fn();
    const batcher = new Batcher<string, string>(
      {
        runBatch: (inputs) => runner.runBatch(inputs),
        runOne: (input) => runner.runOne(input),
        keyOf: (input) => runner.keyOf(input),
        retryable: () => true,
        onBatchError,
      },
      batcherOptions,
    );
    const first = batcher.run('a:1');
    const queued = Promise.allSettled(['b:1', 'bad:1', 'c:1'].map((input) => batcher.run(input)));
    runner.batchError = new Error('statement failed');
    runner.failAlone.add('bad:1');
    await runner.releaseAll();
    await runner.releaseAll();
    await expect(first).resolves.toBe('done a:1');
    const outcomes = await queued;
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason.message).toBe('bad:1 failed');
    expect(runner.calls.slice(1)).toEqual([['b:1', 'bad:1', 'c:1'], ['b:1'], ['bad:1'], ['c:1']]);
    expect(onBatchError).toHaveBeenCalledWith(runner.batchError, 3);
    expect(batcher.stats).toMatchObject({ failedBatches: 1, single: 4 });
  });

  it('fails every request of a batch whose outcome is unknown, without retrying any', async () => {
    const runner = new ScriptedRunner();
    runner.retryableErrors = false;
    const batcher = new Batcher(runner, batcherOptions);
    const first = batcher.run('a:1');
    const queued = Promise.allSettled(['b:1', 'c:1'].map((input) => batcher.run(input)));
    const lost = new Error('connection lost');
    runner.batchError = lost;
    await runner.releaseAll();
    await runner.releaseAll();
    await expect(first).resolves.toBe('done a:1');
    for (const outcome of await queued) expect(outcome).toEqual({ status: 'rejected', reason: lost });
    expect(runner.calls).toEqual([['a:1'], ['b:1', 'c:1']]);
  });

  it('treats a batch result of the wrong length as a failed batch', async () => {
    const batcher = new Batcher<string, string>(
      { runBatch: async () => ['only one'], runOne: async (input) => input, retryable: () => false },
      batcherOptions,
    );
    const all = ['a', 'b', 'c'].map((input) => batcher.run(input));
    const outcomes = await Promise.allSettled(all);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
  });

  it('lets later requests go ahead when a batch stalls past stallMs', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, { ...batcherOptions, stallMs: 20 });
    const stuck = batcher.run('slow:1');
    const others = ['a:1', 'b:1'].map((input) => batcher.run(input));
    expect(runner.calls).toEqual([['slow:1']]);
    await vi.waitFor(() => expect(runner.calls).toEqual([['slow:1'], ['a:1', 'b:1']]), { timeout: 5000, interval: 5 });
    expect(batcher.stats.stalled).toBe(1);
    await runner.release(); // slow:1
    await runner.release(); // the batch
    await expect(stuck).resolves.toBe('done slow:1');
    expect(await Promise.all(others)).toEqual(['done a:1', 'done b:1']);
  });

  it('keeps a later write of a key out while a stalled batch still writes that key', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, { ...batcherOptions, stallMs: 20 });
    const stuck = batcher.run('k:1');
    const later = ['k:2', 'm:1'].map((input) => batcher.run(input));
    // The stall frees the slot for m:1, but k:2 must not overtake k:1, which may not have applied yet.
    await vi.waitFor(() => expect(runner.calls).toEqual([['k:1'], ['m:1']]), { timeout: 5000, interval: 5 });
    await runner.release(); // k:1
    await runner.release(); // m:1, which held the slot
    expect(runner.calls[2]).toEqual(['k:2']);
    await runner.releaseAll();
    await expect(stuck).resolves.toBe('done k:1');
    expect(await Promise.all(later)).toEqual(['done k:2', 'done m:1']);
  });

  it('does not let a later write of a key run before the retry of a stalled, failed batch that holds the key', async () => {
    const runner = new ScriptedRunner();
    const batcher = new Batcher(runner, { ...batcherOptions, stallMs: 20 });
    const first = batcher.run('x:0');
    const batch = ['k:1', 'z:1'].map((input) => batcher.run(input));
    await runner.release(); // x:0; the batch [k:1, z:1] starts
    expect(runner.calls[1]).toEqual(['k:1', 'z:1']);
    const later = batcher.run('k:2');
    await vi.waitFor(() => expect(batcher.stats.stalled).toBe(1), { timeout: 5000, interval: 5 });
    runner.batchError = new Error('lock timeout on z');
    await runner.release(); // the batch fails; k:1 and z:1 are retried alone
    expect(runner.calls.slice(2)).toEqual([['k:1'], ['z:1']]);
    runner.batchError = undefined;
    await runner.releaseAll();
    await runner.releaseAll();
    await expect(first).resolves.toBe('done x:0');
    expect(await Promise.all(batch)).toEqual(['done k:1', 'done z:1']);
    await expect(later).resolves.toBe('done k:2');
    // k:2 ran only after k:1's retry had its outcome.
    expect(runner.calls.slice(2)).toEqual([['k:1'], ['z:1'], ['k:2']]);
  });

  it('refuses nonsensical options', () => {
    const runner = new ScriptedRunner();
    expect(() => new Batcher(runner, { ...batcherOptions, maxInFlight: 0 })).toThrow(RangeError);
    expect(() => new Batcher(runner, { ...batcherOptions, maxBatchSize: 0 })).toThrow(RangeError);
    expect(() => new Batcher(runner, { ...batcherOptions, stallMs: 0 })).toThrow(RangeError);
    for (const gather of [{ minBatch: 1, fraction: 0.8, maxWaitMs: 1 }, { minBatch: 4, fraction: 0, maxWaitMs: 1 }, { minBatch: 4, fraction: 1.5, maxWaitMs: 1 }, { minBatch: 4, fraction: 0.8, maxWaitMs: 0 }]) {
      expect(() => new Batcher(runner, { ...batcherOptions, gather })).toThrow(RangeError);
    }
  });
});

describe('batching counters', () => {
  it('are logged when a SQL backend closes: requests alone, batches, and requests per batch', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const backend = await PgliteBackend.open({ logger });
    const userToken = 'counting-user';
    // Three puts of different keys started together: the first runs alone, the other two queue
    // behind it and leave together as one batch.
    await Promise.all(['a', 'b', 'c'].map((key) => backend.put(userToken, { storeId: 's', transactionItems: [{ key, version: -1n, value: text(key) }], deleteItems: [] })));
    expect((await backend.get(userToken, 's', 'c'))?.version).toBe(1n);
    await backend.close();
    const summaries = lines.map((line) => JSON.parse(line) as { msg: string; batching?: unknown }).filter((entry) => entry.batching !== undefined);
    expect(summaries).toHaveLength(1);
    expect(summaries[0].msg).toBe('request batching since start');
    expect(summaries[0].batching).toMatchObject({
      get: { single: 1, batches: 0, batchedRequests: 0 },
      put: { unconditional: { single: 1, batches: 1, batchedRequests: 2 }, create: { single: 0, batches: 0 }, update: { single: 0, batches: 0 } },
    });
  });
});

// ---------------------------------------------------------------------------------------
// The SQL backends under concurrency

/** A driver that passes everything to `inner`, except that `intercept` may replace a query. */
function interceptingDriver(inner: SqlDriver, intercept: (query: SqlQuery, run: () => Promise<unknown>) => Promise<unknown> | undefined): SqlDriver {
  return {
    query(query, params) {
      const run = () => inner.query(query, params);
      return (intercept(query, run) as ReturnType<SqlDriver['query']> | undefined) ?? run();
    },
    transaction: (work) => inner.transaction(work),
    close: () => inner.close(),
  };
}

const value = (label: string) => text(`${label}-${randomBytes(4).toString('hex')}`);

for (const name of ['pglite', 'postgres'] as const) {
  const backendUnderTest = backendCase(name);
  const title = backendUnderTest.skipReason ? `batched statements on ${name} — SKIPPED: ${backendUnderTest.skipReason}` : `batched statements on ${name}`;

  describe.skipIf(backendUnderTest.skipReason !== undefined)(title, () => {
    let opened: OpenedBackend;
    let backend: SqlBackend;
    /** The backend's own driver, for building backends with injected failures. */
    let driver: SqlDriver;

    beforeAll(async () => {
      opened = await backendUnderTest.open();
      backend = opened.backend as SqlBackend;
      driver = backend instanceof PgliteBackend ? new PgliteDriver(backend.db) : new PgPoolDriver((backend as PostgresBackend).pool);
    });
    afterAll(async () => {
      await opened?.dispose();
    });

    const user = () => `user-${randomBytes(6).toString('hex')}`;
    const putOne = (backend: SqlBackend, userToken: string, storeId: string, item: PutItem) =>
      backend.put(userToken, { storeId, transactionItems: [item], deleteItems: [] }).then(
        () => 'applied' as const,
        (error: unknown) => {
          if (error instanceof ConflictError) return 'conflict' as const;
          throw error;
        },
      );
    const stored = async (userToken: string, storeId: string, key: string) => {
      const record = await backend.get(userToken, storeId, key);
      return record && { version: record.version, value: str(record.value) };
    };

    it('gives every concurrent single-item put of every kind its own outcome', async () => {
      const userToken = user();
      const storeId = 'mixed';
      // Existing rows: e0..e9 at version 1; e10..e19 at version 3.
      for (let i = 0; i < 20; i++) {
        await backend.put(userToken, { storeId, transactionItems: [{ key: `e${i}`, version: -1n, value: text('old') }], deleteItems: [] });
        if (i >= 10) {
          await backend.put(userToken, { storeId, transactionItems: [{ key: `e${i}`, version: 1n, value: text('old') }], deleteItems: [] });
          await backend.put(userToken, { storeId, transactionItems: [{ key: `e${i}`, version: 2n, value: text('old') }], deleteItems: [] });
        }
      }
      const cases: Array<{ item: PutItem; expected: 'applied' | 'conflict'; after: { version: bigint; value: string } | undefined }> = [];
      const add = (key: string, version: bigint, expected: 'applied' | 'conflict', label: string, after?: { version: bigint }) => {
        const v = value(label);
        cases.push({ item: { key, version, value: v }, expected, after: after && { version: after.version, value: str(v) } });
      };
      for (let i = 0; i < 5; i++) add(`new-upsert${i}`, -1n, 'applied', 'upsert new', { version: 1n });
      for (let i = 0; i < 5; i++) add(`e${i}`, -1n, 'applied', 'upsert existing', { version: 1n });
      for (let i = 0; i < 5; i++) add(`new-create${i}`, 0n, 'applied', 'create', { version: 1n });
      for (let i = 5; i < 10; i++) add(`e${i}`, 0n, 'conflict', 'create existing');
      for (let i = 10; i < 15; i++) add(`e${i}`, 3n, 'applied', 'cas', { version: 4n });
      for (let i = 15; i < 20; i++) add(`e${i}`, 2n, 'conflict', 'cas stale');
      for (let i = 0; i < 5; i++) add(`absent${i}`, 7n, 'conflict', 'cas absent');
      // Shuffled so that every batch mixes outcomes.
      cases.sort(() => Math.random() - 0.5);
      const rowsBefore = await Promise.all(cases.map((c) => stored(userToken, storeId, c.item.key)));
      const before = structuredClone(backend.batchStats);
      const outcomes = await Promise.all(cases.map((c) => putOne(backend, userToken, storeId, c.item)));
      expect(outcomes).toEqual(cases.map((c) => c.expected));
      // Applied writes left exactly their own row; conflicting ones left the row as it was.
      const rowsAfter = await Promise.all(cases.map((c) => stored(userToken, storeId, c.item.key)));
      expect(rowsAfter).toEqual(cases.map((c, i) => (c.expected === 'applied' ? c.after : rowsBefore[i])));
      expect(await stored(userToken, storeId, 'e5')).toEqual({ version: 1n, value: 'old' });
      expect(await stored(userToken, storeId, 'e15')).toEqual({ version: 3n, value: 'old' });
      expect(await stored(userToken, storeId, 'absent0')).toBeUndefined();
      const after = backend.batchStats;
      const batched = (['unconditional', 'create', 'update'] as const).reduce(
        (sum, kind) => sum + (after?.put[kind].batchedRequests ?? 0) - (before?.put[kind].batchedRequests ?? 0),
        0,
      );
      expect(batched, 'requests served by batch statements').toBeGreaterThan(cases.length / 2);
    });

    it('applies concurrent writes of one key one at a time, in arrival order', async () => {
      const userToken = user();
      const storeId = 'same-key';
      const creates = await Promise.all([0, 1, 2, 3].map((i) => putOne(backend, userToken, storeId, { key: 'c', version: 0n, value: text(`c${i}`) })));
      expect(creates).toEqual(['applied', 'conflict', 'conflict', 'conflict']);
      expect(await stored(userToken, storeId, 'c')).toEqual({ version: 1n, value: 'c0' });

      const compareAndSets = await Promise.all([1, 1, 2, 3].map((v, i) => putOne(backend, userToken, storeId, { key: 'c', version: BigInt(v), value: text(`s${i}`) })));
      expect(compareAndSets).toEqual(['applied', 'conflict', 'applied', 'applied']);
      expect(await stored(userToken, storeId, 'c')).toEqual({ version: 4n, value: 's3' });

      const upserts = await Promise.all([0, 1, 2, 3, 4].map((i) => putOne(backend, userToken, storeId, { key: 'u', version: -1n, value: text(`u${i}`) })));
      expect(upserts).toEqual(['applied', 'applied', 'applied', 'applied', 'applied']);
      expect(await stored(userToken, storeId, 'u')).toEqual({ version: 1n, value: 'u4' });
    });

    it('keeps users and stores apart within one batch', async () => {
      const [alice, bob] = [user(), user()];
      const writes = [alice, bob].flatMap((userToken) =>
        ['s1', 's2'].map((storeId) => putOne(backend, userToken, storeId, { key: 'k', version: 0n, value: text(`${userToken}/${storeId}`) })),
      );
      expect(await Promise.all(writes)).toEqual(['applied', 'applied', 'applied', 'applied']);
      const reads = await Promise.all([alice, bob].flatMap((userToken) => ['s1', 's2', 's3'].map((storeId) => backend.get(userToken, storeId, 'k'))));
      expect(reads.map((r) => r && str(r.value))).toEqual([`${alice}/s1`, `${alice}/s2`, undefined, `${bob}/s1`, `${bob}/s2`, undefined]);

      // Compare-and-sets and upserts of the same key: only alice's s1 row is at version 2, so
      // only her compare-and-set from 2 applies, and each upsert lands in its own row.
      await backend.put(alice, { storeId: 's1', transactionItems: [{ key: 'k', version: 1n, value: text('alice at 2') }], deleteItems: [] });
      const compareAndSets = await Promise.all(
        [alice, bob].flatMap((userToken) => ['s1', 's2'].map((storeId) => putOne(backend, userToken, storeId, { key: 'k', version: 2n, value: text(`cas ${userToken}/${storeId}`) }))),
      );
      expect(compareAndSets).toEqual(['applied', 'conflict', 'conflict', 'conflict']);
      const upserts = await Promise.all(
        [alice, bob].flatMap((userToken) => ['s2', 's3'].map((storeId) => putOne(backend, userToken, storeId, { key: 'k', version: -1n, value: text(`up ${userToken}/${storeId}`) }))),
      );
      expect(upserts).toEqual(['applied', 'applied', 'applied', 'applied']);
      const after = await Promise.all([alice, bob].flatMap((userToken) => ['s1', 's2', 's3'].map((storeId) => stored(userToken, storeId, 'k'))));
      expect(after).toEqual([
        { version: 3n, value: `cas ${alice}/s1` },
        { version: 1n, value: `up ${alice}/s2` },
        { version: 1n, value: `up ${alice}/s3` },
        { version: 1n, value: `${bob}/s1` },
        { version: 1n, value: `up ${bob}/s2` },
        { version: 1n, value: `up ${bob}/s3` },
      ]);
    });

    it('serves batched gets, including repeated and missing keys and values too big to ride along', async () => {
      const userToken = user();
      const storeId = 'reads';
      const big = randomBytes(BATCH_VALUE_LIMIT + 1000);
      await backend.put(userToken, { storeId, transactionItems: [{ key: 'big', version: -1n, value: big }], deleteItems: [] });
      for (let i = 0; i < 10; i++) await backend.put(userToken, { storeId, transactionItems: [{ key: `k${i}`, version: -1n, value: text(`v${i}`) }], deleteItems: [] });
      const keys = ['k0', 'big', 'k1', 'missing', 'k1', 'k2', 'big', 'k9', 'k3', 'nothing'];
      const before = backend.batchStats?.get.batchedRequests ?? 0;
      const records = await Promise.all([...keys, ...keys].map((key) => backend.get(userToken, storeId, key)));
      expect((backend.batchStats?.get.batchedRequests ?? 0) - before).toBeGreaterThan(keys.length);
      records.forEach((record, i) => {
        const key = keys[i % keys.length];
        if (key === 'missing' || key === 'nothing') expect(record, key).toBeUndefined();
        else if (key === 'big') expect(Buffer.from(record?.value ?? []).equals(big)).toBe(true);
        else expect({ key: record?.key, version: record?.version, value: str(record?.value) }).toEqual({ key, version: 1n, value: `v${key.slice(1)}` });
      });
    });

    it('writes values too big for a batch on their own, next to batched ones', async () => {
      const userToken = user();
      const storeId = 'big-writes';
      const big = randomBytes(BATCH_VALUE_LIMIT + 1);
      const outcomes = await Promise.all([
        putOne(backend, userToken, storeId, { key: 'a', version: 0n, value: text('a') }),
        putOne(backend, userToken, storeId, { key: 'big', version: 0n, value: big }),
        putOne(backend, userToken, storeId, { key: 'b', version: 0n, value: text('b') }),
        putOne(backend, userToken, storeId, { key: 'c', version: 0n, value: text('c') }),
      ]);
      expect(outcomes).toEqual(['applied', 'applied', 'applied', 'applied']);
      expect(Buffer.from((await backend.get(userToken, storeId, 'big'))?.value ?? []).equals(big)).toBe(true);
    });

    it('fails only the request whose data breaks a batch statement; the others are retried alone', async () => {
      const userToken = user();
      const storeId = 'bad-apple';
      // The HTTP layer refuses keys over 600 characters; here one reaches the database, whose
      // varchar(600) column rejects the whole batch statement.
      const tooLong = 'x'.repeat(601);
      const before = structuredClone(backend.batchStats);
      const outcomes = await Promise.allSettled([
        putOne(backend, userToken, storeId, { key: 'first', version: -1n, value: text('1') }),
        putOne(backend, userToken, storeId, { key: 'a', version: -1n, value: text('a') }),
        putOne(backend, userToken, storeId, { key: tooLong, version: -1n, value: text('bad') }),
        putOne(backend, userToken, storeId, { key: 'b', version: -1n, value: text('b') }),
        putOne(backend, userToken, storeId, { key: 'c', version: 0n, value: text('c') }),
        putOne(backend, userToken, storeId, { key: tooLong, version: 0n, value: text('bad') }),
        putOne(backend, userToken, storeId, { key: 'd', version: 0n, value: text('d') }),
      ]);
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
      expect((outcomes[2] as PromiseRejectedResult).reason).toMatchObject({ code: '22001' });
      for (const key of ['first', 'a', 'b', 'c', 'd']) expect(await stored(userToken, storeId, key), key).toBeDefined();
      expect((backend.batchStats?.put.unconditional.failedBatches ?? 0) - (before?.put.unconditional.failedBatches ?? 0)).toBe(1);
      expect((backend.batchStats?.put.create.failedBatches ?? 0) - (before?.put.create.failedBatches ?? 0)).toBe(1);
    });

    it('retries the gets of a failed read batch one by one', async () => {
      const userToken = user();
      const storeId = 'read-failure';
      for (const key of ['a', 'b', 'c']) await backend.put(userToken, { storeId, transactionItems: [{ key, version: -1n, value: text(key) }], deleteItems: [] });
      let failures = 0;
      const flaky = new SqlBackend(
        name,
        interceptingDriver(driver, (query) => {
          if (query.name !== 'vss_get_batch') return undefined;
          failures++;
          return Promise.reject(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014', severity: 'ERROR' }));
        }),
      );
      const records = await Promise.all(['a', 'b', 'missing', 'c'].map((key) => flaky.get(userToken, storeId, key)));
      expect(records.map((r) => r && str(r.value))).toEqual(['a', 'b', undefined, 'c']);
      expect(failures).toBe(1);
      expect(flaky.batchStats?.get).toMatchObject({ failedBatches: 1, single: 4 });
    });

    it('sends a lone get or put at once even right after a large batch (no gathering by default)', async () => {
      const userToken = user();
      const storeId = 'no-gathering';
      const sent: string[] = [];
      const watched = new SqlBackend(
        name,
        interceptingDriver(driver, (query) => {
          sent.push(query.name ?? query.text);
          return undefined;
        }),
      );
      // Six at once of each kind: the first runs alone, the other five queue and leave as one batch.
      const keys = Array.from({ length: 6 }, (_, i) => `k${i}`);
      await Promise.all(keys.map((key) => putOne(watched, userToken, storeId, { key, version: -1n, value: value(key) })));
      await Promise.all(keys.map((key) => watched.get(userToken, storeId, key)));
      expect(watched.batchStats?.put.unconditional).toMatchObject({ single: 1, batches: 1, batchedRequests: 5 });
      expect(watched.batchStats?.get).toMatchObject({ single: 1, batches: 1, batchedRequests: 5 });
      const sentBefore = sent.length;
      // Both statements are on their way before this turn of the event loop ends: nothing waits for company.
      const get = watched.get(userToken, storeId, 'k0');
      const put = putOne(watched, userToken, storeId, { key: 'k1', version: -1n, value: value('k1') });
      expect(sent.slice(sentBefore)).toEqual(['vss_get', 'vss_put_unconditional']);
      expect((await get)?.version).toBe(1n);
      expect(await put).toBe('applied');
    });

    it('fails every write of a batch whose outcome is unknown instead of guessing', async () => {
      const userToken = user();
      const storeId = 'unknown-outcome';
      const lost = new Error('Connection terminated unexpectedly');
      const severed = new SqlBackend(
        name,
        // The statement runs (and commits), then the connection "breaks" before the answer arrives.
        interceptingDriver(driver, (query, run) => (query.name === 'vss_put_create_batch' ? run().then(() => Promise.reject(lost)) : undefined)),
      );
      const outcomes = await Promise.allSettled(['first', 'a', 'b', 'c'].map((key) => putOne(severed, userToken, storeId, { key, version: 0n, value: text(key) })));
      expect(outcomes[0].status).toBe('fulfilled');
      // Retrying these creates alone would have answered "conflict" for writes that did apply.
      for (const outcome of outcomes.slice(1)) expect(outcome).toEqual({ status: 'rejected', reason: lost });
      for (const key of ['a', 'b', 'c']) expect(await stored(userToken, storeId, key)).toEqual({ version: 1n, value: key });
    });

    it('treats a server error that ends the session or the server as an unknown outcome, not a rollback', async () => {
      // PostgreSQL answered, but with an error that can follow the commit record: retrying the
      // creates alone would answer "conflict" for writes that did apply.
      const unknownOutcomes = [
        { code: '58030', severity: 'PANIC', message: 'could not fsync file "pg_wal/000000010000000000000001": Input/output error' },
        { code: '40001', severity: 'FATAL', message: 'terminating connection due to conflict with recovery' },
        { code: 'XX000', severity: 'ERROR', message: 'cannot abort transaction 1234, it was already committed' },
        { code: '57P01', severity: 'FATAL', message: 'terminating connection due to administrator command' },
      ];
      for (const { code, severity, message } of unknownOutcomes) {
        const userToken = user();
        const storeId = `unknown-${code}`;
        const lost = Object.assign(new Error(message), { code, severity });
        expect(statementRolledBack(lost), code).toBe(false);
        const failing = new SqlBackend(
          name,
          interceptingDriver(driver, (query, run) => (query.name === 'vss_put_create_batch' ? run().then(() => Promise.reject(lost)) : undefined)),
        );
        const outcomes = await Promise.allSettled(['first', 'a', 'b', 'c'].map((key) => putOne(failing, userToken, storeId, { key, version: 0n, value: text(key) })));
        expect(outcomes[0].status).toBe('fulfilled');
        for (const outcome of outcomes.slice(1)) expect(outcome, code).toEqual({ status: 'rejected', reason: lost });
        for (const key of ['a', 'b', 'c']) expect(await stored(userToken, storeId, key)).toEqual({ version: 1n, value: key });
      }
      // Ordinary errors (and a cancelled statement) did roll back the statement.
      for (const code of ['23505', '40P01', '57014', '53100']) expect(statementRolledBack(Object.assign(new Error(code), { code, severity: 'ERROR' })), code).toBe(true);
    });

    // Whether concurrent HTTP requests end up sharing a statement depends on scheduling (PGlite
    // runs each statement to completion before the next request is even parsed; on PostgreSQL
    // it varies with the machine's load): this test pins each request's outcome; the tests above
    // drive the backend directly and pin the batching.
    it('answers concurrent HTTP requests of every kind, each with its own outcome', async () => {
      let server: StartedVssServer | undefined;
      try {
        server = await startVssServer({ backend });
        const identity = newIdentity();
        const headers = () => ({ authorization: identity.header() });
        const put = (key: string, version: bigint, v: string) =>
          send(`${server?.url}/putObjects`, vss.PutObjectRequest.encode({ storeId: 'http', transactionItems: [keyValue(key, version, text(v))] }).finish(), { headers: headers() });
        const get = (key: string) => send(`${server?.url}/getObject`, vss.GetObjectRequest.encode({ storeId: 'http', key }).finish(), { headers: headers() });
        for (let i = 0; i < 8; i++) expect((await put(`k${i}`, 0n, 'start')).status).toBe(200);
        const responses = await Promise.all([
          ...Array.from({ length: 8 }, (_, i) => put(`k${i}`, i % 2 === 0 ? 1n : 5n, `next${i}`)),
          ...Array.from({ length: 8 }, (_, i) => put(`n${i}`, i % 2 === 0 ? 0n : -1n, `new${i}`)),
          ...Array.from({ length: 8 }, (_, i) => get(i % 2 === 0 ? `k${i}` : `none${i}`)),
        ]);
        expect(responses.map((r) => r.status)).toEqual([
          ...Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 200 : 409)),
          ...Array.from({ length: 8 }, () => 200),
          ...Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 200 : 404)),
        ]);
        for (let i = 0; i < 8; i += 2) {
          const record = vss.GetObjectResponse.decode((await get(`k${i}`)).body).value;
          expect({ version: Number(record?.version), value: str(record?.value) }).toEqual({ version: 2, value: `next${i}` });
        }
      } finally {
        await server?.close();
      }
    });

    // PostgreSQL only: PGlite runs one statement at a time, so nothing there can wait on a lock.
    if (name === 'postgres') it('never deadlocks batched writes against multi-item puts over the same keys', async () => {
      const userToken = user();
      const storeId = 'lock-order';
      const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
      const failedBefore = backend.batchStats?.put.unconditional.failedBatches;
      for (let round = 0; round < 15; round++) {
        const multi = [0, 1, 2].map((offset) =>
          backend.put(userToken, {
            storeId,
            // Listed in reverse: the backend must still lock in key order.
            transactionItems: keys.slice(offset, offset + 4).reverse().map((key) => ({ key, version: -1n, value: text(`m${round}`) })),
            deleteItems: [],
          }),
        );
        const singles = [...keys].reverse().flatMap((key) => [
          putOne(backend, userToken, storeId, { key, version: -1n, value: text(`s${round}`) }),
          putOne(backend, userToken, `${storeId}-2`, { key, version: -1n, value: text(`s${round}`) }),
        ]);
        await Promise.all([...multi, ...singles]);
      }
      // A deadlock would have failed a multi-item put, or a batch (then retried alone).
      expect(backend.batchStats?.put.unconditional.failedBatches).toBe(failedBefore);
    });

    // PostgreSQL only: it needs a second session holding a row lock.
    if (name === 'postgres') it('does not let a later write of a key overtake a stalled batch that still has to write it', async () => {
      const userToken = user();
      const storeId = 'stall-order';
      for (const key of ['a', 'b']) await putOne(backend, userToken, storeId, { key, version: -1n, value: text('old') });
      const holder = await (backend as PostgresBackend).pool.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = 'a' FOR UPDATE`, [userToken, storeId]);
        const stalledBefore = backend.batchStats?.put.unconditional.stalled ?? 0;
        // A lone put takes the slot; the two behind it leave as one batch, which waits for the lock on a
        // (rows are locked in key order) before it reaches b.
        const lone = putOne(backend, userToken, storeId, { key: 'lone', version: -1n, value: text('lone') });
        const batch = ['b', 'a'].map((key) => putOne(backend, userToken, storeId, { key, version: -1n, value: text('first') }));
        await lone;
        await vi.waitFor(() => expect(backend.batchStats?.put.unconditional.stalled).toBeGreaterThan(stalledBefore), { timeout: 10_000, interval: 5 });
        // Sent after the batch, so it must end up as b's value.
        const later = putOne(backend, userToken, storeId, { key: 'b', version: -1n, value: text('second') });
        // Give the later write every chance to overtake, then let the batch through.
        await Promise.race([later, new Promise((resolve) => setTimeout(resolve, 200))]);
        await holder.query('ROLLBACK');
        expect(await Promise.all([...batch, later])).toEqual(['applied', 'applied', 'applied']);
      } finally {
        holder.release();
      }
      expect(await stored(userToken, storeId, 'b')).toEqual({ version: 1n, value: 'second' });
    });
  });
}
