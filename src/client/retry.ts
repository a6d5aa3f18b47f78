/**
 * Retry policies composed like vss-client-ng's `util::retry`: a base schedule wrapped by
 * decorators, where the outermost wrapper decides first. Delays are in milliseconds.
 */
import { ConflictError, InvalidRequestError, NoSuchKeyError, RetryHookError, VersionMismatchError, VssClientError, VssError } from './errors.js';
import { MAX_TIMEOUT_MS } from './http.js';

/** What a policy sees after a failed attempt. */
export interface RetryContext {
  /** Attempts made so far, including the one that just failed (1 after the first failure). */
  readonly attemptsMade: number;
  /** Sum of the delays slept so far (time spent inside attempts is not counted). */
  readonly accumulatedDelayMs: number;
  readonly error: unknown;
  /**
   * The least wait the server asked for with `Retry-After` (the error's `retryAfterMs`, capped at
   * `MAX_RETRY_AFTER_MS`), or undefined. The loop never waits less before the next attempt; the
   * built-in policies count it against their budget (`withMaxTotalDelay` then gives up at once
   * rather than sleep past the budget).
   */
  readonly retryAfterMs?: number;
}

/**
 * The longest `Retry-After` wait the retry loop honours (5 minutes): a longer one (a misconfigured
 * proxy's "Retry-After: 86400") is waited for this long, then the next attempt asks again.
 */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** The capped Retry-After wait an attempt's error carries, if any. */
function retryAfterOf(error: unknown): number | undefined {
  if (!(error instanceof VssError)) return undefined;
  const ms = error.retryAfterMs;
  return typeof ms === 'number' && Number.isFinite(ms) && ms > 0 ? Math.min(ms, MAX_RETRY_AFTER_MS) : undefined;
}

/** Decides whether and after how long to retry. `undefined` means give up. */
export interface RetryPolicy {
  nextDelay(context: RetryContext): number | undefined;
}

/** A policy with the reference's combinators; each returns a new policy wrapping this one. */
export abstract class ComposableRetryPolicy implements RetryPolicy {
  abstract nextDelay(context: RetryContext): number | undefined;

  /** Stops once `maxAttempts` attempts (including the first) were made; 0 means no cap. */
  withMaxAttempts(maxAttempts: number): MaxAttemptsRetryPolicy {
    return new MaxAttemptsRetryPolicy(this, maxAttempts);
  }

  /** Stops when the next delay would push the slept total past `maxTotalDelayMs`. */
  withMaxTotalDelay(maxTotalDelayMs: number): MaxTotalDelayRetryPolicy {
    return new MaxTotalDelayRetryPolicy(this, maxTotalDelayMs);
  }

  /** Adds a uniform random delay in [0, maxJitterMs) to every retry. */
  withMaxJitter(maxJitterMs: number, random: () => number = Math.random): JitteredRetryPolicy {
    return new JitteredRetryPolicy(this, maxJitterMs, random);
  }

  /** Never retries an error for which `skip(error)` is true. */
  skipRetryOnError(skip: (error: unknown) => boolean): FilteredRetryPolicy {
    return new FilteredRetryPolicy(this, skip);
  }
}

