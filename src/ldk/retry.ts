/**
 * Retry policy for persistence writes. A wallet must keep trying through an outage (its
 * channels stay safely frozen meanwhile) but must stop at once on errors that retrying
 * cannot fix and that signal possible data loss (another writer, a rolled-back server).
 */
import {
  ConcurrentWriterError,
  DataIntegrityError,
  InvalidKeyError,
  InvalidValueError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreClosedError,
} from '../store/errors.js';
import { isPermanentVssError } from '../client/retry.js';
import { MAX_TIMEOUT_MS } from '../client/http.js';
import { CorruptStateError } from './errors.js';

export interface BackoffOptions {
  /** First delay after a failure. Default 100 ms. */
  initialDelayMs?: number;
  /** Upper bound of a single delay. Default 10 s. */
  maxDelayMs?: number;
  /** Growth factor per attempt. Default 2. */
  factor?: number;
}

/** Longest delay a Node timer honours: a longer one (or NaN) fires after 1 ms (the client's limit). */
export const MAX_TIMER_MS = MAX_TIMEOUT_MS;

/**
 * Throws a RangeError for backoff settings that would not wait between retries: a first delay
 * of 0 (or NaN) and a factor below 1 retry at once, and a cap past `MAX_TIMER_MS` becomes a
 * 1 ms timer once the delay grows that far. Through an outage each of these floods the server
 * and the log instead of backing off.
 */
export function validateBackoff(options: BackoffOptions = {}): void {
  const initial = options.initialDelayMs ?? 100;
  const max = options.maxDelayMs ?? 10_000;
  const factor = options.factor ?? 2;
  if (!(initial > 0 && initial <= MAX_TIMER_MS)) throw new RangeError(`backoff.initialDelayMs must be a number of milliseconds from above 0 to ${MAX_TIMER_MS}, got ${initial}`);
  if (!(max >= initial && max <= MAX_TIMER_MS)) throw new RangeError(`backoff.maxDelayMs must be from initialDelayMs (${initial}) to ${MAX_TIMER_MS} ms, got ${max}`);
  if (!(Number.isFinite(factor) && factor >= 1)) throw new RangeError(`backoff.factor must be a finite number >= 1, got ${factor}`);
}

/** Delay before retry number `attempt` (1-based), with up to 20% random jitter. */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const initial = options.initialDelayMs ?? 100;
  const max = options.maxDelayMs ?? 10_000;
  const factor = options.factor ?? 2;
  // Capped at what a timer honours even for settings that were not validated.
  const base = Math.min(max, MAX_TIMER_MS, initial * factor ** Math.max(0, attempt - 1));
  return base * (0.8 + Math.random() * 0.2);
}

/**
 * True for errors worth retrying (network, timeouts, 5xx, authentication that may refresh).
 * False for errors that mean the data or the store's ownership is in question (another
 * writer, a rolled-back server, undecryptable or undecodable data) or that no retry can fix
 * (an invalid request, an incompatible server, a closed store); those are surfaced, never
 * retried.
 */
export function isTransientStoreError(err: unknown): boolean {
  // VssStore reports the client's errors as a StoreIOError caused by them: look down the chain,
  // or an invalid request (400/413) or an incompatible server would be retried forever.
  for (let current: unknown = err, depth = 0; current !== undefined && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    if (isPermanent(current)) return false;
    if (!(current instanceof Error)) break;
  }
  return true;
}

function isPermanent(err: unknown): boolean {
  return (
    err instanceof ConcurrentWriterError ||
    err instanceof RollbackDetectedError ||
    err instanceof DataIntegrityError ||
    err instanceof CorruptStateError ||
    err instanceof InvalidKeyError ||
    err instanceof InvalidValueError ||
    err instanceof StoreClosedError ||
    // A key that is gone stays gone: a read of it cannot succeed by retrying.
    err instanceof KeyNotFoundError ||
    // The client's own rule: conflicts, invalid requests, missing keys and an incompatible
    // server (not a proxy's header-less 5xx while the server is down) are permanent.
    isPermanentVssError(err)
  );
}

/** Resolves after `ms`, or early (without error) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
