/**
 * `npm run stress:payments` as a user meets it: a bad or unreachable STRESS_DATABASE_URL is one
 * line, and Ctrl-C (or a kill) midway leaves no database behind on the PostgreSQL server (before,
 * an interrupted run kept its `ldk_vss_stress_<pid>` database for good).
 */
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the tool as `npm run stress:payments` does (tsx). With `interruptWith`, sends that signal
 * once stdout shows the run has started paying (after `beforeInterrupt`, if given, has run);
 * `onPid` learns the process id (its database name).
 */
function runStress(
  env: Record<string, string>,
  options: { interruptWith?: NodeJS.Signals; beforeInterrupt?: () => Promise<void>; onPid?: (pid: number) => void } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'harness/stress-payments.ts'], {
      cwd: ROOT,
      env: { ...process.env, STRESS_DATABASE_URL: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    options.onPid?.(child.pid!);
    let stdout = '';
    let stderr = '';
    let signalled = false;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (options.interruptWith && !signalled && /^stress:payments {2}setup /m.test(stdout)) {
        signalled = true;
        const signal = options.interruptWith;
        void (options.beforeInterrupt?.() ?? Promise.resolve()).then(
          () => child.kill(signal),
          (error: unknown) => {
            child.kill('SIGKILL');
            reject(error);
          },
        );
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('stress:payments: STRESS_DATABASE_URL', () => {
  it.each([
    // Never echoed: a URL, or a mistyped one, may carry a password.
    ['postgres//user:secret@db', 'STRESS_DATABASE_URL must be a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/postgres, got a value that is not a URL (not shown: it may hold a password)'],
    ['http://user:secret@127.0.0.1/db', 'STRESS_DATABASE_URL must be a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/postgres, got a URL of scheme http:'],
  ])('%s is refused before any work, in one line, exit 2', async (value, message) => {
    const result = await runStress({ STRESS_DATABASE_URL: value });
    expect(result.stderr.trim()).toBe(message);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
  });

  it('a PostgreSQL server that does not answer: one line naming the setting, exit 1, no stack trace', async () => {
    const port = await closedPort();
    const result = await runStress({ STRESS_DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/postgres`, STRESS_ROUNDS: '1' });
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^stress:payments: cannot start the VSS server on PostgreSQL \(STRESS_DATABASE_URL\): .*ECONNREFUSED/);
  }, 60_000);
});

describe.skipIf(!TEST_DATABASE_URL)(`stress:payments interrupted${TEST_DATABASE_URL ? '' : ' (SKIPPED: TEST_DATABASE_URL is not set)'}`, () => {
  let database: string | undefined;

  async function databaseExists(name: string): Promise<boolean> {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    try {
      return (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
    } finally {
      await client.end();
    }
  }

  afterEach(async () => {
    // A failing run must not leave its database to the next one either.
    if (database === undefined) return;
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    await client.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`).finally(() => client.end());
    database = undefined;
  });

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('%s while paying: drops its database, says so in one line, exits %i', async (signal, code) => {
    let existedWhilePaying: boolean | undefined;
    const result = await runStress(
      { STRESS_DATABASE_URL: TEST_DATABASE_URL!, STRESS_ROUNDS: '40' },
      {
        interruptWith: signal,
        onPid: (pid) => (database = `ldk_vss_stress_${pid}`),
        beforeInterrupt: async () => void (existedWhilePaying = await databaseExists(database!)),
      },
    );
    expect(result.stdout).toMatch(/^stress:payments {2}setup linked, 40 rounds .* PostgreSQL$/m);
    // The run had its database (so "gone" below is about that database, not a wrong name).
    expect(database).toMatch(/^ldk_vss_stress_\d+$/);
    expect(existedWhilePaying).toBe(true);
    expect(await databaseExists(database!)).toBe(false);
    expect({ code: result.code, signal: result.signal }).toEqual({ code, signal: null });
    expect(result.stderr.trim()).toBe(`stress:payments interrupted (${signal}): stopping its VSS server and dropping its database`);
  }, 120_000);
});
