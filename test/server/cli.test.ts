/**
 * The `ldk-vss` command as a user runs it (spawned through tsx): usage and exit codes, one
 * clear stderr line naming the variable for bad configuration, and a real `serve` on the
 * embedded backend that keeps its data across restarts and shuts down gracefully.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
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
    // A misspelt variable does not stop the server, but its log says so.
    const first = await serve({ VSS_DATA_DIR: dataDir, VSS_PSQL_ADRESS: 'db:5432' });
    // Every log line is one JSON object (pino).
    expect(first.logs.every((line) => line.trim() === '' || typeof JSON.parse(line) === 'object')).toBe(true);
    expect(first.logs.join('\n')).toContain('VSS_PSQL_ADRESS is set but not read by ldk-vss serve; did you mean VSS_PSQL_ADDRESS?');
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
