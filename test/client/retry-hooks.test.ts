/**
 * A caller's retry callback that throws (a policy's skipRetryOnError filter or nextDelay, the
 * onRetry hook, an injected sleep) must not lose the VSS error it was handling: the call ends
 * with a RetryHookError holding both, and the write-outcome flags stay truthful.
 */
import { describe, expect, it } from 'vitest';
import {
  ConflictError,
  errorProvesNotApplied,
  ExponentialBackoffRetryPolicy,
  InternalServerError,
  InvalidRequestError,
  retry,
  RetryHookError,
  VssClient,
  VssClientError,
  VssError,
} from '../../src/client/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { errorReply, mockFetch } from './mock-vss.js';

const BASE = 'http://h/vss';
const instantSleep = async () => undefined;
const bytes = (s: string) => new TextEncoder().encode(s);
const put = () => ({ storeId: 's', transactionItems: [keyValue('k', 3n, bytes('v'))] });

describe('a retry filter that throws', () => {
  it('keeps the VSS error: RetryHookError with the filter error as cause and the VSS error as attemptError', async () => {
    const { fetch, requests } = mockFetch(() => errorReply(503, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'busy'));
    const bug = new TypeError('filter bug');
    const retryPolicy = new ExponentialBackoffRetryPolicy(1).withMaxAttempts(3).skipRetryOnError(() => {
      throw bug;
    });
    const outcome = await new VssClient(BASE, { fetch, retryPolicy, sleep: instantSleep }).getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    expect(outcome).toBeInstanceOf(VssError);
    const error = outcome as RetryHookError;
    expect(error.hook).toBe('retryPolicy');
    expect(error.cause).toBe(bug);
    expect(error.attemptError).toBeInstanceOf(InternalServerError);
    expect(error.attemptError).toMatchObject({ status: 503, serverMessage: 'busy' });
    expect(error.status).toBe(503);
    expect(error.attemptsMade).toBe(1);
    // Both errors are named in the message, for logs that print only that.
    expect(error.message).toContain('TypeError: filter bug');
    expect(error.message).toContain('InternalServerError: InternalServerError: busy');
    expect(requests).toHaveLength(1);
  });

  it('a conflict after an ambiguous attempt stays flagged: the caller still knows to read back', async () => {
    const { fetch } = mockFetch((_, i) =>
      i === 0 ? errorReply(503, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'lost') : errorReply(409, vss.ErrorCode.CONFLICT_EXCEPTION, 'version moved'),
    );
    const retryPolicy = new ExponentialBackoffRetryPolicy(1).withMaxAttempts(5).skipRetryOnError((e) => {
      if (e instanceof ConflictError) throw new Error('metrics label missing');
      return false;
    });
    const outcome = await new VssClient(BASE, { fetch, retryPolicy, sleep: instantSleep }).putObjects(put()).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    const error = outcome as RetryHookError;
    expect(error.attemptError).toBeInstanceOf(ConflictError);
    expect((error.attemptError as ConflictError).afterAmbiguousAttempt).toBe(true);
    expect(error.afterAmbiguousAttempt).toBe(true);
    expect(errorProvesNotApplied(error)).toBe(false);
  });

  it('a definite first rejection still proves nothing was written', async () => {
    const { fetch } = mockFetch(() => errorReply(400, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, 'bad key'));
    const retryPolicy = new ExponentialBackoffRetryPolicy(1).skipRetryOnError(() => {
      throw new Error('boom');
    });
    const outcome = await new VssClient(BASE, { fetch, retryPolicy, sleep: instantSleep }).putObjects(put()).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    expect((outcome as RetryHookError).attemptError).toBeInstanceOf(InvalidRequestError);
    expect(errorProvesNotApplied(outcome)).toBe(true);
  });
});

describe('an onRetry hook that throws', () => {
  it('after a network failure of a write: both errors kept, and the outcome is not claimed known', async () => {
    const fetch = async () => {
      throw new Error('socket hang up');
    };
    const hookError = new Error('logger closed');
    const client = new VssClient(BASE, {
      fetch,
      retryPolicy: new ExponentialBackoffRetryPolicy(1).withMaxAttempts(3),
      sleep: instantSleep,
      onRetry: () => {
        throw hookError;
      },
    });
    const outcome = await client.putObjects(put()).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    expect(outcome).toMatchObject({ hook: 'onRetry', cause: hookError });
    expect((outcome as RetryHookError).attemptError).toBeInstanceOf(VssClientError);
    expect((outcome as RetryHookError).attemptError).toMatchObject({ reason: 'network' });
    expect(errorProvesNotApplied(outcome)).toBe(false);
  });
});

describe('the generic retry loop', () => {
  it('a policy whose nextDelay throws a non-Error keeps the attempt error and names both', async () => {
    const attemptError = new Error('disk full');
    const outcome = await retry(
      async () => {
        throw attemptError;
      },
      {
        nextDelay: () => {
          throw 'not an Error';
        },
      },
    ).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    expect(outcome).toMatchObject({ hook: 'retryPolicy', cause: 'not an Error', attemptError });
    expect((outcome as RetryHookError).message).toMatch(/the retry policy threw \(not an Error\) after attempt 1 failed with Error: disk full/);
  });

  it('an abort during the sleep still ends with the signal reason, not a RetryHookError', async () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    const outcome = await retry(
      async () => {
        throw new Error('down');
      },
      new ExponentialBackoffRetryPolicy(1).withMaxAttempts(3),
      {
        signal: controller.signal,
        sleep: (_ms, signal) =>
          new Promise<void>((_, reject) => {
            signal?.addEventListener('abort', () => reject(new Error('sleep interrupted')), { once: true });
            controller.abort(reason);
          }),
      },
    ).catch((e: unknown) => e);
    expect(outcome).toBe(reason);
  });
});
