/**
 * A VSS server in its own worker thread. Tests and benchmarks need this when the calling
 * thread blocks (the sync KVStore waits with Atomics.wait, so a server on the same thread
 * could never answer) and to keep server work off the wallet's event loop, as in a real
 * deployment. The listener can be stopped and resumed on the same port with the same data
 * (an outage that the wallet sees as refused connections).
 */
import { Worker } from 'node:worker_threads';
import type { BackendOption, StorageBackend } from '../src/server/index.js';

export type ThreadBackendOption = Exclude<BackendOption, StorageBackend>;

interface Reply {
  id: number;
  ok: boolean;
  error?: string;
}

function spawn(workerData: unknown): Worker {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = new URL(fromSources ? './server-worker.ts' : './server-worker.js', import.meta.url);
  if (!fromSources) return new Worker(entry, { workerData });
  // Node 20 does not apply --import hooks to a worker's entry module: load it through tsx.
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then(({ tsImport }) => tsImport(${JSON.stringify(entry.href)}, ${JSON.stringify(entry.href)}));`;
  return new Worker(bootstrap, { eval: true, workerData });
}

export class VssServerThread {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private closed = false;
  /** Set once the worker is gone: no command can be answered any more. */
  private dead: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    /** Base URL including /vss. */
    readonly url: string,
    readonly port: number,
  ) {
    worker.on('message', (msg: Reply) => {
      const waiter = this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id);
      if (msg.ok) waiter.resolve();
      else waiter.reject(new Error(`VSS server thread: ${msg.error}`));
    });
    // A worker that crashed or was terminated answers nothing: fail what waits, and what comes.
    const gone = (why: string): void => {
      this.dead ??= new Error(`VSS server thread: the worker exited (${why})`);
      for (const waiter of this.pending.values()) waiter.reject(this.dead);
      this.pending.clear();
    };
    worker.on('error', (err: Error) => gone(err.message));
    worker.on('exit', (code) => gone(`exit code ${code}`));
  }

  /** Starts a server (noop auth) on a free loopback port. Default backend: in-memory PGlite. */
  static async start(backend: ThreadBackendOption = { kind: 'pglite' }): Promise<VssServerThread> {
    const worker = spawn({ backend });
    let ready: { ready: boolean; url?: string; port?: number; error?: string };
    try {
      ready = await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        // Exiting without a word (process.exit in the worker, a failed bootstrap) is a failed start too.
        worker.once('exit', (code) => reject(new Error(`the worker exited (exit code ${code}) before it was ready`)));
      });
    } catch (err) {
      await worker.terminate();
      throw new Error(`VSS server thread failed to start: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (!ready.ready) {
      await worker.terminate();
      throw new Error(`VSS server thread failed to start: ${ready.error}`);
    }
    return new VssServerThread(worker, ready.url!, ready.port!);
  }

  private command(cmd: 'stop' | 'resume' | 'close'): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, cmd });
    });
  }

  /**
   * Sends a command and waits for its answer, at most `timeoutMs`. A worker that does not
   * answer in time (a hung listener close, a blocked event loop) is terminated: its state is
   * unknown, so every later command fails at once instead of waiting on it too.
   */
  private async commandWithin(cmd: 'stop' | 'resume', timeoutMs: number): Promise<void> {
    const answer = this.command(cmd);
    if (await answeredWithin(answer, timeoutMs)) return;
    const error = new Error(`VSS server thread: the worker did not answer ${cmd} within ${timeoutMs} ms; terminated it`);
    this.dead ??= error;
    // The answer now comes from the exit handler (this.dead): nobody waits on it any more.
    answer.catch(() => {});
    await this.worker.terminate();
    throw error;
  }

  /**
   * Closes the listener; data stays. Clients now get refused connections. A worker that does
   * not answer within `timeoutMs` (default 10 s) is terminated and stop() rejects saying so.
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    return this.commandWithin('stop', options.timeoutMs ?? 10_000);
  }

  /** Listens again on the same port with the same data; the deadline is as for stop(). */
  resume(options: { timeoutMs?: number } = {}): Promise<void> {
    return this.commandWithin('resume', options.timeoutMs ?? 10_000);
  }

  /**
   * Closes the server and its backend, then ends the worker. A worker that does not answer
   * within `timeoutMs` (default 10 s: a hung backend close, a blocked event loop) is terminated
   * anyway and close() rejects saying so, instead of waiting forever.
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const timeoutMs = options.timeoutMs ?? 10_000;
    // A worker that failed to close or is gone counts as answered: it is terminated all the same.
    const answered = await answeredWithin(this.command('close').catch(() => undefined), timeoutMs);
    await this.worker.terminate();
    if (!answered) throw new Error(`VSS server thread: the worker did not finish closing within ${timeoutMs} ms; terminated it (its backend may not have closed cleanly)`);
  }
}

/** Whether `answer` settled within `timeoutMs` (its rejection propagates, as for any await). */
async function answeredWithin(answer: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([answer.then(() => true), new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
  } finally {
    clearTimeout(timer);
  }
}
