/**
 * The benchmarks and the stress tool refuse a bad setting before doing any work: one line naming
 * the variable, exit code 2 (before, some printed NaN rows after a minute of measuring).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function runTool(script: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('tool settings', () => {
  it.each([
    ['harness/stress-payments.ts', { STRESS_ROUNDS: 'abc' }, 'STRESS_ROUNDS must be a whole number ≥ 1, got "abc"'],
    ['harness/stress-payments.ts', { STRESS_SETUP: 'bogus' }, 'STRESS_SETUP must be one of linked, unlinked, payer-only, ldk-sync, got "bogus"'],
    ['bench/e2e.ts', { BENCH_LATENCY_MS: '-5' }, 'BENCH_LATENCY_MS must be a whole number ≥ 0, got "-5"'],
    ['bench/server.ts', { BENCH_CONCURRENCY: '16,x' }, 'BENCH_CONCURRENCY must be a whole number ≥ 1, got "x"'],
    ['bench/server.ts', { BENCH_OPS: 'put,del' }, 'BENCH_OPS must be a comma-separated list of put, get, got "put,del"'],
  ])('%s refuses %j before doing any work', async (script, env, message) => {
    const result = await runTool(script, env);
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(message);
    expect(result.stdout).toBe('');
  });
});
