/**
 * Blocking VSS requests for synchronous callers (LDK code that needs a sync KVStore).
 * JavaScript cannot block on a network call, so a worker thread performs the request while
 * this thread sleeps in `Atomics.wait` on a shared counter; the answer's bytes arrive with
 * `receiveMessageOnPort`. A deadline bounds every wait: a slow worker becomes a
 * `StoreTimeoutError`, never a hang. Deadlines are on the monotonic clock (`performance.now()`):
 * a wall clock stepped by NTP or by hand must neither stretch a wait nor cut it short.
 *
 * A worker that dies must end the wait at once with a `StoreIOError` saying why, instead of
 * running out the deadline and blaming the server. Its 'exit' event cannot reach a thread
 * blocked in `Atomics.wait`, and the worker cannot always report its own death (one that runs
 * out of memory is terminated without running its 'exit' handlers). So a tiny supervisor thread
 * starts the worker and reports the worker's exit, with its error, through the shared memory:
 * the supervisor's event loop is never blocked.
 *
 * Node-only, but loaded without static `node:` imports (via `process.getBuiltinModule`) so
 * that bundling the package for a browser does not break on this module.
 */
import type { VssClientConfig } from '../client/index.js';
import type { VssOperation } from '../protocol/index.js';
import { StoreClosedError, StoreIOError, StoreOpenError, StoreTimeoutError } from './errors.js';
import { fromWireError, type WireError } from './wire.js';

type WorkerThreads = typeof import('node:worker_threads');
type Worker = InstanceType<WorkerThreads['Worker']>;
type MessagePort = import('node:worker_threads').MessagePort;
type ResourceLimits = import('node:worker_threads').ResourceLimits;

/**
 * Slots of the shared signal: the message counter the parent waits on, and the worker's
 * "I exited" flag with its exit code (set by the supervisor when the worker exits).
 */
const SIGNAL_COUNTER = 0;
const SIGNAL_EXITED = 1;
const SIGNAL_EXIT_CODE = 2;
const SIGNAL_SLOTS = 3;

/**
 * The supervisor thread: starts the worker (`load` is its bootstrap) and, whatever ends it,
 * posts the exit code and the worker's error on the status port, THEN raises the exit flag,
 * so a parent that sees the flag finds the reason. It also reports its own end (it should
 * not end first, but the worker would end with it). Eval'd code runs as CommonJS or, when the
 * process was started with `--input-type=module` (workers inherit execArgv), as an ES module:
 * this code and the worker's bootstrap must work as both, so no `require`.
 */
const SUPERVISOR = `
const { Worker, workerData } = process.getBuiltinModule('node:worker_threads');
const { signal, status, load, resourceLimits, forWorker } = workerData;
const slots = new Int32Array(signal);
let reason;
let reported = false;
const report = (code) => {
  if (reported) return;
  reported = true;
  status.postMessage({ code, reason });
  Atomics.store(slots, ${SIGNAL_EXIT_CODE}, code | 0);
  Atomics.store(slots, ${SIGNAL_EXITED}, 1);
  Atomics.add(slots, ${SIGNAL_COUNTER}, 1);
  Atomics.notify(slots, ${SIGNAL_COUNTER});
};
process.on('exit', (code) => {
  reason ??= 'the sync bridge supervisor thread ended';
  report(code);
});
const worker = new Worker(load, { eval: true, workerData: forWorker, transferList: [forWorker.port], resourceLimits });
worker.on('error', (error) => {
  reason = String((error && error.stack) || error);
});
worker.on('exit', report);
`;

type Outbound =
  | { type: 'ready' }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: number; ok: true; body: Uint8Array }
  | { type: 'result'; id: number; ok: false; error: WireError }
  /** An attempt of call `id` failed and the client will retry it (posted without waking us). */
  | { type: 'retrying'; id: number; error: WireError };

/** What the supervisor posts when the worker has exited. */
interface ExitReport {
  code: number;
  reason?: string;
}

/** Optional settings of the bridge's worker. */
export interface SyncBridgeOptions {
  /** Heap limits of the worker thread (default: Node's). A worker over them dies with ERR_WORKER_OUT_OF_MEMORY. */
  resourceLimits?: ResourceLimits;
}

function workerThreads(): WorkerThreads {
  const builtin = (globalThis.process as { getBuiltinModule?: (id: string) => unknown } | undefined)?.getBuiltinModule?.('node:worker_threads');
  if (!builtin) throw new StoreOpenError('the synchronous store API needs Node.js worker_threads');
  return builtin as WorkerThreads;
}

/**
 * The worker's bootstrap: it loads the worker module, compiled JavaScript (dist/) directly,
 * or, when running from the TypeScript sources (vitest, tsx), through tsx's `tsImport` (a
 * worker's `execArgv: ['--import', 'tsx']` does not apply to the worker's entry module in
 * Node 20). A module that fails to load kills the worker with that error, which the
 * supervisor reports.
 */
function workerBootstrap(): string {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = JSON.stringify(new URL(fromSources ? './sync-worker.ts' : './sync-worker.js', import.meta.url).href);
  if (!fromSources) return `import(${entry});`;
  let tsxApi: string;
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch (cause) {
    throw new StoreOpenError('running the sync bridge from TypeScript sources needs the tsx package (use the compiled dist/ otherwise)', { cause });
  }
  return `import(${JSON.stringify(tsxApi)}).then(({ tsImport }) => tsImport(${entry}, ${entry}));`;
}

export class SyncBridge {
  readonly #threads: WorkerThreads;
  readonly #supervisor: Worker;
  readonly #port: MessagePort;
  readonly #status: MessagePort;
  readonly #counter: Int32Array;
  #nextId = 0;
  #failure: Error | undefined;
  #closed = false;

