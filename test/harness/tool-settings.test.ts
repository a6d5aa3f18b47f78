/**
 * The benchmarks and the stress tool refuse a bad setting before doing any work: one line naming
 * the variable, exit code 2 (before, some printed NaN rows after a minute of measuring).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { integerListSetting, integerSetting } from '../../harness/tool-settings.js';

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

describe('integer settings', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.restoreAllMocks();
  });

  /** What the setting refused with (its stderr line), or the value it took. */
  function read(setting: () => unknown): unknown {
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (written.push(String(chunk)), true));
    vi.spyOn(process, 'exit').mockImplementation((code) => {
      throw new Error(`exit ${code}: ${written.join('').trim()}`);
    });
    try {
      return setting();
    } catch (err) {
      return (err as Error).message;
    }
  }

  // In-process, so a value wrongly taken never starts a benchmark. Number() reads these as
  // 16, 1000, 3 and 2: only decimal digits are a count.
  it.each([
    ['0x10', 1, 'exit 2: SETTING must be a whole number ≥ 1, got "0x10"'],
    ['1e3', 0, 'exit 2: SETTING must be a whole number ≥ 0, got "1e3"'],
    ['0b11', 1, 'exit 2: SETTING must be a whole number ≥ 1, got "0b11"'],
    ['2.0', 1, 'exit 2: SETTING must be a whole number ≥ 1, got "2.0"'],
    [' 42 ', 1, 42],
    ['0', 0, 0],
  ] as const)('%j (min %d) gives %j', (raw, min, expected) => {
    vi.stubEnv('SETTING', raw);
    expect(read(() => integerSetting('SETTING', 7, min))).toEqual(expected);
  });

  it('refuses a list item that is not decimal digits, naming the setting', () => {
    vi.stubEnv('SETTING', '16,1e2');
    expect(read(() => integerListSetting('SETTING', [1]))).toBe('exit 2: SETTING must be a whole number ≥ 1, got "1e2"');
  });
});
