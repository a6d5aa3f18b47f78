import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ConflictError,
  DEFAULT_RETRY_SETTINGS,
  defaultRetryPolicy,
  ExponentialBackoffRetryPolicy,
  InternalServerError,
  InvalidRequestError,
  NoSuchKeyError,
  retry,
  retryPolicyFromSettings,
  timerSleep,
  VersionMismatchError,
  VssClientError,
  AuthError,
  type RetryPolicy,
} from '../../src/client/index.js';

/** Runs `retry` with a recording, instant sleep; returns calls, delays and the outcome. */
async function run(policy: RetryPolicy, failures: number | 'always', error: () => unknown = () => new Error('boom')) {
  let calls = 0;
  const delays: number[] = [];
  const outcome = await retry(
    async () => {
      calls += 1;
      if (failures === 'always' || calls <= failures) throw error();
      return 'ok';
    },
    policy,
    { sleep: async (ms) => void delays.push(ms) },
  ).catch((e: unknown) => e);
  return { calls, delays, outcome };
}

describe('retry policies (reference semantics)', () => {
  it('backs off base·(2^n − 1): 1, 3, 7, 15 × base', async () => {
    const { delays } = await run(new ExponentialBackoffRetryPolicy(10).withMaxAttempts(5), 'always');
    expect(delays).toEqual([10, 30, 70, 150]);
  });

  it('a function failing twice then succeeding makes 3 calls', async () => {
    const { calls, outcome } = await run(new ExponentialBackoffRetryPolicy(1).withMaxAttempts(5), 2);
    expect(calls).toBe(3);
    expect(outcome).toBe('ok');
  });

  it('max attempts counts every call including the first', async () => {
    const { calls, outcome } = await run(new ExponentialBackoffRetryPolicy(1).withMaxAttempts(3), 'always');
    expect(calls).toBe(3);
    expect(outcome).toBeInstanceOf(Error);
  });

  it('max attempts 0 means no cap (stopped here by the total-delay cap)', async () => {
    const { calls } = await run(new ExponentialBackoffRetryPolicy(1).withMaxAttempts(0).withMaxTotalDelay(1000), 'always');
    // Sleeps 1,3,…,255 sum to 502; the next (511) would reach 1013 > 1000: 8 sleeps, 9 calls.
    expect(calls).toBe(9);
  });

  it('stops when the next delay would exceed the total: base 100, max 350 → 2 calls', async () => {
    const { calls, delays } = await run(new ExponentialBackoffRetryPolicy(100).withMaxTotalDelay(350), 'always');
    expect(calls).toBe(2);
    expect(delays).toEqual([100]);
  });

  it('adds jitter after the inner decision, in [0, max)', async () => {
    const randoms = [0, 0.5, 0.999];
    const policy = new ExponentialBackoffRetryPolicy(10).withMaxAttempts(4).withMaxJitter(100, () => randoms.shift()!);
    const { delays } = await run(policy, 'always');
    expect(delays).toEqual([10, 30 + 50, 70 + 99.9]);
  });

  it('jitter outside a total cap is not counted by that cap for the current delay', async () => {
    // Cap 10: the first delay (10) passes the cap check; jitter is added afterwards.
    const policy = new ExponentialBackoffRetryPolicy(10).withMaxTotalDelay(10).withMaxJitter(5, () => 0.5);
    const { delays, calls } = await run(policy, 'always');
    expect(delays).toEqual([12.5]);
    expect(calls).toBe(2);
  });

  it('a filter stops retries for matching errors only', async () => {
    const policy = new ExponentialBackoffRetryPolicy(1).withMaxAttempts(5).skipRetryOnError((e) => e instanceof RangeError);
    expect((await run(policy, 'always', () => new RangeError('x'))).calls).toBe(1);
    expect((await run(policy, 'always', () => new TypeError('x'))).calls).toBe(5);
  });

  it('rejects nonsensical parameters', () => {
    expect(() => new ExponentialBackoffRetryPolicy(-1)).toThrow(RangeError);
    expect(() => new ExponentialBackoffRetryPolicy(1).withMaxAttempts(1.5)).toThrow(RangeError);
    expect(() => new ExponentialBackoffRetryPolicy(1).withMaxJitter(Number.NaN)).toThrow(RangeError);
  });
});

