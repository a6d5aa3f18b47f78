/**
 * The sync bridge's failure paths: how a dead worker is told apart from a slow server, which
 * clock the deadline runs on, that a call which cannot be sent leaves the store's shared state
 * alone, that the threads never keep the process alive, and that big values cross the threads.
 * The server runs in a worker thread of its own (this thread blocks).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as workerThreads from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { VssClientError } from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import { RollbackDetectedError, StoreClosedError, StoreIOError, StoreOpenError, StoreTimeoutError, VssStore, type VssSyncStore } from '../../src/store/index.js';
import { SyncBridge, type SyncBridgeOptions } from '../../src/store/sync-bridge.js';
import { rewindVersion2Key } from './helpers/rewind.js';
import { startServerThread, type ServerThread } from './helpers/server-thread.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x29);
const FAST_RETRY = { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 50, maxJitterMs: 0 };
const UNREACHABLE = { baseUrl: 'http://127.0.0.1:1/vss', retry: 'none' as const };

type WorkerCtor = typeof workerThreads.Worker;

/**
 * Runs `build` while the bridge's `process.getBuiltinModule('node:worker_threads')` hands out
 * a module whose MessageChannel and Worker the test can watch or alter.
 */
function withWorkerThreads<T>(
  build: () => T,
  hooks: { onChannel?: (channel: workerThreads.MessageChannel) => void; rewriteCode?: (code: string) => string },
): T {
  const real = process.getBuiltinModule.bind(process);
  const spy = vi.spyOn(process, 'getBuiltinModule').mockImplementation(((id: string) => {
    if (id !== 'node:worker_threads') return real(id);
    function WatchedChannel(): workerThreads.MessageChannel {
      const channel = new workerThreads.MessageChannel();
      hooks.onChannel?.(channel);
      return channel;
    }
    const rewrite = hooks.rewriteCode;
    const Worker = rewrite
      ? (function RewritingWorker(code: string | URL, options?: workerThreads.WorkerOptions) {
          const data = options?.workerData as { load?: unknown } | undefined;
          // The bootstrap code may be the eval'd code itself or carried in workerData.
          const workerData = data && typeof data.load === 'string' ? { ...data, load: rewrite(data.load) } : options?.workerData;
          return new workerThreads.Worker(typeof code === 'string' ? rewrite(code) : code, { ...options, workerData });
        } as unknown as WorkerCtor)
      : workerThreads.Worker;
    return { ...workerThreads, MessageChannel: WatchedChannel, Worker };
  }) as typeof process.getBuiltinModule);
  try {
    return build();
  } finally {
    spy.mockRestore();
  }
}

/** A bridge plus this thread's end of its request port (the first channel it creates). */
function bridgeWithPort(options: SyncBridgeOptions = {}): { bridge: SyncBridge; port: workerThreads.MessagePort } {
  let port: workerThreads.MessagePort | undefined;
  const bridge = withWorkerThreads(() => new SyncBridge(UNREACHABLE, 60_000, options), {
    onChannel: (channel) => {
      port ??= channel.port1;
    },
  });
  return { bridge, port: port! };
}

const getObject = () => vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish();

function failureOf(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail');
}

describe('SyncBridge: worker deaths the worker cannot report itself', () => {
  it('a worker that runs out of memory while this thread is blocked fails the call with StoreIOError naming ERR_WORKER_OUT_OF_MEMORY, not as a server timeout', () => {
    const { bridge, port } = bridgeWithPort({ resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 } });
    try {
      // Deserializing a million objects takes the worker over its heap limit: V8 terminates it
      // without running its 'exit' handlers, so only a thread whose event loop runs can see it.
      port.postMessage({ type: 'cancel', id: -1, filler: Array.from({ length: 1_000_000 }, (_, i) => ({ i })) });
      const failure = failureOf(() => bridge.call('getObject', getObject(), performance.now() + 30_000));
      expect(failure).toBeInstanceOf(StoreIOError);
      expect(failure).not.toBeInstanceOf(StoreTimeoutError);
      expect((failure as Error).message).toMatch(/worker exited \(code 1\).*ERR_WORKER_OUT_OF_MEMORY/);
      // Later calls fail the same way without waiting for the deadline again.
      expect(failureOf(() => bridge.call('getObject', getObject(), performance.now() + 30_000))).toBe(failure);
    } finally {
      bridge.close();
    }
  }, 120_000);

  it('a worker module that cannot be loaded fails the start with StoreOpenError saying which module, not just an exit code', () => {
    const failure = failureOf(() =>
      withWorkerThreads(() => new SyncBridge(UNREACHABLE, 60_000), { rewriteCode: (code) => code.replaceAll('sync-worker.ts', 'no-such-sync-worker.ts') }),
    );
    expect(failure).toBeInstanceOf(StoreOpenError);
    expect((failure as Error).message).toMatch(/worker exited \(code 1\).*no-such-sync-worker\.ts/);
  }, 120_000);

  it('a client config that cannot be sent to a thread is a StoreOpenError saying so', () => {
    // JavaScript callers are not held to the VssClientConfig type: a function cannot be cloned.
    const config = { ...UNREACHABLE, onRetry: () => undefined } as unknown as ConstructorParameters<typeof SyncBridge>[0];
    const failure = failureOf(() => new SyncBridge(config, 60_000));
    expect(failure).toBeInstanceOf(StoreOpenError);
    expect((failure as Error).message).toMatch(/could not be started.*could not be cloned/);
  });

  /** Runs `node --import tsx ...args` to its end (killed after a minute: a process that would not exit). */
  async function runNode(args: string[]): Promise<{ code: number | null; output: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (exitCode) => resolve(exitCode)));
    clearTimeout(kill);
    return { code, output };
  }

  const bridgeModule = JSON.stringify(new URL('../../src/store/sync-bridge.ts', import.meta.url).href);
  const startBridge = `new SyncBridge(${JSON.stringify(UNREACHABLE)}, 30000); console.log('bridge started');`;

  it('a bridge never closed does not keep the process alive (neither the supervisor nor the worker)', async () => {
    const { code, output } = await runNode(['-e', `import(${bridgeModule}).then(({ SyncBridge }) => { ${startBridge} });`]);
    expect(output).toContain('bridge started');
    expect(code).toBe(0); // null: killed, the process did not exit by itself
  }, 90_000);

  it('starts in a process run with --input-type=module (its threads inherit it, and eval\'d code is then an ES module)', async () => {
    const { code, output } = await runNode(['--input-type=module', '-e', `const { SyncBridge } = await import(${bridgeModule}); ${startBridge}`]);
    expect(output).toContain('bridge started');
    expect(code).toBe(0);
  }, 90_000);
});