/** A setting's value for an error message: a string shows its quotes, so "10" is not read as the number 10. */
function shown(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function checkNonNegative(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0, got ${shown(value)}`);
}

/**
 * base · (2^n − 1) after the n-th failure: 1, 3, 7, 15 … times base (the reference's schedule),
 * or the server's Retry-After wait when that is longer.
 */
export class ExponentialBackoffRetryPolicy extends ComposableRetryPolicy {
  constructor(readonly baseDelayMs: number) {
    super();
    checkNonNegative('baseDelayMs', baseDelayMs);
  }
  nextDelay({ attemptsMade, retryAfterMs }: RetryContext): number {
    // 0 · 2^n is NaN once 2^n overflows (n ≥ 1024), which a base of 0 with jitter and no attempt
    // cap reaches; the loop would then end with a RangeError instead of the VSS error.
    const scheduled = this.baseDelayMs === 0 ? 0 : this.baseDelayMs * (2 ** attemptsMade - 1);
    // Raised here, at the base, so that the total-delay cap and the jitter above apply to it.
    return Math.max(scheduled, retryAfterMs ?? 0);
  }
}

export class MaxAttemptsRetryPolicy extends ComposableRetryPolicy {
  constructor(
    readonly inner: RetryPolicy,
    readonly maxAttempts: number,
  ) {
    super();
    if (!Number.isInteger(maxAttempts) || maxAttempts < 0) throw new RangeError(`maxAttempts must be an integer >= 0, got ${shown(maxAttempts)}`);
  }
  nextDelay(context: RetryContext): number | undefined {
    if (this.maxAttempts !== 0 && context.attemptsMade >= this.maxAttempts) return undefined;
    return this.inner.nextDelay(context);
  }
}

export class MaxTotalDelayRetryPolicy extends ComposableRetryPolicy {
  constructor(
    readonly inner: RetryPolicy,
    readonly maxTotalDelayMs: number,
  ) {
    super();
    checkNonNegative('maxTotalDelayMs', maxTotalDelayMs);
  }
  nextDelay(context: RetryContext): number | undefined {
    const inner = this.inner.nextDelay(context);
    if (inner === undefined) return undefined;
    // The loop waits at least the server's Retry-After whatever the inner policy says: when that
    // wait would end past the budget, give up now with the server's error instead of sleeping.
    const delay = Math.max(inner, context.retryAfterMs ?? 0);
    if (context.accumulatedDelayMs + delay > this.maxTotalDelayMs) return undefined;
    return delay;
  }
}

export class JitteredRetryPolicy extends ComposableRetryPolicy {
  constructor(
    readonly inner: RetryPolicy,
    readonly maxJitterMs: number,
    private readonly random: () => number = Math.random,
  ) {
    super();
    checkNonNegative('maxJitterMs', maxJitterMs);
  }
  nextDelay(context: RetryContext): number | undefined {
    const delay = this.inner.nextDelay(context);
    return delay === undefined ? undefined : delay + this.random() * this.maxJitterMs;
  }
}

export class FilteredRetryPolicy extends ComposableRetryPolicy {
  constructor(
    readonly inner: RetryPolicy,
    private readonly skip: (error: unknown) => boolean,
  ) {
    super();
  }
  nextDelay(context: RetryContext): number | undefined {
    return this.skip(context.error) ? undefined : this.inner.nextDelay(context);
  }
}

/** A policy that never retries. */
export const NO_RETRY: RetryPolicy = Object.freeze({ nextDelay: () => undefined });

/**
 * Errors that retrying cannot fix: the key is missing, the request is malformed, the version
 * conflicts (retrying a conditional write blindly could hide a concurrent writer), the server
 * speaks another protocol, or the base URL answers with a redirect. Everything else (network,
 * timeouts, 5xx, auth and header-provider failures, undecodable replies) is worth another
 * attempt, including a 5xx/408/429 without the protocol header (`fromIntermediary`): a proxy's
 * "502 Bad Gateway" while the server restarts is an outage, not a protocol mismatch.
 */
export function isPermanentVssError(error: unknown): boolean {
  return (
    error instanceof NoSuchKeyError ||
    error instanceof InvalidRequestError ||
    error instanceof ConflictError ||
    (error instanceof VersionMismatchError && !error.fromIntermediary) ||
    // A redirect is a wrong base URL (http → https, a moved host): every retry gets the same.
    (error instanceof VssClientError && error.reason === 'redirect')
  );
}

/** Plain-data retry settings (serializable across threads); see `retryPolicyFromSettings`. */
export interface RetrySettings {
  baseDelayMs: number;
  /** Total attempts including the first; 0 means no attempt cap (then keep maxTotalDelayMs). */
  maxAttempts: number;
  maxTotalDelayMs: number;
  maxJitterMs: number;
}

/**
 * LDK Node's policy (spec §B5): 10 ms base, 100 attempts, 180 s of total sleep, up to 100 ms
 * jitter. For a persistent failure that is 14 attempts over about 164 s, plus the attempts'
 * own time (each bounded by the client's per-attempt timeout).
 */
export const DEFAULT_RETRY_SETTINGS: Readonly<RetrySettings> = Object.freeze({
  baseDelayMs: 10,
  maxAttempts: 100,
  maxTotalDelayMs: 180_000,
  maxJitterMs: 100,
});

/** Builds Exponential → MaxAttempts → MaxTotalDelay → Jitter → skip permanent errors. */
export function retryPolicyFromSettings(settings: RetrySettings, random?: () => number): RetryPolicy {
  // With nothing to wait, the total-delay cap is never reached: without an attempt cap this
  // would hammer the server in a tight loop for as long as it fails.
  if (settings.maxAttempts === 0 && settings.baseDelayMs === 0 && settings.maxJitterMs === 0) {
    throw new RangeError('retry settings with maxAttempts 0 (no cap), baseDelayMs 0 and maxJitterMs 0 would retry without end and without waiting');
  }
  return new ExponentialBackoffRetryPolicy(settings.baseDelayMs)
    .withMaxAttempts(settings.maxAttempts)
    .withMaxTotalDelay(settings.maxTotalDelayMs)
    .withMaxJitter(settings.maxJitterMs, random)
    .skipRetryOnError(isPermanentVssError);
}

/** The client's default policy: `retryPolicyFromSettings(DEFAULT_RETRY_SETTINGS)`. */
export function defaultRetryPolicy(): RetryPolicy {
  return retryPolicyFromSettings(DEFAULT_RETRY_SETTINGS);
}

/** Sleeps for `ms`; rejects with the signal's reason if it aborts first. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/**
 * `setTimeout`-based sleep (so fake timers drive it in tests). A delay longer than a timer can
 * wait (2^31 − 1 ms) is slept in steps: `setTimeout` would fire such a delay after about 1 ms,
 * turning an uncapped exponential backoff into a tight retry loop once its delays grow past it.
 */
export const timerSleep: Sleep = (ms, signal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let remaining = ms;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const wait = (): void => {
      const step = Math.min(remaining, MAX_TIMEOUT_MS);
      remaining -= step;
      timer = setTimeout(() => {
        if (remaining > 0) return wait();
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, step);
    };
    wait();
    signal?.addEventListener('abort', onAbort, { once: true });
  });

export interface RetryOptions {
  sleep?: Sleep;
  signal?: AbortSignal;
  /** Called before each sleep; for logging and metrics. */
  onRetry?: (info: { attemptsMade: number; delayMs: number; error: unknown }) => void;
}

/**
 * Runs `operation` until it succeeds or `policy` gives up, then rethrows the last error.
 * `operation` receives the 1-based attempt number. An aborted `signal` ends the loop with its
 * reason before any further attempt, and at once during a sleep.
 *
 * An error with `retryAfterMs` (the server's Retry-After) is not retried sooner than that, up to
 * `MAX_RETRY_AFTER_MS`, whatever delay the policy returns. When the policy, the `onRetry` hook or
 * the sleep throws (other than by the signal's abort), the loop ends with a `RetryHookError`
 * holding both that error (`cause`) and the attempt's (`attemptError`).
 */
export async function retry<T>(operation: (attempt: number) => Promise<T>, policy: RetryPolicy, options: RetryOptions = {}): Promise<T> {
  const sleep = options.sleep ?? timerSleep;
  let attemptsMade = 0;
  let accumulatedDelayMs = 0;
  for (;;) {
    // An aborted call makes no (further) attempt: the signal may have been aborted before the
    // call, or just as a sleep ended.
    if (options.signal?.aborted) throw options.signal.reason;
    try {
      return await operation(attemptsMade + 1);
    } catch (error) {
      attemptsMade += 1;
      if (options.signal?.aborted) throw error;
      const retryAfterMs = retryAfterOf(error);
      let delayMs: number | undefined;
      try {
        delayMs = policy.nextDelay({ attemptsMade, accumulatedDelayMs, error, retryAfterMs });
      } catch (hookError) {
        // A filter that throws must not replace the VSS error, which is the call's real outcome.
        throw new RetryHookError('retryPolicy', error, attemptsMade, hookError);
      }
      if (delayMs === undefined) throw error;
      // A timer takes NaN or a negative delay as ~1 ms (a tight retry loop), and NaN would also
      // poison accumulatedDelayMs so that no total-delay cap could ever stop the loop.
      if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
        throw new RangeError(
          `the retry policy returned ${String(delayMs)} as the delay after attempt ${attemptsMade}: a delay is a finite number of milliseconds >= 0, or undefined to stop`,
          { cause: error },
        );
      }
      // A policy that ignores the hint (a custom one) still must not come back before the server
      // said it would listen again.
      if (retryAfterMs !== undefined && delayMs < retryAfterMs) delayMs = retryAfterMs;
      try {
        options.onRetry?.({ attemptsMade, delayMs, error });
      } catch (hookError) {
        throw new RetryHookError('onRetry', error, attemptsMade, hookError);
      }
      try {
        await sleepUnlessAborted(sleep, delayMs, options.signal);
      } catch (sleepError) {
        // An abort ends the loop with the signal's reason, as documented; anything else is the
        // injected sleep failing.
        if (options.signal?.aborted) throw sleepError;
        throw new RetryHookError('sleep', error, attemptsMade, sleepError);
      }
      accumulatedDelayMs += delayMs;
    }
  }
}

/**
 * `sleep(ms, signal)`, but rejecting with the signal's reason as soon as it aborts even if the
 * sleep does not: an injected sleep may ignore the signal (`(ms) => new Promise((r) => setTimeout(r, ms))`),
 * and an abort must not wait out a backoff of up to minutes.
 */
function sleepUnlessAborted(sleep: Sleep, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return sleep(ms);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    // An abort from the onRetry hook has already fired: no event will come.
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    const done = () => signal.removeEventListener('abort', onAbort);
    // Promise.resolve().then: a sleep that throws synchronously rejects here too (and detaches).
    Promise.resolve()
      .then(() => sleep(ms, signal))
      .then(resolve, reject)
      .finally(done);
  });
}
