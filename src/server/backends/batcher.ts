/**
 * Natural batching of independent single-row operations ("group commit"): while `maxInFlight`
 * batches of one kind are running, further requests of that kind wait, and when a batch
 * finishes everything that queued meanwhile leaves together as the next batch. A request that
 * finds a free slot is executed at once and alone, so batching never delays a lone request;
 * under load, one statement (and one commit) serves many requests.
 *
 * Gathering (`gather`): many clients waiting on one batch send their next requests a moment
 * after it answers, one by one, and the first of them would find the slot free and run alone
 * while the rest queue behind it, so every other statement carries a single request. After a
 * batch of at least `minBatch` requests, the next batch therefore waits until `fraction` of
 * that many have queued, or until `maxWaitMs` after that batch finished: a request arriving
 * later than that (the clients were not waiting to send) goes at once. The same idea as
 * PostgreSQL's commit_delay, which also waits only when enough other transactions are active;
 * a lone client (batches of one) never waits. The SQL backends leave it off by default: where a
 * statement takes less than the shortest timer (1 ms), the wait is latency (docs/server.md).
 *
 * Every request's outcome is its own, as if it had run alone:
 * - writes in one batch have distinct keys (a second write of a key waits for a later batch),
 *   so they touch distinct rows and cannot influence each other;
 * - if a batch fails as a whole with an error that proves nothing was applied (PostgreSQL
 *   rolled the statement back), its requests are retried one by one, so an error caused by one
 *   request (or a transient one) never fails the others by association. When the outcome is
 *   unknown (the connection broke), retrying could report a conflict for a write that in fact
 *   succeeded, so every request of the batch gets the error, as it would have alone.
 *
 * A batch that runs longer than `stallMs` (waiting for a row lock held by a long transaction,
 * say) gives up its slot, so it cannot hold up requests that have nothing to do with it; the
 * connection pool still bounds how many statements run at once. Its keys stay taken until it
 * has settled (retries included): a later write of one of them waits, because it could otherwise
 * apply first and then be overwritten by the older one (a batch blocked on another row's lock,
 * or retried after failing, writes that key late).
 */

export interface BatcherOptions {
  /** Batches running at once; requests beyond that queue up and form the next batch. */
  maxInFlight: number;
  /** Most requests in one batch. */
  maxBatchSize: number;
  /** A batch running longer than this (ms) no longer counts against maxInFlight. */
  stallMs: number;
  /** Gathering after large batches (see above); false: a free slot always takes what is queued at once. */
  gather: false | GatherOptions;
}

export interface GatherOptions {
  /** Only a finished batch of at least this many requests makes the next one wait. */
  minBatch: number;
  /** The next batch waits for this fraction of the finished batch's size (rounded up). */
  fraction: number;
  /** Longest wait (ms), counted from the end of the batch that started it, before what has queued leaves anyway. */
  maxWaitMs: number;
}

export interface BatchRunner<In, Out> {
  /** Runs several inputs (at least two) together; one result per input, in order. */
  runBatch(inputs: readonly In[]): Promise<Out[]>;
  /** Runs one input on its own: lone requests, and each request of a batch that failed. */
  runOne(input: In): Promise<Out>;
  /** Identity of the row an input writes: inputs with the same key never share a batch. Omit for reads. */
  keyOf?(input: In): string;
  /** Whether a failed batch may be retried request by request (true when it certainly did not apply). */
  retryable(error: unknown): boolean;
  /** Told about every failed batch (for logs). */
  onBatchError?(error: unknown, size: number): void;
}

interface Pending<In, Out> {
  readonly input: In;
  readonly key: string | undefined;
  resolve(value: Out): void;
  reject(error: unknown): void;
}

/** Counters for tests and diagnostics. */
export interface BatcherStats {
  /** Requests run on their own (lone, or retried after a failed batch). */
  single: number;
  /** Batches of two or more requests that were run as one statement. */
  batches: number;
  /** Requests served by those batches (including ones later retried alone). */
  batchedRequests: number;
  /** Batches that failed as a whole. */
  failedBatches: number;
  /** Batches (or lone requests) that ran past stallMs and gave up their slot. */
  stalled: number;
}

export class Batcher<In, Out> {
  private readonly queue: Array<Pending<In, Out>> = [];
  private inFlight = 0;
  /** Keys written by batches that have not settled yet, stalled ones included. */
  private readonly runningKeys = new Set<string>();
  /** Requests the next batch waits for (gathering); 0 = none. */
  private awaited = 0;
  /** When the wait for them ends (performance.now() ms): maxWaitMs after the batch that set it finished. */
  private gatherUntil = 0;
  private gatherTimer?: ReturnType<typeof setTimeout>;
  readonly stats: BatcherStats = { single: 0, batches: 0, batchedRequests: 0, failedBatches: 0, stalled: 0 };

