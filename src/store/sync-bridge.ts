/**
 * Blocking VSS requests for synchronous callers (LDK code that needs a sync KVStore).
 * JavaScript cannot block on a network call, so a worker thread performs the request while
 * this thread sleeps in `Atomics.wait` on a shared counter; the answer's bytes arrive with
 * `receiveMessageOnPort`. A deadline bounds every wait: a slow worker becomes a
 * `StoreTimeoutError`, never a hang. A worker that dies says so through the shared memory as
 * it exits (its 'exit' event cannot reach a thread blocked in `Atomics.wait`), so the wait ends
 * at once with a `StoreIOError` instead of running out the deadline and blaming the server.
 *
 * Node-only, but loaded without static `node:` imports (via `process.getBuiltinModule`) so
 * that bundling the package for a browser does not break on this module.
 */
import type { VssClientConfig } from '../client/index.js';
import type { VssOperation } from '../protocol/index.js';
import { StoreClosedError, StoreIOError, StoreOpenError, StoreTimeoutError } from './errors.js';
import { fromWireError, type WireError } from './wire.js';

type WorkerThreads = typeof import('node:worker_threads');

/**
 * Slots of the shared signal: the message counter the parent waits on, and the worker's
 * "I exited" flag with its exit code (set by the worker's `process.on('exit')`).
 */
const SIGNAL_COUNTER = 0;
const SIGNAL_EXITED = 1;
const SIGNAL_EXIT_CODE = 2;
const SIGNAL_SLOTS = 3;

/**
 * The worker's exit report, run by the bootstrap before the worker module loads, so a module
 * that fails to load is reported at once too (not after the startup timeout).
 */
const EXIT_REPORTER = `(signal) => {
  const slots = new Int32Array(signal);
  process.on('exit', (code) => {
    Atomics.store(slots, ${SIGNAL_EXIT_CODE}, code | 0);
    Atomics.store(slots, ${SIGNAL_EXITED}, 1);
    Atomics.add(slots, ${SIGNAL_COUNTER}, 1);
    Atomics.notify(slots, ${SIGNAL_COUNTER});
  });
}`;

type Outbound = { type: 'ready' } | { type: 'fatal'; message: string } | { type: 'result'; id: number; ok: true; body: Uint8Array } | { type: 'result'; id: number; ok: false; error: WireError };

function workerThreads(): WorkerThreads {
  const builtin = (globalThis.process as { getBuiltinModule?: (id: string) => unknown } | undefined)?.getBuiltinModule?.('node:worker_threads');
  if (!builtin) throw new StoreOpenError('the synchronous store API needs Node.js worker_threads');
  return builtin as WorkerThreads;
}

/**
 * Starts the worker through a tiny bootstrap that installs the exit report, then loads the
 * worker module: compiled JavaScript (dist/) directly, or, when running from the TypeScript
 * sources (vitest, tsx), through tsx's `tsImport` (a worker's `execArgv: ['--import', 'tsx']`
 * does not apply to the worker's entry module in Node 20).
 */
function spawnWorker(threads: WorkerThreads, workerData: unknown, transferList: Transferable[]): InstanceType<WorkerThreads['Worker']> {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = JSON.stringify(new URL(fromSources ? './sync-worker.ts' : './sync-worker.js', import.meta.url).href);
  let load = `import(${entry})`;
  if (fromSources) {
    let tsxApi: string;
    try {
      tsxApi = import.meta.resolve('tsx/esm/api');
    } catch (cause) {
      throw new StoreOpenError('running the sync bridge from TypeScript sources needs the tsx package (use the compiled dist/ otherwise)', { cause });
    }
    load = `import(${JSON.stringify(tsxApi)}).then(({ tsImport }) => tsImport(${entry}, ${entry}))`;
  }
  const bootstrap = `(${EXIT_REPORTER})(require('node:worker_threads').workerData.signal); ${load};`;
  return new threads.Worker(bootstrap, { eval: true, workerData, transferList: transferList as never });
}

export class SyncBridge {
  readonly #threads: WorkerThreads;
  readonly #worker: InstanceType<WorkerThreads['Worker']>;
  readonly #port: import('node:worker_threads').MessagePort;
  readonly #counter: Int32Array;
  #nextId = 0;
  #failure: Error | undefined;
  #closed = false;

