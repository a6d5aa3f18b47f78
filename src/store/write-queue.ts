/**
 * Per-key ordering of writes and removes: operations on one key run one at a time in call
 * order, and a newer operation that is still waiting supersedes an older waiting one, which
 * is then never sent. Every caller's promise settles when its operation or a newer one that
 * superseded it has settled, so "resolved" always means "this data or newer is durable".
 *
 * A batch (one atomic request over several keys) takes its place in the line of every key
 * it touches and starts only when it is first in all of them. Operations are added to all
 * their lines at once, in call order, so the lines never disagree about which of two
 * entries came first and two batches can never wait for each other. A batch supersedes a
 * single-key operation still waiting on one of its keys (that caller settles with the
 * batch); nothing supersedes a batch, since its other keys must still be written.
 */

interface Waiter {
  resolve(): void;
  reject(error: unknown): void;
}

interface Entry {
  keys: readonly string[];
  run: () => Promise<void>;
  waiters: Waiter[];
  batch: boolean;
  started: boolean;
  /** Removed from its line without running (superseded by a batch). */
  dropped: boolean;
}

export class KeyedWriteQueue {
  /** Per key, the entries in call order; the first one may be running. */
  readonly #lines = new Map<string, Entry[]>();
  #idleWaiters: Array<() => void> = [];

  /** Queues `run` for `key`; starts it on a microtask if the key is idle. */
  enqueue(key: string, run: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      const last = this.#lines.get(key)?.at(-1);
      if (last && !last.started && !last.batch) {
        last.run = run;
        last.waiters.push(waiter);
        return;
      }
      this.#add({ keys: [key], run, waiters: [waiter], batch: false, started: false, dropped: false });
    });
  }

  /**
   * Queues one operation over several distinct keys. It runs once every earlier operation
   * on any of them has settled; later operations on them wait for it.
   */
  enqueueBatch(keys: readonly string[], run: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry: Entry = { keys: [...keys], run, waiters: [{ resolve, reject }], batch: true, started: false, dropped: false };
      for (const key of entry.keys) {
        const line = this.#lines.get(key);
        const last = line?.at(-1);
        if (line && last && !last.started && !last.batch) {
          // The batch writes this key later anyway: the waiting operation is never sent.
          line.pop();
          last.dropped = true;
          entry.waiters.push(...last.waiters);
          if (line.length === 0) this.#lines.delete(key);
        }
      }
      this.#add(entry);
    });
  }

  /** Whether an operation of `key` is running (sent, or about to be sent). */
  isRunning(key: string): boolean {
    return this.#lines.get(key)?.[0]?.started ?? false;
  }

  /** Whether a batch touching `key` is queued behind or in front of other operations. */
  hasBatch(key: string): boolean {
    return this.#lines.get(key)?.some((e) => e.batch) ?? false;
  }

  /** Whether nothing is queued or running for `key`. */
  isIdle(key: string): boolean {
    return !this.#lines.has(key);
  }

  /**
   * Takes the waiting (not yet started) single-key operation of `key` away, for a
   * synchronous operation that supersedes it. Returns its waiters so the caller settles
   * them with its own outcome. (Callers check `hasBatch` first: a batch cannot be taken.)
   */
  takeWaiting(key: string): Waiter[] {
    const line = this.#lines.get(key);
    const last = line?.at(-1);
    if (!line || !last || last.started || last.batch) return [];
    line.pop();
    last.dropped = true;
    if (line.length === 0) this.#lines.delete(key);
    this.#notifyIfIdle();
    return last.waiters;
  }

  /** Resolves once no key has anything queued or running. */
  whenIdle(): Promise<void> {
    if (this.#lines.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #add(entry: Entry): void {
    for (const key of entry.keys) {
      const line = this.#lines.get(key);
      if (line) line.push(entry);
      else this.#lines.set(key, [entry]);
    }
    // Starting on a microtask (not synchronously) lets a write made right after this one,
    // in the same synchronous stretch, supersede it before anything is sent.
    if (this.#isFirstEverywhere(entry)) queueMicrotask(() => this.#tryStart(entry));
  }

  #isFirstEverywhere(entry: Entry): boolean {
    return entry.keys.every((key) => this.#lines.get(key)?.[0] === entry);
  }

  #tryStart(entry: Entry): void {
    if (entry.started || entry.dropped || !this.#isFirstEverywhere(entry)) return;
    entry.started = true;
    const settle = (error: unknown, failed: boolean) => {
      for (const w of entry.waiters) failed ? w.reject(error) : w.resolve();
      const next: Entry[] = [];
      for (const key of entry.keys) {
        const line = this.#lines.get(key)!;
        line.shift();
        if (line.length === 0) this.#lines.delete(key);
        else next.push(line[0]);
      }
      for (const e of next) this.#tryStart(e);
      this.#notifyIfIdle();
    };
    let started: Promise<void>;
    try {
      started = entry.run();
    } catch (error) {
      started = Promise.reject(error);
    }
    started.then(
      () => settle(undefined, false),
      (error: unknown) => settle(error, true),
    );
  }

  #notifyIfIdle(): void {
    if (this.#lines.size !== 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}
