/**
 * `npm run demo` end to end: the real script in its own process (embedded PGlite server,
 * two wallets, payments, a crash mid-payment, a restore from VSS, more payments), checked
 * through its printed summary and its exit code.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { paymentOutcome, runDemo, type DemoSummary } from '../../harness/demo.js';
import { WalletFleet } from '../../harness/wallets.js';

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

  it('rejects a bad option with a clear message and a non-zero exit', async () => {
    const { code, stderr } = await runDemoProcess(['--payments', 'zero']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/--payments must be a positive integer/);
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

  it('waits for the interrupted payment to have an outcome: neither side done yet is not an outcome', () => {
    expect(paymentOutcome({ sent: false, claimed: false, failed: false })).toBeUndefined();
    expect(paymentOutcome({ sent: false, claimed: true, failed: false })).toBeUndefined();
    expect(paymentOutcome({ sent: true, claimed: true, failed: false })).toBe('completed');
    expect(paymentOutcome({ sent: false, claimed: false, failed: true })).toBe('failed');
  });
});