  /** Starts the worker and blocks until it is ready (or `startupTimeoutMs` passes). */
  constructor(config: VssClientConfig, startupTimeoutMs: number) {
    this.#threads = workerThreads();
    const signal = new SharedArrayBuffer(SIGNAL_SLOTS * Int32Array.BYTES_PER_ELEMENT);
    this.#counter = new Int32Array(signal);
    const { port1, port2 } = new this.#threads.MessageChannel();
    this.#port = port1;
    this.#worker = spawnWorker(this.#threads, { port: port2, signal, config }, [port2]);
    // The worker must never keep the process alive, and its crash must not crash us. These
    // events only run when the event loop turns; a blocked wait learns of a death from the
    // shared exit flag instead (see #await).
    this.#worker.unref();
    this.#worker.on('error', (error) => {
      this.#failure ??= new StoreIOError('the sync bridge worker crashed', { cause: error });
    });
    this.#worker.on('exit', (code) => {
      if (!this.#closed) this.#failure ??= new StoreIOError(`the sync bridge worker exited (code ${code})`);
    });
    try {
      this.#await((message) => (message.type === 'ready' ? true : undefined), Date.now() + startupTimeoutMs, 'starting the sync bridge worker');
    } catch (error) {
      this.close();
      throw error instanceof StoreTimeoutError ? error : new StoreOpenError('the sync bridge worker failed to start', { cause: error });
    }
  }

  /** Performs one VSS request, blocking until its response bytes arrive or `deadlineAt`. */
  call(operation: VssOperation, body: Uint8Array, deadlineAt: number): Uint8Array {
    if (this.#closed) throw new StoreClosedError('this blocking store view is closed');
    if (this.#failure) throw this.#failure;
    this.#checkAlive();
    const id = ++this.#nextId;
    this.#port.postMessage({ type: 'call', id, operation, body });
    try {
      return this.#await((message) => {
        if (message.type !== 'result' || message.id !== id) return undefined; // a late answer to an abandoned call
        if (message.ok) return message.body;
        throw fromWireError(message.error);
      }, deadlineAt, `${operation}`);
    } catch (error) {
      if (error instanceof StoreTimeoutError) this.#port.postMessage({ type: 'cancel', id });
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#port.close();
    void this.#worker.terminate();
  }

  #await<T>(accept: (message: Outbound) => T | undefined, deadlineAt: number, what: string): T {
    let seen = Atomics.load(this.#counter, SIGNAL_COUNTER);
    for (;;) {
      // Read the exit flag BEFORE draining: everything the worker posted before it exited is
      // then already in the port, so a result sent just before dying is still accepted.
      const exited = Atomics.load(this.#counter, SIGNAL_EXITED) !== 0;
      for (let next = this.#threads.receiveMessageOnPort(this.#port); next !== undefined; next = this.#threads.receiveMessageOnPort(this.#port)) {
        const message = next.message as Outbound;
        if (message.type === 'fatal') {
          this.#failure = new StoreIOError(message.message);
          throw this.#failure;
        }
        const accepted = accept(message);
        if (accepted !== undefined) return accepted;
      }
      if (exited) this.#checkAlive(what);
      const remaining = deadlineAt - Date.now();
      if (remaining <= 0) throw new StoreTimeoutError(`${what}: no answer from the VSS server within the deadline`);
      Atomics.wait(this.#counter, SIGNAL_COUNTER, seen, remaining);
      seen = Atomics.load(this.#counter, SIGNAL_COUNTER);
    }
  }

  /** Throws (and remembers) a StoreIOError if the worker has exited. */
  #checkAlive(what?: string): void {
    if (Atomics.load(this.#counter, SIGNAL_EXITED) === 0) return;
    const code = Atomics.load(this.#counter, SIGNAL_EXIT_CODE);
    this.#failure ??= new StoreIOError(`${what ? `${what}: ` : ''}the sync bridge worker exited (code ${code}); this blocking store can no longer reach the server`);
    throw this.#failure;
  }
}
