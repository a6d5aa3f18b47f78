/**
 * The embedded backend on a data directory when things go wrong: PostgreSQL reporting a PANIC
 * (a failed WAL fsync), a data directory PostgreSQL refuses to start on, and the server killed
 * with SIGKILL in the middle of a stream of writes (every acknowledged write is there after the
 * restart). The hazardous parts run in child processes: a PGlite instance that spins blocks its
 * whole process, and SIGKILL is only real on a real process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readFile, readlink, realpath, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DATA_DIR_LOCK_FILE, DataDirInUseError } from '../../src/server/backends/data-dir-lock.js';
import { PgliteBackend, PgliteStartError } from '../../src/server/backends/pglite.js';
import { SERVER_ENV_VARS } from '../../src/server/config.js';
import { startVssServer } from '../../src/server/server.js';
import { send, TestClient } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PGLITE_MODULE = fileURLToPath(new URL('../../src/server/backends/pglite.ts', import.meta.url));
const CLI = join(ROOT, 'src/cli.ts');

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function newDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ldk-vss-pglite-crash-'));
  dirs.push(dir);
  return dir;
}

let template: Promise<string> | undefined;
/**
 * A copy of a data directory created once (and closed cleanly) for this file: creating one takes
 * PGlite about 10 s, and only the tests of a failed first start need to watch that happen.
 */
async function seededDataDir(at?: string): Promise<string> {
  template ??= (async () => {
    const dir = await newDataDir();
    await (await PgliteBackend.open({ dataDir: dir })).close();
    return dir;
  })();
  const dir = at ?? (await newDataDir());
  await cp(await template, dir, { recursive: true });
  return dir;
}

const put = (backend: PgliteBackend, key: string) =>
  backend.put('user', { storeId: 's', transactionItems: [{ key, version: 0n, value: new Uint8Array([1, 2, 3]) }], deleteItems: [] });

