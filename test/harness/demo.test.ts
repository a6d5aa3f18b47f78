/**
 * `npm run demo` end to end: the real script in its own process (embedded PGlite server,
 * two wallets, payments, a crash mid-payment, a restore from VSS, more payments), checked
 * through its printed summary and its exit code.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { paymentOutcome, parseDemoArgs, runDemo, DemoError, type DemoSummary } from '../../harness/demo.js';
import { WalletFleet } from '../../harness/wallets.js';
import { startVssServer } from '../../src/server/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

function runDemoProcess(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'harness/demo.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('npm run demo', () => {
  it('runs with a small payment count, exits 0 and prints a summary whose figures add up', async () => {
    const { code, stdout, stderr } = await runDemoProcess(['--payments', '3', '--json']);
    expect(stderr).not.toMatch(/demo failed/);
    expect(code).toBe(0);
    expect(stdout).toMatch(/alice CRASHED mid-payment/);
    expect(stdout).toMatch(/alice RESTORED from VSS with only her seed and store id/);
    expect(stdout).toMatch(/Summary \(embedded PGlite\)/);
    expect(stdout).toMatch(/persist latency p50 \/ p99/);
    const summary = JSON.parse(stdout.trim().split('\n').at(-1)!) as DemoSummary;
    // 3 before the crash, the interrupted one (completed after the restore), 5 after.
    expect(summary.paymentsFailed).toBe(0);
    expect(summary.interruptedPayment).toBe('completed');
    expect(summary.paymentsSucceeded).toBe(9);
    expect(summary.forceCloses).toBe(0);
    expect(summary.balancesAgree).toBe(true);
    // About five monitor updates per payment on each side, plus the opening ones.
    expect(summary.persisted.monitorUpdatesPersisted).toBeGreaterThanOrEqual(9 * 5 * 2);
    expect(summary.persisted.monitorDeltaWrites).toBeGreaterThan(0);
    expect(summary.persisted.managerWrites).toBeGreaterThan(0);
    expect(summary.persisted.bytesWritten).toBeGreaterThan(summary.persisted.managerWrites * 1_000);
    expect(summary.persistLatencyMs.samples).toBeGreaterThan(0);
    expect(summary.persistLatencyMs.p99).toBeGreaterThanOrEqual(summary.persistLatencyMs.p50);
    expect(summary.restore.monitors).toBe(1);
    expect(summary.restore.totalMs).toBeGreaterThanOrEqual(summary.restore.readMs);
  }, 180_000);

  it.each([
    [['--payments', 'zero'], '--payments must be a positive integer, got "zero"'],
    // Node's parseArgs words this one (newer Node versions add a hint after it).
    [['--bogus'], "Unknown option '--bogus'"],
    [['--auth', 'none'], "--auth applies to --server-url only (the demo's own server uses signature auth)"],
  ])('%j is a usage error: one line pointing at --help, exit 2 (as ldk-vss inspect), before anything starts', async (args, message) => {
    const { code, stdout, stderr } = await runDemoProcess(args);
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.startsWith(`demo: ${message}`)).toBe(true);
    expect(lines[0]!.endsWith(' (npm run demo -- --help lists the options)')).toBe(true);
    expect(code).toBe(2);
    expect(stdout).toBe('');
  });
});

/** Whether util-linux `script` is here to give the demo a terminal (a pseudo-TTY). */
function scriptAvailable(): boolean {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('npm run demo interrupted (Ctrl-C) midway', () => {
  it('SIGINT during the payments: one line on stderr and exit 130', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'harness/demo.ts', '--payments', '1000'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes('Channel open')) resolve();
      }),
    );
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: 130, signal: null });
    expect(stderr.trim().split('\n').at(-1)).toBe('demo interrupted (SIGINT)');
    expect(stderr).not.toMatch(/\n\s+at /);
  }, 120_000);

  const terminal = scriptAvailable();
  it.skipIf(!terminal)(`Ctrl-C on a terminal while the progress bar draws: the cursor and line wrapping come back${terminal ? '' : ' — SKIPPED: no script(1) on PATH for a pseudo-terminal'}`, async () => {
    // `script` runs the demo on a pseudo-terminal; a ^C written to it is the terminal's Ctrl-C.
    const child = spawn('script', ['-qfec', `${process.execPath} --import tsx harness/demo.ts --payments 1000`, '/dev/null'], { cwd: root, stdio: ['pipe', 'pipe', 'ignore'] });
    let screen = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        screen += d.toString('latin1');
        if (screen.includes('Payments |')) resolve();
      }),
    );
    child.stdin.write('\x03');
    expect(await exited).toBe(130);
    const hidden = screen.lastIndexOf('\x1B[?25l');
    expect(hidden).toBeGreaterThan(-1);
    expect(screen.lastIndexOf('\x1B[?25h')).toBeGreaterThan(hidden);
    expect(screen.lastIndexOf('\x1B[?7h')).toBeGreaterThan(screen.lastIndexOf('\x1B[?7l'));
    expect(screen).toContain('demo interrupted (SIGINT)');
  }, 120_000);
});

