/**
 * Transport and retry settings under failure: a caller's abort of a request that waits for a
 * free socket (nodeHttpFetch with maxSockets), nodeHttpFetch options that node:http would turn
 * into a hang or a per-request failure, and retry policies whose delays a timer cannot honour.
 * Real HTTP on loopback.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  InternalServerError,
  MaxTotalDelayRetryPolicy,
  NO_RETRY,
  nodeHttpFetch,
  retry,
  retryPolicyFromSettings,
  vssClientFromConfig,
  VssClient,
  VssClientError,
  type FetchFunction,
  type RetryPolicy,
} from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import { errorReply, mockFetch } from './mock-vss.js';

let silent: Server;
let silentUrl: string;

beforeAll(async () => {
  // Reads requests and never answers.
  silent = createServer((req) => req.resume());
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/vss`;
});

afterAll(async () => {
  silent?.closeAllConnections();
  await new Promise<void>((resolve) => (silent ? silent.close(() => resolve()) : resolve()));
});

describe('nodeHttpFetch with a socket limit', () => {
  it("the caller's abort ends a request waiting for a free socket at once, not when the socket frees", async () => {
    const transport = nodeHttpFetch({ maxSockets: 1 });
    let sent = 0;
    // node:http queues a request in its agent as soon as it is created, so once the second fetch
    // has been called that request is waiting for the socket the first one holds.
    const fetch: FetchFunction = (url, init) => {
      sent += 1;
      return transport(url, init);
    };
    const client = new VssClient(silentUrl, { fetch, retryPolicy: NO_RETRY, timeoutMs: 60_000 });
    const blockerAbort = new AbortController();
    let blockerSettled = false;
    const blocker = client.deleteObject({ storeId: 's' }, { signal: blockerAbort.signal }).catch((e: unknown) => e).finally(() => (blockerSettled = true));
    const queuedAbort = new AbortController();
    const queued = client.deleteObject({ storeId: 's' }, { signal: queuedAbort.signal }).catch((e: unknown) => e);
    while (sent < 2) await new Promise((resolve) => setTimeout(resolve, 1));
    queuedAbort.abort();
    const error = await queued;
    expect(error).toBeInstanceOf(VssClientError);
    expect((error as VssClientError).reason).toBe('aborted');
    // The socket it waited for is still taken by the unanswered request.
    expect(blockerSettled).toBe(false);
    blockerAbort.abort();
    expect(((await blocker) as VssClientError).reason).toBe('aborted');
  });

  it('refuses option values node:http would take as "never connect" or fail on every request', () => {
    for (const maxSockets of [0, -3, 1.5, NaN]) expect(() => nodeHttpFetch({ maxSockets })).toThrow(RangeError);
    for (const idleSocketTimeoutMs of [-1, NaN, Infinity, 2 ** 31]) expect(() => nodeHttpFetch({ idleSocketTimeoutMs })).toThrow(RangeError);
    expect(() => nodeHttpFetch({ maxSockets: Infinity, idleSocketTimeoutMs: 0 })).not.toThrow();
    expect(() => nodeHttpFetch({ maxSockets: 8, idleSocketTimeoutMs: 1_000 })).not.toThrow();
  });
});

describe('retry policies whose delays a timer cannot honour', () => {
  const failing = () => Promise.reject(new InternalServerError('down'));
  /** A sleep that ends a loop that keeps going (a policy bug would otherwise spin for ever). */
  const boundedSleep = () => {
    let sleeps = 0;
    return async () => {
      sleeps += 1;
      if (sleeps > 3) throw new Error('still retrying after 3 sleeps');
    };
  };

  const returning = (delay: number): RetryPolicy => ({ nextDelay: () => delay });
  it.each([
    ['NaN', returning(NaN)],
    ['-5', returning(-5)],
    ['Infinity', returning(Infinity)],
    ["'10' (a string)", returning('10' as unknown as number)],
    // NaN would also poison the accumulated delay, so no total-delay cap could end the loop.
    ['NaN under a total-delay cap', new MaxTotalDelayRetryPolicy(returning(NaN), 1_000)],
  ])('a policy returning %s fails with a RangeError after one attempt, keeping the error as cause', async (_label, policy) => {
    let attempts = 0;
    const error = await retry(
      () => {
        attempts += 1;
        return failing();
      },
      policy,
      { sleep: boundedSleep() },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    expect((error as RangeError).cause).toBeInstanceOf(InternalServerError);
    expect(attempts).toBe(1);
  });

  it('the client passes the RangeError through, after one request', async () => {
    const { fetch, requests } = mockFetch(() => errorReply(500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'down'));
    const client = new VssClient('http://vss.invalid/vss', { fetch, retryPolicy: { nextDelay: () => -1 }, sleep: boundedSleep() });
    await expect(client.getObject({ storeId: 's', key: 'k' })).rejects.toBeInstanceOf(RangeError);
    expect(requests).toHaveLength(1);
  });

  it('settings that would retry without end and without waiting are refused', () => {
    const endless = { baseDelayMs: 0, maxAttempts: 0, maxTotalDelayMs: 1_000, maxJitterMs: 0 };
    expect(() => retryPolicyFromSettings(endless)).toThrow(RangeError);
    expect(() => vssClientFromConfig({ baseUrl: 'http://vss.invalid/vss', retry: endless })).toThrow(RangeError);
    // Any of the three bounds it: a cap on attempts, or delays that add up to the total cap.
    expect(() => retryPolicyFromSettings({ ...endless, maxAttempts: 3 })).not.toThrow();
    expect(() => retryPolicyFromSettings({ ...endless, baseDelayMs: 1 })).not.toThrow();
    expect(() => retryPolicyFromSettings({ ...endless, maxJitterMs: 1 })).not.toThrow();
  });
});
