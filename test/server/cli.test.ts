/**
 * The `ldk-vss` command as a user runs it (spawned through tsx): usage and exit codes, one
 * clear stderr line naming the variable for bad configuration, and a real `serve` on the
 * embedded backend that keeps its data across restarts and shuts down gracefully.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { DATA_DIR_LOCK_FILE } from '../../src/server/backends/data-dir-lock.js';
import { SERVER_ENV_VARS } from '../../src/server/config.js';
import { REPEATED_SIGNAL_MS } from '../../src/server/serve-command.js';
import { TestClient } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'src/cli.ts');

/** Environment without anything the server reads, so the developer's shell cannot leak in. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SERVER_ENV_VARS) delete env[name];
  return { ...env, ...extra };
}

function startCli(args: string[], env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

async function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = startCli(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk) => (stdout += chunk));
  child.stderr?.on('data', (chunk) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stdout, stderr };
}

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('ldk-vss usage', () => {
  it('prints usage, lists the serve variables, and refuses unknown commands and arguments', async () => {
    const [none, help, unknown, serveHelp, extraArg] = await Promise.all([
      runCli([]),
      runCli(['--help']),
      runCli(['frobnicate']),
      runCli(['serve', '--help']),
      runCli(['serve', '--port=1']),
    ]);
    expect(none.code).toBe(2);
    expect(none.stdout).toContain('serve');
    expect(help.code).toBe(0);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    expect(serveHelp.code).toBe(0);
    for (const name of SERVER_ENV_VARS) expect(serveHelp.stdout).toContain(name);
    expect(extraArg.code).toBe(2);
    expect(extraArg.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('prints its version for --version (a newcomer tries it first)', async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const result = await runCli(['--version']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout.trim()).toBe(version);
  });
});

describe('ldk-vss serve with invalid configuration', () => {
  it.each([
    ['VSS_BIND_ADDRESS', { VSS_BIND_ADDRESS: 'nowhere' }],
    ['VSS_MAX_REQUEST_BODY_SIZE', { VSS_MAX_REQUEST_BODY_SIZE: '2147483648' }],
    ['VSS_AUTH', { VSS_AUTH: 'magic' }],
    ['VSS_JWT_RSA_PEM', { VSS_JWT_RSA_PEM: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----' }],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://localhost/vss' }],
    ['VSS_LOG_LEVEL', { VSS_LOG_LEVEL: 'chatty' }],
    // A list written one origin per line (a YAML block scalar) quotes a line break back.
    ['VSS_CORS_ORIGINS', { VSS_CORS_ORIGINS: 'https://a.example\nhttps://b.example' }],
  ])('exits 2 with one stderr line naming %s', async (variable, env) => {
    const result = await runCli(['serve'], env);
    expect(result.code).toBe(2);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^ldk-vss: invalid configuration: ${variable}: `));
    expect(result.stdout).toBe('');
  });

  it('exits 1 with one clear line when the database cannot be reached', async () => {
    const result = await runCli(['serve'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/vss', VSS_LOG_LEVEL: 'off' });
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^ldk-vss: cannot start on postgres postgres:\/\/postgres@127\.0\.0\.1:1\/vss from DATABASE_URL: .*ECONNREFUSED/);
  });
});

describe('ldk-vss serve on an address it cannot listen on', () => {
  it('exits 1 with one line that names the address and VSS_BIND_ADDRESS, not the storage', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const dataDir = await mkdtemp(join(tmpdir(), 'ldk-vss-cli-'));
    dirs.push(dataDir);
    try {
      const address = `127.0.0.1:${(taken.address() as net.AddressInfo).port}`;
      const result = await runCli(['serve'], { VSS_BIND_ADDRESS: address, VSS_AUTH: 'noop', VSS_DATA_DIR: dataDir, VSS_LOG_LEVEL: 'off' });
      expect(result.code).toBe(1);
      const lines = result.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^ldk-vss: cannot listen on ${address.replace(/\./g, '\\.')} \\(from VSS_BIND_ADDRESS\\): .*EADDRINUSE`));
      expect(lines[0]).not.toContain('pglite');
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});

describe('ldk-vss serve', () => {
  /** Starts `serve` and resolves with the process and base URL once it logs that it listens. */
  async function serve(env: Record<string, string>): Promise<{ child: ChildProcess; url: string; logs: string[] }> {
    const child = startCli(['serve'], { VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_AUTH: 'noop', ...env });
    children.push(child);
    const logs: string[] = [];
    child.stderr?.on('data', (chunk) => logs.push(String(chunk)));
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const url = await new Promise<string>((resolve, reject) => {
      lines.on('line', (line) => {
        logs.push(line);
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg === 'VSS server listening' && entry.url) resolve(entry.url);
      });
      child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${logs.join('\n')}`)));
    });
    return { child, url, logs };
  }

  it('serves on PGlite, finishes an in-flight request on SIGTERM, exits 0, and keeps the data for the next start', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ldk-vss-cli-'));
    dirs.push(dataDir);
    // As on the root of a new ext4 volume: still an empty directory, and a first start.
    await mkdir(join(dataDir, 'lost+found'));
    // A misspelt variable does not stop the server, but its log says so.
    const first = await serve({ VSS_DATA_DIR: dataDir, VSS_PSQL_ADRESS: 'db:5432' });
    // Every log line is one JSON object (pino).
    expect(first.logs.every((line) => line.trim() === '' || typeof JSON.parse(line) === 'object')).toBe(true);
    expect(first.logs.join('\n')).toContain('VSS_PSQL_ADRESS is set but not read by ldk-vss serve; did you mean VSS_PSQL_ADDRESS?');
    // A first start says it is creating the database before the long silence of doing so.
    const messages = (logs: string[]) => logs.filter((line) => line.startsWith('{')).map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(messages(first.logs).indexOf('creating the embedded database (a first start takes 10-15 s)')).toBeGreaterThanOrEqual(0);
    expect(messages(first.logs).indexOf('creating the embedded database (a first start takes 10-15 s)')).toBeLessThan(messages(first.logs).indexOf('VSS server listening'));
    const client = new TestClient(first.url, 'cli');
    await client.put(0n, [{ key: 'persisted', version: 0n, value: 'yes' }]);

    const body = Buffer.from(vss.PutObjectRequest.encode({ storeId: 'cli', transactionItems: [keyValue('late', 0n, new Uint8Array(50_000))] }).finish());
    const exited = new Promise<number | null>((resolve) => first.child.on('exit', resolve));
    const status = await new Promise<number>((resolve, reject) => {
      const request = http.request(`${first.url}/putObjects`, { method: 'POST', headers: { 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      request.on('error', reject);
      request.write(body.subarray(0, 1000), () => {
        first.child.kill('SIGTERM');
        setTimeout(() => request.end(body.subarray(1000)), 300);
      });
    });
    expect(status).toBe(200);
    expect(await exited).toBe(0);
    expect(first.logs.join('\n')).toContain('VSS server stopped');

    const second = await serve({ VSS_DATA_DIR: dataDir });
    expect(messages(second.logs)).toContain('opening storage');
    expect(messages(second.logs)).not.toContain('creating the embedded database (a first start takes 10-15 s)');
    // A second server on the same directory would lose the first one's writes: refused.
    const intruder = await runCli(['serve'], { VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_AUTH: 'noop', VSS_DATA_DIR: dataDir });
    expect(intruder.code).toBe(1);
    const intruderLines = intruder.stderr.trim().split('\n');
    expect(intruderLines).toHaveLength(1);
    expect(intruderLines[0]).toMatch(new RegExp(`^ldk-vss: cannot start on pglite .* from VSS_DATA_DIR: data directory .* is in use by process ${second.child.pid} `));
    const again = new TestClient(second.url, 'cli');
    expect((await again.get('persisted')).version).toBe(1n);
    expect((await again.get('late')).version).toBe(1n);
    expect((await again.get('global_version')).version).toBe(1n);
    const secondExit = new Promise<number | null>((resolve) => second.child.on('exit', resolve));
    second.child.kill('SIGINT');
    expect(await secondExit).toBe(0);
  });

  /** Starts a put whose body is held back; resolves its status (or `cut`) once the rest is sent with `finish()`. */
  function heldPut(url: string): { finish(): void; outcome: Promise<number | 'cut'> } {
    const body = Buffer.from(vss.PutObjectRequest.encode({ storeId: 'sig', transactionItems: [keyValue('held', 0n, new Uint8Array(10_000))] }).finish());
    let finish!: () => void;
    const outcome = new Promise<number | 'cut'>((resolve) => {
      const request = http.request(`${url}/putObjects`, { method: 'POST', headers: { 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      request.on('error', () => resolve('cut'));
      request.write(body.subarray(0, 100));
      finish = () => request.end(body.subarray(100));
    });
    return { finish, outcome };
  }

  /** Resolves when the server logs `message`. */
  function logged(child: ChildProcess, message: string): Promise<void> {
    return new Promise((resolve) => {
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        if (line.includes(message)) resolve();
      });
    });
  }

  it('a signal delivered twice at once (Ctrl-C on `npm start`: from the terminal and forwarded by npm) still finishes in-flight requests and exits 0', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ldk-vss-cli-'));
    dirs.push(dataDir);
    const { child, url } = await serve({ VSS_DATA_DIR: dataDir });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const put = heldPut(url);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const shuttingDown = logged(child, 'shutting down');
    child.kill('SIGINT');
    await shuttingDown;
    // The copy npm forwards arrives while the shutdown waits for the held request.
    child.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 200));
    put.finish();
    expect(await put.outcome).toBe(200);
    expect(await exited).toBe(0);
  });

  it('a second signal well after the first exits at once with 1, cutting what is still in flight', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ldk-vss-cli-'));
    dirs.push(dataDir);
    const { child, url } = await serve({ VSS_DATA_DIR: dataDir, VSS_SHUTDOWN_GRACE_MS: '600000' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const put = heldPut(url);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const shuttingDown = logged(child, 'shutting down');
    child.kill('SIGTERM');
    await shuttingDown;
    await new Promise((resolve) => setTimeout(resolve, REPEATED_SIGNAL_MS + 500));
    child.kill('SIGTERM');
    expect(await exited).toBe(1);
    expect(await put.outcome).toBe('cut');
  });
});

describe('ldk-vss serve stopped while starting', () => {
  /**
   * A data directory locked by a server elsewhere (another host sharing the volume): a starting
   * server cannot check it by pid, so it waits for it to go stale, logging that it waits. That
   * holds startup at a known point for as long as the test needs.
   */
  async function lockedElsewhere(): Promise<{ dataDir: string; lock: string; text: string }> {
    const dataDir = await mkdtemp(join(tmpdir(), 'ldk-vss-cli-'));
    dirs.push(dataDir);
    const lock = join(dataDir, DATA_DIR_LOCK_FILE);
    const text = JSON.stringify({ pid: 4242, host: 'elsewhere.example', token: 'f'.repeat(32), since: new Date().toISOString() });
    await writeFile(lock, text);
    return { dataDir, lock, text };
  }

  /** Spawns `serve` and resolves once it logs that it waits for the lock. */
  async function startWaiting(env: Record<string, string>): Promise<{ child: ChildProcess; stdout: string[]; stderr: string[]; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }> {
    const child = startCli(['serve'], { VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_AUTH: 'noop', ...env });
    children.push(child);
    const stdout: string[] = [];
    const stderr: string[] = [];
    child.stderr?.on('data', (chunk) => stderr.push(String(chunk)));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        stdout.push(line);
        if (line.includes('cannot be checked from here; waiting')) resolve();
      });
      void exited.then((how) => reject(new Error(`serve exited (${JSON.stringify(how)}) before waiting for the lock: ${stdout.join('\n')} ${stderr.join('')}`)));
    });
    return { child, stdout, stderr, exited };
  }

  it('a signal while the storage opens stops the server once it is open: exit 0, database complete, lock released', async () => {
    const { dataDir, lock } = await lockedElsewhere();
    const { child, stdout, exited } = await startWaiting({ VSS_DATA_DIR: dataDir });
    child.kill('SIGTERM');
    // The other holder goes away: startup continues (PGlite creates the database), then stops.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await rm(lock);
    expect(await exited).toEqual({ code: 0, signal: null });
    const messages = stdout.map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(messages.some((msg) => msg.startsWith('signal while starting: stopping once the storage is open'))).toBe(true);
    expect(messages).toContain('VSS server stopped');
    // The database was created to the end, and the lock released for the next start.
    expect((await readFile(join(dataDir, 'PG_VERSION'), 'utf8')).trim()).toMatch(/^\d+$/);
    await expect(readFile(lock, 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a storage still not open when the grace period ends: exit 1 with one line saying so, the other holder\'s lock untouched', async () => {
    const { dataDir, lock, text } = await lockedElsewhere();
    const { child, stderr, exited } = await startWaiting({ VSS_DATA_DIR: dataDir, VSS_SHUTDOWN_GRACE_MS: '300' });
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: 1, signal: null });
    const lines = stderr.join('').trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^ldk-vss: stopped by SIGINT while starting on pglite .* from VSS_DATA_DIR: not started within the grace period \(300 ms, VSS_SHUTDOWN_GRACE_MS\)$/);
    expect(await readFile(lock, 'utf8')).toBe(text);
  });
});