describe('default retry policy (LDK Node settings)', () => {
  it('makes exactly 14 attempts for a persistent retryable error, with the documented sleeps', async () => {
    const { calls, delays } = await run(retryPolicyFromSettings(DEFAULT_RETRY_SETTINGS, () => 0), 'always', () => new InternalServerError('down'));
    expect(calls).toBe(14);
    expect(delays).toEqual([10, 30, 70, 150, 310, 630, 1270, 2550, 5110, 10230, 20470, 40950, 81910]);
    expect(delays.reduce((a, b) => a + b)).toBe(163_690);
  });

  it('never retries NoSuchKey, InvalidRequest, Conflict or VersionMismatch', async () => {
    for (const make of [
      () => new NoSuchKeyError('x'),
      () => new InvalidRequestError('x'),
      () => new ConflictError('x'),
      () => new VersionMismatchError(undefined),
    ]) {
      expect((await run(defaultRetryPolicy(), 'always', make)).calls).toBe(1);
    }
  });

  it('retries network, 5xx and auth/header-provider failures', async () => {
    for (const make of [
      () => new VssClientError('network', 'x'),
      () => new VssClientError('timeout', 'x'),
      () => new InternalServerError('x'),
      () => new AuthError('x', { fromHeaderProvider: true }),
    ]) {
      expect((await run(defaultRetryPolicy(), 3, make)).calls).toBe(4);
    }
  });
});

describe('retry with the real timer sleep under fake timers', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Retries an operation that always fails, with the real timer sleep; records when each attempt ran. */
  function failingWithTimes(policy: Parameters<typeof retry>[1]): { attemptTimes: number[]; promise: Promise<unknown> } {
    const attemptTimes: number[] = [];
    const promise = retry(
      async () => {
        attemptTimes.push(Date.now());
        throw new Error('down');
      },
      policy,
      { sleep: timerSleep },
    ).catch((e: unknown) => e);
    return { attemptTimes, promise };
  }

  it('sleeps exactly the policy delays', async () => {
    vi.useFakeTimers();
    const { attemptTimes, promise } = failingWithTimes(new ExponentialBackoffRetryPolicy(100).withMaxAttempts(4));
    await vi.runAllTimersAsync();
    await promise;
    const start = attemptTimes[0];
    expect(attemptTimes.map((t) => t - start)).toEqual([0, 100, 400, 1100]);
  });

  it('a delay longer than a timer can wait (2^31 - 1 ms) is slept in full, not after ~1 ms', async () => {
    vi.useFakeTimers();
    // An uncapped backoff reaches such delays: base 1 s passes 2^31 ms at the 22nd failure.
    const { attemptTimes, promise } = failingWithTimes({ nextDelay: ({ attemptsMade }) => (attemptsMade < 2 ? 3_000_000_000 : undefined) });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(attemptTimes).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(3_000_000_000 - 1_001);
    expect(attemptTimes).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(attemptTimes).toHaveLength(2);
    expect(attemptTimes[1] - attemptTimes[0]).toBe(3_000_000_000);
    expect(((await promise) as Error).message).toBe('down');
    // An abort still ends a long sleep in any of its steps.
    const controller = new AbortController();
    const sleeping = timerSleep(5_000_000_000, controller.signal).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(2 ** 31 + 10);
    controller.abort(new Error('stop'));
    expect(((await sleeping) as Error).message).toBe('stop');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an abort during a sleep ends the loop without another attempt', async () => {
    vi.useFakeTimers();
    const controller = new AbortController();
    let calls = 0;
    const promise = retry(
      async () => {
        calls += 1;
        throw new Error('down');
      },
      new ExponentialBackoffRetryPolicy(1000).withMaxAttempts(10),
      { sleep: timerSleep, signal: controller.signal },
    ).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(500);
    controller.abort(new Error('stop'));
    await vi.runAllTimersAsync();
    expect(((await promise) as Error).message).toBe('stop');
    expect(calls).toBe(1);
  });
});
