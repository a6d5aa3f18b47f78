/**
 * Edge cases of the retry loop and of retry settings: overflowing backoff, aborts that a sleep
 * ignores, aborts before the first attempt, and config values that are not settings.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_RETRY_SETTINGS,
  ExponentialBackoffRetryPolicy,
  InternalServerError,
  isPermanentVssError,
  retry,
  RetryHookError,
  retryPolicyFromSettings,
  VersionMismatchError,
  VssClient,
  VssClientError,
  vssClientFromConfig,
  type RetrySettings,
} from '../../src/client/index.js';
import { errorReply, mockFetch } from './mock-vss.js';

const BASE = 'http://h/vss';

afterEach(() => {
  vi.useRealTimers();
});

describe('backoff arithmetic', () => {
  it('a base delay of 0 stays 0 after 1024 failures (0 · 2^1024 would be NaN)', () => {
    const policy = new ExponentialBackoffRetryPolicy(0);
    expect(policy.nextDelay({ attemptsMade: 1024, accumulatedDelayMs: 0, error: new Error('x') })).toBe(0);
    expect(policy.nextDelay({ attemptsMade: 5000, accumulatedDelayMs: 0, error: new Error('x') })).toBe(0);
  });

  it('settings with base 0, jitter and no attempt cap retry until the total budget and end with the last error', async () => {
    let calls = 0;
    const policy = retryPolicyFromSettings({ baseDelayMs: 0, maxAttempts: 0, maxTotalDelayMs: 1000, maxJitterMs: 1 }, () => 0.5);
    const outcome = await retry(
      async () => {
        calls += 1;
        throw new InternalServerError('down');
      },
      policy,
      { sleep: async () => undefined },
    ).catch((e: unknown) => e);
    // Sleeps of 0.5 ms: after 2001 of them (1000.5 ms) the budget is spent.
    expect(outcome).toBeInstanceOf(InternalServerError);
    expect(calls).toBe(2002);
  });

  it('max attempts 1 means a single attempt and no sleep', async () => {
    let calls = 0;
    const sleeps: number[] = [];
    const outcome = await retry(
      async () => {
        calls += 1;
        throw new InternalServerError('down');
      },
      retryPolicyFromSettings({ ...DEFAULT_RETRY_SETTINGS, maxAttempts: 1 }),
      { sleep: async (ms) => void sleeps.push(ms) },
    ).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(InternalServerError);
    expect(calls).toBe(1);
    expect(sleeps).toEqual([]);
  });

  it('retries a version mismatch only when it came from an intermediary', () => {
    expect(isPermanentVssError(new VersionMismatchError(undefined))).toBe(true);
    expect(isPermanentVssError(new VersionMismatchError(undefined, { status: 502 }))).toBe(false);
  });
});

describe('cancellation', () => {
  it('an already aborted signal makes no attempt and rejects with its reason', async () => {
    let calls = 0;
    const reason = new Error('stopped before start');
    const outcome = await retry(
      async () => {
        calls += 1;
        throw new Error('down');
      },
      new ExponentialBackoffRetryPolicy(1).withMaxAttempts(3),
      { signal: AbortSignal.abort(reason) },
    ).catch((e: unknown) => e);
    expect(outcome).toBe(reason);
    expect(calls).toBe(0);
  });

  it('an abort ends the call at once even when the injected sleep ignores the signal', async () => {
    vi.useFakeTimers();
    const failing = mockFetch(() => errorReply(500, 3, 'down'));
    // A plausible hand-written sleep that does not take the signal.
    const client = new VssClient(BASE, { fetch: failing.fetch, sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) });
    const controller = new AbortController();
    let settled: unknown = 'pending';
    const promise = client.getObject({ storeId: 's', key: 'k' }, { signal: controller.signal }).then(
      () => (settled = 'resolved'),
      (e: unknown) => (settled = e),
    );
    await vi.advanceTimersByTimeAsync(1);
    expect(failing.requests).toHaveLength(1);
    controller.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(settled).toBeInstanceOf(VssClientError);
    expect((settled as VssClientError).reason).toBe('aborted');
    await vi.runAllTimersAsync();
    await promise;
    expect(failing.requests).toHaveLength(1);
  });

  it('an abort from the onRetry hook is not waited out by a sleep that ignores the signal', async () => {
    const controller = new AbortController();
    const reason = new Error('stop from hook');
    let calls = 0;
    const outcome = await retry(
      async () => {
        calls += 1;
        throw new Error('down');
      },
      new ExponentialBackoffRetryPolicy(1000).withMaxAttempts(5),
      {
        signal: controller.signal,
        onRetry: () => controller.abort(reason),
        sleep: () => new Promise<void>(() => undefined), // never ends on its own
      },
    ).catch((e: unknown) => e);
    expect(outcome).toBe(reason);
    expect(calls).toBe(1);
  });

  it('a sleep that throws synchronously rejects the call with its error and the attempt error', async () => {
    const boom = new Error('sleep broke');
    const down = new Error('down');
    const outcome = await retry(
      async () => {
        throw down;
      },
      new ExponentialBackoffRetryPolicy(1).withMaxAttempts(3),
      {
        signal: new AbortController().signal,
        sleep: () => {
          throw boom;
        },
      },
    ).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    expect(outcome).toMatchObject({ hook: 'sleep', cause: boom, attemptError: down, attemptsMade: 1 });
  });
});

describe('retry settings from a config', () => {
  it("refuses a retry value that is neither 'none' nor settings, naming the field", () => {
    for (const value of ['None', 'off', 5, true]) {
      expect(() => vssClientFromConfig({ baseUrl: BASE, retry: value as never })).toThrow(TypeError);
      expect(() => vssClientFromConfig({ baseUrl: BASE, retry: value as never })).toThrow(/^retry must be 'none' or settings/);
    }
    expect(() => vssClientFromConfig({ baseUrl: BASE, retry: 'None' as never })).toThrow(/got "None"/);
  });

  it('refuses negative, NaN and string settings with the field name and the value as given', () => {
    const base: RetrySettings = { baseDelayMs: 10, maxAttempts: 3, maxTotalDelayMs: 1000, maxJitterMs: 0 };
    const cases: [Partial<Record<keyof RetrySettings, unknown>>, RegExp][] = [
      [{ baseDelayMs: -1 }, /^baseDelayMs must be a finite number >= 0, got -1$/],
      [{ baseDelayMs: '10' }, /^baseDelayMs must be a finite number >= 0, got "10"$/],
      [{ maxAttempts: '3' }, /^maxAttempts must be an integer >= 0, got "3"$/],
      [{ maxAttempts: Number.NaN }, /^maxAttempts must be an integer >= 0, got NaN$/],
      [{ maxTotalDelayMs: Number.POSITIVE_INFINITY }, /^maxTotalDelayMs must be a finite number >= 0, got Infinity$/],
      [{ maxJitterMs: '' }, /^maxJitterMs must be a finite number >= 0, got ""$/],
    ];
    for (const [change, message] of cases) {
      expect(() => vssClientFromConfig({ baseUrl: BASE, retry: { ...base, ...change } as RetrySettings })).toThrow(message);
    }
  });
});