describe('a PANIC from the embedded database', () => {
  it('stops the instance: later requests, the health check and close fail or finish at once instead of spinning forever; acknowledged writes survive', async () => {
    const dir = await seededDataDir();
    // Each step's outcome as one JSON line; without the fix the step after the PANIC never returns.
    const script = `import { PgliteBackend } from ${JSON.stringify(PGLITE_MODULE)};
      const outcome = (promise) => promise.then(() => 'ok', (e) => ({ name: e.name, severity: e.severity, message: e.message }));
      const put = (key) => backend.put('user', { storeId: 's', transactionItems: [{ key, version: 0n, value: new Uint8Array([1, 2, 3]) }], deleteItems: [] });
      const backend = await PgliteBackend.open({ dataDir: process.argv[1] });
      const streams = backend.db.mod.NODEFS.stream_ops;
      const realFsync = streams.fsync;
      const result = { before: await outcome(put('acked')) };
      streams.fsync = () => -29; // EIO: the disk failed the flush of the WAL at commit
      result.failed = await outcome(put('unflushed'));
      streams.fsync = realFsync;
      result.get = await outcome(backend.get('user', 's', 'acked'));
      result.health = await outcome(backend.checkHealth());
      result.after = await outcome(put('after'));
      result.close = await outcome(backend.close());
      process.stdout.write(JSON.stringify(result));
      process.exit(0);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    // Not a timing assertion: a child spinning forever is ended so that the test can fail.
    const guard = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const exit = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(guard);
    expect(exit, `child output: ${out}`).toBe(0);
    const result = JSON.parse(out) as Record<string, 'ok' | { name: string; severity?: string; message: string }>;
    expect(result.before).toBe('ok');
    expect(result.failed).toMatchObject({ severity: 'PANIC', message: expect.stringContaining('could not fsync') });
    for (const step of ['get', 'health', 'after'] as const) {
      expect(result[step], step).toMatchObject({ name: 'PgliteStoppedError', message: expect.stringMatching(/stopped after a PANIC \(could not fsync .*restart the server/) });
    }
    expect(result.close).toBe('ok');
    await expect(readFile(join(dir, DATA_DIR_LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });

    // The next start recovers from the WAL, as after a crash: the acknowledged write is there.
    const reopened = await PgliteBackend.open({ dataDir: dir });
    try {
      expect((await reopened.get('user', 's', 'acked'))?.version).toBe(1n);
      await put(reopened, 'later');
      expect((await reopened.get('user', 's', 'later'))?.version).toBe(1n);
    } finally {
      await reopened.close();
    }
  });
});

describe('startVssServer on an embedded database that stops', () => {
  it('resolves backendStopped with the PgliteStoppedError, and close() releases the data directory for the next server', async () => {
    const dataDir = await seededDataDir();
    const server = await startVssServer({ backend: { kind: 'pglite', dataDir }, auth: { kind: 'noop' } });
    const client = new TestClient(server.url, 's');
    await client.put(undefined, [{ key: 'acked', version: 0n, value: 'acknowledged' }]);
    // Pending while the database works (a resolved promise settles the race otherwise).
    expect(await Promise.race([server.backendStopped, Promise.resolve('pending')])).toBe('pending');
    // Safe in this process: the instance is stopped at its PANIC and runs no further statement.
    const { mod } = (server.backend as PgliteBackend).db as unknown as { mod: { NODEFS: { stream_ops: { fsync: () => number } } } };
    const streams = mod.NODEFS.stream_ops;
    streams.fsync = () => -29; // EIO: the disk failed the flush of the WAL at commit
    await expect(client.put(undefined, [{ key: 'unflushed', version: 0n, value: 'x' }])).rejects.toMatchObject({ status: 500 });
    const reason = await server.backendStopped;
    expect(reason).toMatchObject({ name: 'PgliteStoppedError', message: expect.stringMatching(/^the embedded database stopped after a PANIC \(could not fsync /) });
    expect((await send(server.url.replace(/\/vss$/, '/health'), undefined, { method: 'GET' })).status).toBe(503);
    await server.close();
    await expect(readFile(join(dataDir, DATA_DIR_LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });

    const next = await startVssServer({ backend: { kind: 'pglite', dataDir }, auth: { kind: 'noop' } });
    try {
      expect((await new TestClient(next.url, 's').get('acked')).version).toBe(1n);
    } finally {
      await next.close();
    }
  });

  it('leaves backendStopped pending for storage that cannot stop this way', async () => {
    const server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' } });
    try {
      expect(await Promise.race([server.backendStopped, Promise.resolve('pending')])).toBe('pending');
    } finally {
      await server.close();
    }
  });
});

/** The environment of a spawned `ldk-vss serve`: nothing from the developer's shell, this data directory. */
function cliEnv(dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SERVER_ENV_VARS) delete env[name];
  return { ...env, VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_AUTH: 'noop', VSS_DATA_DIR: dataDir, VSS_LOG_LEVEL: 'info' };
}

describe('a data directory that cannot be used', () => {
  it("fails with PostgreSQL's reason and the directory, releases its lock, and changes nothing", async () => {
    const dir = await seededDataDir();
    const first = await PgliteBackend.open({ dataDir: dir });
    await put(first, 'kept');
    await first.close();
    // As left by a PGlite of another PostgreSQL major version.
    const version = await readFile(join(dir, 'PG_VERSION'), 'utf8');
    await writeFile(join(dir, 'PG_VERSION'), '17\n');
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toContain(`data directory ${dir}: embedded PostgreSQL did not start: FATAL: database files are incompatible with server`);
    expect((error as Error).message).toMatch(/initialized by PostgreSQL version 17, which is not compatible with this version \d+/);
    await expect(readFile(join(dir, DATA_DIR_LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });

    await writeFile(join(dir, 'PG_VERSION'), version);
    const again = await PgliteBackend.open({ dataDir: dir });
    try {
      expect((await again.get('user', 's', 'kept'))?.version).toBe(1n);
    } finally {
      await again.close();
    }
  });

  it('names the file-system error PGlite throws bare (an ErrnoError without a message), and starts once it is gone', async () => {
    const dir = await newDataDir();
    // A file where the database needs a directory: PGlite fails with only an errno.
    await writeFile(join(dir, 'base'), 'not a directory');
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toBe(`data directory ${dir}: embedded PostgreSQL did not start: file system error ENOTDIR (not a directory)`);
    await expect(readFile(join(dir, DATA_DIR_LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });

    await rm(join(dir, 'base'));
    const backend = await PgliteBackend.open({ dataDir: dir });
    try {
      await put(backend, 'created');
      expect((await backend.get('user', 's', 'created'))?.version).toBe(1n);
    } finally {
      await backend.close();
    }
  });

  it('ldk-vss serve on a VSS_DATA_DIR that is a file: exit 1 with one line saying so', async () => {
    const file = join(await newDataDir(), 'a-file');
    await writeFile(file, 'not a directory');
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], { cwd: ROOT, env: cliEnv(file), stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    expect(await new Promise<number | null>((resolve) => child.on('close', resolve))).toBe(1);
    expect(stderr.trim().split('\n')).toEqual([`ldk-vss: cannot start on pglite ${file} from VSS_DATA_DIR: data directory ${file} exists but is not a directory`]);
  });
});

describe('a lock naming a live process of this host', () => {
  it('is refused with the way out when that process is not a server (a crashed server\'s pid, reused): the lock file to delete', async () => {
    const dir = await seededDataDir();
    const lock = join(dir, DATA_DIR_LOCK_FILE);
    const pidNamespace = await readlink('/proc/self/ns/pid').catch(() => undefined);
    // Left by a server that crashed; its pid now belongs to another live process (here: our parent).
    await writeFile(lock, JSON.stringify({ pid: process.ppid, host: hostname(), pidNamespace, token: 'crashed', since: '2026-01-01T00:00:00Z' }));
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataDirInUseError);
    const lockNamed = join(await realpath(dir), DATA_DIR_LOCK_FILE);
    expect((error as Error).message).toContain(`if process ${process.ppid} is not an ldk-vss server (the pid of a crashed one, reused), delete ${lockNamed} `);
    // Doing so is enough.
    await rm(lock);
    const backend = await PgliteBackend.open({ dataDir: dir });
    await backend.close();
  });
});

/**
 * Spawns `ldk-vss serve` on `dataDir` (with `preload` imported first, if given); resolves once it
 * listens. `stderr()` is what it wrote to stderr so far (its log lines go to stdout).
 */
async function serve(dataDir: string, preload?: string): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const imports = preload === undefined ? [] : ['--import', `data:text/javascript,${encodeURIComponent(preload)}`];
  const child = spawn(process.execPath, ['--import', 'tsx', ...imports, CLI, 'serve'], { cwd: ROOT, env: cliEnv(dataDir), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const logs: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
    logs.push(String(chunk));
  });
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      logs.push(line);
      const entry = JSON.parse(line) as { msg?: string; url?: string };
      if (entry.msg === 'VSS server listening' && entry.url) resolve(entry.url);
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${logs.join('\n')}`)));
  });
  return { child, url, stderr: () => stderr };
}

