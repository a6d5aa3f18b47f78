/**
 * Per-key ordering of writes and removes: operations on one key run one at a time in call
 * order, and a newer operation that is still waiting supersedes an older waiting one, which
 * is then never sent. Every caller's promise settles when its operation or a newer one that
 * superseded it has settled, so "resolved" always means "this data or newer is durable".
 */

interface Waiter {
  resolve(): void;
  reject(error: unknown): void;
}

interface QueuedOperation {
  run: () => Promise<void>;
  waiters: Waiter[];
}

interface KeyState {
  /** True while an operation of this key has been started and not yet settled. */
  running: boolean;
  /** The newest operation waiting for its turn (older waiting ones were folded into it). */
  next: QueuedOperation | undefined;
}

export class KeyedWriteQueue {
  readonly #keys = new Map<string, KeyState>();
  #idleWaiters: Array<() => void> = [];

  /** Queues `run` for `key`; starts it on a microtask if the key is idle. */
  enqueue(key: string, run: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      let state = this.#keys.get(key);
      if (!state) {
        state = { running: false, next: undefined };
        this.#keys.set(key, state);
      }
      if (state.next) {
        state.next.run = run;
        state.next.waiters.push(waiter);
        return;
      }
      state.next = { run, waiters: [waiter] };
      // Starting on a microtask (not synchronously) lets a write made right after this one,
      // in the same synchronous stretch, supersede it before anything is sent.
      if (!state.running) queueMicrotask(() => this.#startNext(key));
    });
  }

  /** Whether an operation of `key` is running (sent, or about to be sent). */
  isRunning(key: string): boolean {
    return this.#keys.get(key)?.running ?? false;
  }

  /** Whether nothing is queued or running for `key`. */
  isIdle(key: string): boolean {
    return !this.#keys.has(key);
  }

  /**
   * Takes the waiting (not yet started) operation of `key` away, for a synchronous operation
   * that supersedes it. Returns its waiters so the caller settles them with its own outcome.
   */
  takeWaiting(key: string): Waiter[] {
    const state = this.#keys.get(key);
    if (!state?.next) return [];
    const { waiters } = state.next;
    state.next = undefined;
    if (!state.running) this.#keys.delete(key);
    this.#notifyIfIdle();
    return waiters;
  }

  /** Resolves once no key has anything queued or running. */
  whenIdle(): Promise<void> {
    if (this.#keys.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #startNext(key: string): void {
    const state = this.#keys.get(key);
    if (!state || state.running) return;
    const operation = state.next;
    if (!operation) {
      this.#keys.delete(key);
      this.#notifyIfIdle();
      return;
    }
    state.next = undefined;
    state.running = true;
    const settle = (error: unknown, failed: boolean) => {
      for (const w of operation.waiters) failed ? w.reject(error) : w.resolve();
      state.running = false;
      this.#startNext(key);
    };
    let started: Promise<void>;
    try {
      started = operation.run();
    } catch (error) {
      started = Promise.reject(error);
    }
    started.then(
      () => settle(undefined, false),
      (error: unknown) => settle(error, true),
    );
  }

  #notifyIfIdle(): void {
    if (this.#keys.size !== 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}