  /** Starts the worker and blocks until it is ready (or `startupTimeoutMs` passes). */
  constructor(config: VssClientConfig, startupTimeoutMs: number, options: SyncBridgeOptions = {}) {
    this.#threads = workerThreads();
    const deadlineAt = performance.now() + startupTimeoutMs;
    const load = workerBootstrap();
    const signal = new SharedArrayBuffer(SIGNAL_SLOTS * Int32Array.BYTES_PER_ELEMENT);
    this.#counter = new Int32Array(signal);
    const data = new this.#threads.MessageChannel();
    const status = new this.#threads.MessageChannel();
    this.#port = data.port1;
    this.#status = status.port1;
    try {
      this.#supervisor = new this.#threads.Worker(SUPERVISOR, {
        eval: true,
        workerData: { signal, status: status.port2, load, resourceLimits: options.resourceLimits, forWorker: { port: data.port2, signal, config } },
        transferList: [data.port2, status.port2],
      });
    } catch (cause) {
      // E.g. a config that cannot be cloned to another thread.
      this.#port.close();
      this.#status.close();
      throw new StoreOpenError(`the sync bridge worker could not be started: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    }
    // The threads must never keep the process alive, and their crash must not crash us. These
    // events only run when the event loop turns; a blocked wait learns of a death from the
    // shared exit flag instead (see #await).
    this.#supervisor.unref();
    this.#supervisor.on('error', (error) => {
      this.#failure ??= new StoreIOError('the sync bridge supervisor thread crashed', { cause: error });
    });
    this.#supervisor.on('exit', (code) => {
      if (this.#closed) return;
      try {
        this.#checkAlive();
      } catch {
        return; // the worker's own exit report is now the failure
      }
      this.#failure ??= new StoreIOError(`the sync bridge supervisor thread exited (code ${code})`);
    });
    try {
      this.#await(
        (message) => (message.type === 'ready' ? true : undefined),
        deadlineAt,
        'starting the sync bridge worker',
        // Starting contacts no server: the thread start or the module load is what was slow.
        () => new StoreTimeoutError(`the sync bridge worker did not start within ${startupTimeoutMs} ms (startupTimeoutMs)`),
      );
    } catch (error) {
      this.close();
      throw error instanceof StoreTimeoutError ? error : new StoreOpenError(`the sync bridge worker failed to start: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * Throws what any call would throw before sending: StoreClosedError after close(), the
   * worker's death once known. Callers check this before touching shared state, so a call
   * that cannot be sent leaves no trace (no key marked uncertain, no version forgotten).
   */
  checkUsable(): void {
    if (this.#closed) throw new StoreClosedError('this blocking store view is closed');
    if (this.#failure) throw this.#failure;
    this.#checkAlive();
  }

  /**
   * Performs one VSS request, blocking until its response bytes arrive or `deadlineAt`, a
   * time on the `performance.now()` clock.
   */
  call(operation: VssOperation, body: Uint8Array, deadlineAt: number): Uint8Array {
    this.checkUsable();
    const id = ++this.#nextId;
    this.#port.postMessage({ type: 'call', id, operation, body });
    let lastFailure: WireError | undefined;
    try {
      return this.#await(
        (message) => {
          if ((message.type !== 'result' && message.type !== 'retrying') || message.id !== id) return undefined; // e.g. a late answer to an abandoned call
          if (message.type === 'retrying') {
            lastFailure = message.error; // kept for the timeout's message, should the deadline pass
            return undefined;
          }
          if (message.ok) return message.body;
          throw fromWireError(message.error);
        },
        deadlineAt,
        `${operation}`,
        () => {
          if (!lastFailure) return new StoreTimeoutError(`${operation}: no answer from the VSS server within the deadline`);
          // The server did answer (or refused): say how, instead of blaming its silence.
          const cause = fromWireError(lastFailure);
          return new StoreTimeoutError(
            `${operation}: no successful answer from the VSS server within the deadline; the client was still retrying, its last attempt failed: ${cause.message}`,
            { cause },
          );
        },
      );
    } catch (error) {
      if (error instanceof StoreTimeoutError) this.#port.postMessage({ type: 'cancel', id });
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#port.close();
    this.#status.close();
    // Ending the supervisor ends the worker, its child, with it.
    void this.#supervisor.terminate();
  }

  #await<T>(accept: (message: Outbound) => T | undefined, deadlineAt: number, what: string, timedOut: () => StoreTimeoutError): T {
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
      const remaining = deadlineAt - performance.now();
      if (remaining <= 0) throw timedOut();
      Atomics.wait(this.#counter, SIGNAL_COUNTER, seen, remaining);
      seen = Atomics.load(this.#counter, SIGNAL_COUNTER);
    }
  }

  /** Throws (and remembers) a StoreIOError, with the worker's error, if the worker has exited. */
  #checkAlive(what?: string): void {
    if (Atomics.load(this.#counter, SIGNAL_EXITED) === 0) return;
    if (!this.#failure) {
      // The supervisor posted its report before raising the flag.
      const report = this.#threads.receiveMessageOnPort(this.#status)?.message as ExitReport | undefined;
      const code = report?.code ?? Atomics.load(this.#counter, SIGNAL_EXIT_CODE);
      const why = report?.reason?.split('\n', 1)[0];
      this.#failure = new StoreIOError(
        `${what ? `${what}: ` : ''}the sync bridge worker exited (code ${code})${why ? ` (${why})` : ''}; this blocking store can no longer reach the server`,
        report?.reason ? { cause: new Error(report.reason) } : undefined,
      );
    }
    throw this.#failure;
  }
}