describe('ldk-vss serve whose embedded database stops (a PANIC after a failed WAL fsync)', () => {
  it('shuts down, exits 1 with one line saying why, releases the lock, and the restart has every acknowledged write', async () => {
    const root = await newDataDir();
    const dataDir = await seededDataDir(join(root, 'data'));
    const failFsync = join(root, 'fail-fsync');
    // Once this file exists every fsync fails with EIO (Emscripten's error shape, as PGlite's file
    // system reports one), as a disk failing the flush of the WAL at commit would.
    const preload = `import fs from 'node:fs';
      import { syncBuiltinESMExports } from 'node:module';
      const fsyncSync = fs.fsyncSync;
      fs.fsyncSync = (fd) => {
        if (fs.existsSync(${JSON.stringify(failFsync)})) throw Object.assign(new Error('injected EIO'), { name: 'ErrnoError', errno: 29 });
        return fsyncSync(fd);
      };
      syncBuiltinESMExports();`;
    const { child, url, stderr } = await serve(dataDir, preload);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    // Not a timing assertion: a server that keeps running is ended so that the test can fail.
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const client = new TestClient(url, 's');
    const acknowledged = ['a', 'b', 'c', 'd'];
    for (const key of acknowledged) await client.put(undefined, [{ key, version: 0n, value: `${key} acknowledged` }]);
    await client.put(undefined, [{ key: 'a', version: 1n, value: 'a acknowledged' }]);

    await writeFile(failFsync, '');
    await expect(client.put(undefined, [{ key: 'unflushed', version: 0n, value: 'never acknowledged' }])).rejects.toMatchObject({ status: 500 });
    const code = await exited;
    clearTimeout(guard);
    expect(code, stderr()).toBe(1);
    const lines = stderr().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^ldk-vss: stopped serving on pglite .* from VSS_DATA_DIR: the embedded database stopped after a PANIC \(could not fsync .*\) and runs no more statements: restart the server; it recovers from its write-ahead log$/,
    );
    expect(lines[0]).toContain(`pglite ${dataDir} from VSS_DATA_DIR: `);
    await expect(readFile(join(dataDir, DATA_DIR_LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });

    await rm(failFsync);
    const restarted = await serve(dataDir);
    const again = new TestClient(restarted.url, 's');
    expect((await again.get('a')).version).toBe(2n);
    for (const key of acknowledged) expect(Buffer.from((await again.get(key)).value).toString(), key).toBe(`${key} acknowledged`);
    await again.put(undefined, [{ key: 'later', version: 0n, value: 'after the restart' }]);
    expect((await again.get('later')).version).toBe(1n);
    const stopped = new Promise<number | null>((resolve) => restarted.child.on('exit', resolve));
    restarted.child.kill('SIGTERM');
    expect(await stopped).toBe(0);
  }, 120_000);
});