describe('SyncBridge: what a timeout says', () => {
  it('a deadline that passes while the client retries a refused connection says so, with the last attempt\'s error as cause, not "no answer"', () => {
    // Retries that outlast any deadline, as with the default settings (up to 180 s).
    const retrying = { baseUrl: 'http://127.0.0.1:1/vss', retry: { baseDelayMs: 20, maxAttempts: 1000, maxTotalDelayMs: 600_000, maxJitterMs: 0 } };
    const bridge = new SyncBridge(retrying, 60_000);
    try {
      const failure = failureOf(() => bridge.call('getObject', getObject(), performance.now() + 3_000));
      expect(failure).toBeInstanceOf(StoreTimeoutError);
      expect((failure as Error).message).toMatch(/^getObject: no successful answer .*last attempt failed: .*ECONNREFUSED/);
      const cause = (failure as Error).cause;
      expect(cause).toBeInstanceOf(VssClientError);
      expect(((cause as Error).cause as { code?: string }).code).toBe('ECONNREFUSED');
    } finally {
      bridge.close();
    }
  }, 60_000);

  it('a worker that does not start in time is a StoreTimeoutError about the start-up, not about the VSS server', () => {
    const failure = failureOf(() => new SyncBridge(UNREACHABLE, 1));
    expect(failure).toBeInstanceOf(StoreTimeoutError);
    expect((failure as Error).message).toBe('the sync bridge worker did not start within 1 ms (startupTimeoutMs)');
  });
});

describe('VssStore sync view over the bridge', () => {
  let server: ServerThread;
  beforeAll(async () => {
    server = await startServerThread({ backend: 'memory', auth: { kind: 'noop' } });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  const open = (storeId = `syncb-${randomUUID().slice(0, 20)}`, versionLedger?: string) =>
    VssStore.open({ storeId, client: { baseUrl: server.url, retry: FAST_RETRY }, keys: { seed: SEED }, versionLedger });

  it('keeps to its deadline on the monotonic clock: a wall clock stepped forward mid-call is no premature timeout', async () => {
    const store = await open();
    const sync = store.toSyncStore({ deadlineMs: 30_000 });
    const realNow = Date.now.bind(Date);
    let steps = 0;
    // Every reading of the wall clock finds it an hour later than the one before (NTP
    // stepping the clock of a device that booted without a real-time clock, say).
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ++steps * 3_600_000);
    try {
      sync.write('clock', '', 'k', bytes('stepped'));
      expect(text(sync.read('clock', '', 'k'))).toBe('stepped');
    } finally {
      spy.mockRestore();
    }
    await store.close();
  });

  /** Writes k twice, makes the view unusable, tries to remove k, then rolls k back on the server. */
  async function removeThroughUnusableView(breakView: (sync: VssSyncStore, port: workerThreads.MessagePort) => void, expected: new (...args: never[]) => Error) {
    const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-syncb-'));
    try {
      const storeId = `syncb-${randomUUID().slice(0, 20)}`;
      const ledger = join(dir, 'versions.log');
      let port: workerThreads.MessagePort | undefined;
      const store = await open(storeId, ledger);
      const sync = withWorkerThreads(() => store.toSyncStore(), {
        onChannel: (channel) => {
          port ??= channel.port1;
        },
      });
      sync.write('l', '', 'k', bytes('1'));
      sync.write('l', '', 'k', bytes('2'));
      breakView(sync, port!);
      expect(() => sync.remove('l', '', 'k', false)).toThrow(expected);
      await store.close();
      // The remove was never sent: the key is still at version 2, and the ledger must still
      // say so. Put it back to version 1 behind the store's back: a reopen must notice.
      await rewindVersion2Key(server.url, storeId);
      await expect(open(storeId, ledger)).rejects.toBeInstanceOf(RollbackDetectedError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('a remove through a closed view fails with StoreClosedError and leaves the version ledger alone', async () => {
    await removeThroughUnusableView((sync) => sync.close(), StoreClosedError);
  });

  it('a remove after the worker died fails with StoreIOError and leaves the version ledger alone', async () => {
    await removeThroughUnusableView((sync, port) => {
      port.postMessage(null); // the worker's listener throws: it dies
      // A read learns of the death (and touches no version).
      expect(() => sync.read('l', '', 'k')).toThrow(/worker exited/);
    }, StoreIOError);
  });

  it('carries tens of megabytes each way', async () => {
    const store = await open();
    const sync = store.toSyncStore({ deadlineMs: 60_000 });
    const big = new Uint8Array(24 << 20);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
    sync.write('big', '', 'v', big);
    const back = sync.read('big', '', 'v');
    expect(back.length).toBe(big.length);
    expect(Buffer.compare(back, big)).toBe(0);
    await store.close();
  }, 120_000);
});