describe('demo command line', () => {
  it('rejects before starting anything: a count that is not a whole number, named as given', () => {
    for (const bad of ['2.5x', '1e2', '0', '-3', '']) {
      expect(() => parseDemoArgs([`--payments=${bad}`])).toThrow(`--payments must be a positive integer, got "${bad}"`);
    }
    expect(parseDemoArgs(['-n', '12'])).toEqual({ help: false, json: false, options: { payments: 12, serverUrl: undefined, auth: undefined, postgresUrl: undefined } });
  });

  it('rejects options that would be ignored and a server URL that is not one', () => {
    // --auth was only used with --server-url: with the demo's own server, `--auth none` failed
    // later with the server's "Authorization header not found"; --postgres was silently ignored.
    expect(() => parseDemoArgs(['--auth', 'none'])).toThrow(/--auth applies to --server-url only/);
    expect(() => parseDemoArgs(['--server-url', 'http://127.0.0.1:8080/vss', '--postgres', 'postgres://x@127.0.0.1/db'])).toThrow(/cannot be combined with --server-url/);
    expect(() => parseDemoArgs(['--server-url', 'localhost:8080/vss'])).toThrow(/--server-url must be a URL such as http:\/\/127.0.0.1:8080\/vss, got "localhost:8080\/vss"/);
    expect(() => parseDemoArgs(['--postgres', 'notaurl'])).toThrow(/--postgres must be a URL such as postgres:\/\/.*, got "notaurl"/);
    expect(parseDemoArgs(['--postgres', 'postgresql://u@127.0.0.1:5432/d'])).toMatchObject({ options: { postgresUrl: 'postgresql://u@127.0.0.1:5432/d' } });
    expect(() => parseDemoArgs(['--auth', 'jwt', '--server-url', 'http://127.0.0.1:8080/vss'])).toThrow('--auth must be sigs or none, got "jwt"');
    expect(parseDemoArgs(['--server-url', 'http://127.0.0.1:8080/vss', '--auth', 'none', '--json'])).toMatchObject({
      json: true,
      options: { serverUrl: 'http://127.0.0.1:8080/vss', auth: 'none' },
    });
  });
});

describe('runDemo', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('closes the server it started when the wallets cannot even be created', async () => {
    vi.spyOn(WalletFleet, 'create').mockRejectedValue(new Error('no LDK today'));
    let printed = '';
    const out = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        printed += chunk.toString();
        callback();
      },
    });
    await expect(runDemo({ payments: 1, out })).rejects.toThrow('no LDK today');
    const url = /VSS server: (\S+)/.exec(printed)?.[1];
    expect(url).toBeDefined();
    // Nothing answers there any more: the server was closed, not left running in this process.
    await expect(fetch(`${url}/getObject`, { method: 'POST', body: new Uint8Array(0), signal: AbortSignal.timeout(5_000) })).rejects.toMatchObject({
      cause: { code: 'ECONNREFUSED' },
    });
  }, 60_000);

  it('says which server could not start when the PostgreSQL given does not answer', async () => {
    // A port nobody listens on: before, the whole message was the driver's "connect ECONNREFUSED".
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const out = new Writable({ write: (_chunk, _encoding, callback) => callback() });
    const run = runDemo({ payments: 1, postgresUrl: `postgres://postgres@127.0.0.1:${port}/vss_demo`, out });
    await expect(run).rejects.toBeInstanceOf(DemoError);
    await expect(run).rejects.toThrow(/^cannot start the demo's VSS server on PostgreSQL: .*ECONNREFUSED/);
  }, 60_000);

  it('fails with a message naming the server when the VSS server dies mid-run, instead of hanging', async () => {
    // The user's own server (--server-url), stopped once the channel is open: every write from
    // then on is refused. Before, each payment failed silently after its timeout and the crash
    // step then waited forever for a monitor update that could never become durable.
    const server = await startVssServer({ backend: 'pglite', logLevel: 'silent' });
    let printed = '';
    let stopping: Promise<void> | undefined;
    const out = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        printed += chunk.toString();
        if (stopping === undefined && /Channel open/.test(printed)) stopping = server.close();
        callback();
      },
    });
    try {
      // Looks like a terminal to the progress bar, which only then hides and shows the cursor.
      Object.assign(out, { isTTY: true, columns: 100 });
      const run = runDemo({ payments: 3, serverUrl: server.url, out, progressBar: true });
      await expect(run).rejects.toBeInstanceOf(DemoError);
      await expect(run).rejects.toThrow(/not (been )?durable on the VSS server.*ECONNREFUSED|ECONNREFUSED.*VSS server/s);
      expect(printed).not.toMatch(/CRASHED/);
      // The progress bar hid the cursor; a failed run shows it again (ANSI "show cursor" last).
      expect(printed.lastIndexOf('\x1b[?25h')).toBeGreaterThan(printed.lastIndexOf('\x1b[?25l'));
    } finally {
      await (stopping ?? server.close());
    }
  }, 120_000);

  it('waits for the interrupted payment to have an outcome: neither side done yet is not an outcome', () => {
    expect(paymentOutcome({ sent: false, claimed: false, failed: false })).toBeUndefined();
    expect(paymentOutcome({ sent: false, claimed: true, failed: false })).toBeUndefined();
    expect(paymentOutcome({ sent: true, claimed: true, failed: false })).toBe('completed');
    expect(paymentOutcome({ sent: false, claimed: false, failed: true })).toBe('failed');
  });
});