describe('ldk-vss serve killed with SIGKILL during a stream of writes', () => {
  it('restarts on the same directory (taking over the lock) with every acknowledged write and its version', async () => {
    const dataDir = await seededDataDir();
    const writers = 8;
    /** Per key: the version the server answered 200 for last. */
    const acknowledged = new Map<string, bigint>();
    let { child, url } = await serve(dataDir);
    for (const killAfter of [150, 400]) {
      let answered = 0;
      let killed!: () => void;
      const kill = new Promise<void>((resolve) => (killed = resolve));
      const client = new TestClient(url, 's');
      // Each writer rotates over its own four keys, one compare-and-set at a time: at the kill
      // at most one write per writer is in flight, and it may or may not have applied.
      const streams = Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; ; i++) {
          const key = `w${w}-${i % 4}`;
          const current = acknowledged.get(key) ?? 0n;
          try {
            await client.put(undefined, [{ key, version: current, value: `${key} at ${current + 1n}` }]);
          } catch {
            return; // the server is gone
          }
          acknowledged.set(key, current + 1n);
          if (++answered === killAfter) killed();
        }
      });
      await kill;
      child.kill('SIGKILL');
      await Promise.all(streams);

      ({ child, url } = await serve(dataDir));
      const restarted = new TestClient(url, 's');
      for (const [key, version] of acknowledged) {
        const stored = await restarted.get(key);
        // The acknowledged version, or one more from a write cut off before its answer.
        expect([version, version + 1n], key).toContain(stored.version);
        expect(Buffer.from(stored.value).toString(), key).toBe(`${key} at ${stored.version}`);
        acknowledged.set(key, stored.version);
      }
      expect(acknowledged.size).toBe(writers * 4);
    }
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