  constructor(
    private readonly runner: BatchRunner<In, Out>,
    private readonly options: BatcherOptions,
  ) {
    if (!(options.maxInFlight >= 1) || !(options.maxBatchSize >= 1) || !(options.stallMs > 0)) {
      throw new RangeError('maxInFlight and maxBatchSize must be at least 1, stallMs above 0');
    }
    const gather = options.gather;
    if (gather !== false && !(gather.minBatch >= 2 && gather.fraction > 0 && gather.fraction <= 1 && gather.maxWaitMs > 0)) {
      throw new RangeError('gather needs minBatch of at least 2, a fraction in (0, 1] and maxWaitMs above 0');
    }
  }

  run(input: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ input, key: this.runner.keyOf?.(input), resolve, reject });
      this.pump();
    });
  }

  /** Starts batches while slots are free; each takes what is queued (oldest first). */
  private pump(): void {
    while (this.inFlight < this.options.maxInFlight && this.queue.length > 0) {
      // The clock is read only while a gathering wait is pending, not on every dispatch.
      const waitMs = this.queue.length < this.awaited ? this.gatherUntil - performance.now() : 0;
      if (waitMs > 0) {
        this.gatherTimer ??= setTimeout(() => {
          this.gatherTimer = undefined;
          this.awaited = 0;
          this.pump();
        }, waitMs);
        return;
      }
      if (this.gatherTimer !== undefined) {
        clearTimeout(this.gatherTimer);
        this.gatherTimer = undefined;
      }
      this.awaited = 0;
      const batch = this.takeBatch();
      // Everything that could go waits for a key still being written; its batch's end pumps again.
      if (batch.length === 0) return;
      for (const pending of batch) if (pending.key !== undefined) this.runningKeys.add(pending.key);
      this.inFlight++;
      let holdsSlot = true;
      const releaseSlot = () => {
        if (!holdsSlot) return;
        holdsSlot = false;
        this.inFlight--;
        this.pump();
      };
      const stall = setTimeout(() => {
        this.stats.stalled++;
        releaseSlot();
      }, this.options.stallMs);
      stall.unref();
      void this.execute(batch).finally(() => {
        clearTimeout(stall);
        for (const pending of batch) if (pending.key !== undefined) this.runningKeys.delete(pending.key);
        const gather = this.options.gather;
        if (gather !== false && batch.length >= gather.minBatch) {
          this.awaited = Math.min(this.options.maxBatchSize, Math.ceil(batch.length * gather.fraction));
          this.gatherUntil = performance.now() + gather.maxWaitMs;
        }
        // A stalled batch gave up its slot already, but requests may be waiting for its keys.
        if (holdsSlot) releaseSlot();
        else this.pump();
      });
    }
  }

  private takeBatch(): Array<Pending<In, Out>> {
    const size = Math.min(this.queue.length, this.options.maxBatchSize);
    const free = (pending: Pending<In, Out>) => pending.key === undefined || !this.runningKeys.has(pending.key);
    if ((size === 1 && free(this.queue[0])) || this.queue.every((pending) => pending.key === undefined)) return this.queue.splice(0, size);
    const keys = new Set<string>();
    const batch: Array<Pending<In, Out>> = [];
    const waiting: Array<Pending<In, Out>> = [];
    // Looking only this far ahead keeps each take cheap when many requests queue for one key
    // (the skipped ones stay in line for later batches).
    const scanLimit = Math.min(this.queue.length, this.options.maxBatchSize * 4);
    let index = 0;
    for (; index < scanLimit && batch.length < this.options.maxBatchSize; index++) {
      const pending = this.queue[index];
      // A repeated key waits (keeping its place in line), so each key's writes run in order.
      if (pending.key !== undefined && (keys.has(pending.key) || this.runningKeys.has(pending.key))) waiting.push(pending);
      else {
        if (pending.key !== undefined) keys.add(pending.key);
        batch.push(pending);
      }
    }
    this.queue.splice(0, index, ...waiting);
    return batch;
  }

  private async execute(batch: Array<Pending<In, Out>>): Promise<void> {
    if (batch.length === 1) {
      this.stats.single++;
      await settle(batch[0], () => this.runner.runOne(batch[0].input));
      return;
    }
    this.stats.batches++;
    this.stats.batchedRequests += batch.length;
    let results: Out[];
    try {
      results = await this.runner.runBatch(batch.map((pending) => pending.input));
      if (results.length !== batch.length) throw new Error(`batch returned ${results.length} results for ${batch.length} inputs`);
    } catch (error) {
      this.stats.failedBatches++;
      this.runner.onBatchError?.(error, batch.length);
      if (!this.runner.retryable(error)) {
        for (const pending of batch) pending.reject(error);
        return;
      }
      // Nothing of the failed statement was applied; each request gets its own attempt and outcome.
      this.stats.single += batch.length;
      await Promise.all(batch.map((pending) => settle(pending, () => this.runner.runOne(pending.input))));
      return;
    }
    batch.forEach((pending, i) => pending.resolve(results[i]));
  }
}

async function settle<In, Out>(pending: Pending<In, Out>, work: () => Promise<Out>): Promise<void> {
  try {
    pending.resolve(await work());
  } catch (error) {
    pending.reject(error);
  }
}
