/**
 * Retry-After: the client waits at least what a 429/5xx reply asks before its next attempt,
 * within the retry policy's budget and the sanity cap, and ignores unusable values. Tested
 * against a loopback HTTP server speaking the VSS wire format, and against the real server
 * from src/server with a rate-limit rule.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_RETRY_SETTINGS,
  defaultRetryPolicy,
  ExponentialBackoffRetryPolicy,
  InternalServerError,
  InvalidRequestError,
  MAX_RETRY_AFTER_MS,
  retry,
  retryPolicyFromSettings,
  timerSleep,
  VersionMismatchError,
  VssClient,
  VssClientError,
  type FetchFunction,
  type RetryPolicy,
  type Sleep,
} from '../../src/client/index.js';
import { parseRetryAfter } from '../../src/client/http.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';

const bytes = (s: string) => new TextEncoder().encode(s);

/** A reply of the loopback server. */
interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Send no vss-protocol-version header (a proxy's page). */
  noProtocolHeader?: boolean;
}

const okGet = (): Reply => ({
  status: 200,
  body: vss.GetObjectResponse.encode({ value: keyValue('k', 1n, bytes('v')) }).finish(),
});
const errorBody = (code: vss.ErrorCode, message: string) => vss.ErrorResponse.encode({ errorCode: code, message }).finish();
const rateLimited = (retryAfter: string | undefined, extra: Record<string, string> = {}): Reply => ({
  status: 429,
  headers: { ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }), ...extra },
  body: errorBody(vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'Rate limit exceeded'),
});

let open: Server[] = [];
afterEach(async () => {
  await Promise.all(open.map((server) => new Promise((resolve) => server.close(resolve))));
  open = [];
});

/** A loopback VSS stand-in answering the n-th request (0-based) with `script(n)`. */
async function loopback(script: (index: number) => Reply): Promise<{ baseUrl: string; requests: () => number }> {
  let count = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      const reply = script(count++);
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...reply.headers };
      if (!reply.noProtocolHeader) headers['vss-protocol-version'] = '0';
      res.writeHead(reply.status, headers);
      res.end(reply.body ?? new Uint8Array());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.closeIdleConnections?.();
  open.push(server);
  return { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/vss`, requests: () => count };
}

/** A sleep that records each delay and returns at once. */
function recordingSleep(): { sleep: Sleep; delays: number[] } {
  const delays: number[] = [];
  return { sleep: async (ms) => void delays.push(ms), delays };
}

/** The default schedule without jitter, so delays are exact. */
const noJitter = (overrides: Partial<typeof DEFAULT_RETRY_SETTINGS> = {}) => retryPolicyFromSettings({ ...DEFAULT_RETRY_SETTINGS, maxJitterMs: 0, ...overrides });

describe('parsing Retry-After', () => {
  const now = Date.UTC(2026, 0, 15, 12, 0, 0);

  it('reads delta-seconds, with surrounding whitespace', () => {
    expect(parseRetryAfter('120', null, now)).toBe(120_000);
    expect(parseRetryAfter(' 3 ', null, now)).toBe(3000);
    expect(parseRetryAfter('0', null, now)).toBe(0);
    // A bare number is seconds, never a year (Date.parse reads "1" as 2001).
    expect(parseRetryAfter('1', null, now)).toBe(1000);
  });

  it('ignores absent, negative, fractional, listed and garbage values', () => {
    for (const value of [null, '', '-5', '1.5', '1e3', '120, 120', 'soon', 'Infinity', '0x10', 'Fri, 31 Dec 1999']) {
      expect(parseRetryAfter(value, null, now)).toBeUndefined();
    }
  });

  it('bounds a huge delta to a safe integer instead of Infinity', () => {
    expect(parseRetryAfter('9'.repeat(400), null, now)).toBe(Number.MAX_SAFE_INTEGER);
    expect(parseRetryAfter('99999999999999999999', null, now)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('reads the three HTTP-date forms, relative to now', () => {
    expect(parseRetryAfter('Thu, 15 Jan 2026 12:00:30 GMT', null, now)).toBe(30_000);
    expect(parseRetryAfter('Thursday, 15-Jan-26 12:01:00 GMT', null, now)).toBe(60_000);
    expect(parseRetryAfter('Thu Jan 15 12:00:05 2026', null, now)).toBe(5000);
    expect(parseRetryAfter('Thu Jan  1 12:00:05 2026', null, now)).toBe(0); // in the past
  });

  it('takes an HTTP-date relative to the reply Date header (the server clock) when usable', () => {
    const skewedNow = now + 3_600_000; // the client's clock is an hour ahead
    expect(parseRetryAfter('Thu, 15 Jan 2026 12:00:30 GMT', 'Thu, 15 Jan 2026 12:00:00 GMT', skewedNow)).toBe(30_000);
    // An unusable Date header falls back to the client's clock.
    expect(parseRetryAfter('Thu, 15 Jan 2026 12:00:30 GMT', 'yesterday', now)).toBe(30_000);
  });

  it('a date in the past means no wait; an impossible date is ignored', () => {
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:49:37 GMT', null, now)).toBe(0);
    expect(parseRetryAfter('Sat, 31 Feb 2026 12:00:00 GMT', null, now)).toBeUndefined();
    expect(parseRetryAfter('Thu, 15 Jan 2026 24:00:00 GMT', null, now)).toBeUndefined();
    expect(parseRetryAfter('Thu, 15 Foo 2026 12:00:00 GMT', null, now)).toBeUndefined();
  });
});

describe('the client honours Retry-After (loopback server)', () => {
  it('waits the 429 reply’s Retry-After before the next attempt, not the 10 ms backoff', async () => {
    const server = await loopback((i) => (i === 0 ? rateLimited('2') : okGet()));
    const { sleep, delays } = recordingSleep();
    const seen: unknown[] = [];
    const client = new VssClient(server.baseUrl, { sleep, onRetry: ({ error }) => seen.push(error) });
    const reply = await client.getObject({ storeId: 's', key: 'k' });
    expect(reply.value?.key).toBe('k');
    expect(server.requests()).toBe(2);
    expect(delays).toHaveLength(1);
    // At least the server's 2 s, plus at most the default policy's 100 ms of jitter.
    expect(delays[0]).toBeGreaterThanOrEqual(2000);
    expect(delays[0]).toBeLessThan(2100);
    expect(seen[0]).toBeInstanceOf(InternalServerError);
    expect(seen[0]).toMatchObject({ status: 429, retryAfterMs: 2000, serverMessage: 'Rate limit exceeded' });
  });

  it('honours an HTTP-date on a 503, relative to the reply Date header', async () => {
    const served = new Date(Date.UTC(2026, 0, 15, 12, 0, 0)).toUTCString();
    const until = new Date(Date.UTC(2026, 0, 15, 12, 0, 7)).toUTCString();
    const server = await loopback((i) =>
      i === 0
        ? { status: 503, headers: { 'retry-after': until, date: served }, body: errorBody(vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'maintenance') }
        : okGet(),
    );
    const { sleep, delays } = recordingSleep();
    await new VssClient(server.baseUrl, { sleep, retryPolicy: noJitter() }).getObject({ storeId: 's', key: 'k' });
    expect(delays).toEqual([7000]);
  });

  it('fails at once with the server error when the wait would pass the total-delay budget', async () => {
    const server = await loopback(() => rateLimited('5'));
    const { sleep, delays } = recordingSleep();
    const client = new VssClient(server.baseUrl, { sleep, retryPolicy: noJitter({ maxTotalDelayMs: 1000 }) });
    const outcome = await client.getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(InternalServerError);
    expect(outcome).toMatchObject({ status: 429, retryAfterMs: 5000 });
    // No hammering while the limit window is closed, and no sleep past the budget.
    expect(server.requests()).toBe(1);
    expect(delays).toEqual([]);
  });

  it('counts the waits against the budget: the default policy gives up once 180 s would be passed', async () => {
    const server = await loopback(() => rateLimited('60'));
    const { sleep, delays } = recordingSleep();
    const outcome = await new VssClient(server.baseUrl, { sleep, retryPolicy: noJitter() }).getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(InternalServerError);
    // 60 + 60 + 60 = 180 s fits; a fourth wait would not.
    expect(delays).toEqual([60_000, 60_000, 60_000]);
    expect(server.requests()).toBe(4);
  });

  it('a huge Retry-After is capped: the default policy fails at once, an unbounded one waits the cap', async () => {
    const server = await loopback((i) => (i <= 1 ? rateLimited('9'.repeat(400)) : okGet()));
    const { sleep, delays } = recordingSleep();
    const outcome = await new VssClient(server.baseUrl, { sleep, retryPolicy: defaultRetryPolicy() }).getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(InternalServerError);
    expect((outcome as InternalServerError).retryAfterMs).toBe(Number.MAX_SAFE_INTEGER);
    expect(delays).toEqual([]);

    const unbounded = new ExponentialBackoffRetryPolicy(10).withMaxAttempts(3);
    await new VssClient(server.baseUrl, { sleep, retryPolicy: unbounded }).getObject({ storeId: 's', key: 'k' });
    expect(delays).toEqual([MAX_RETRY_AFTER_MS]);
  });

  it('unusable values are ignored: the policy schedule applies and nothing breaks', async () => {
    for (const value of ['soon', '-5', '1.5', '', 'Sat, 31 Feb 2026 12:00:00 GMT']) {
      const server = await loopback((i) => (i < 2 ? rateLimited(value) : okGet()));
      const { sleep, delays } = recordingSleep();
      const seen: unknown[] = [];
      await new VssClient(server.baseUrl, { sleep, retryPolicy: noJitter(), onRetry: ({ error }) => seen.push(error) }).getObject({ storeId: 's', key: 'k' });
      expect(delays).toEqual([10, 30]);
      expect((seen[0] as InternalServerError).retryAfterMs).toBeUndefined();
    }
  });

  it('Retry-After never makes a permanent error retryable', async () => {
    const server = await loopback(() => ({
      status: 503,
      headers: { 'retry-after': '1' },
      body: errorBody(vss.ErrorCode.INVALID_REQUEST_EXCEPTION, 'bad'),
    }));
    const { sleep, delays } = recordingSleep();
    const outcome = await new VssClient(server.baseUrl, { sleep }).getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(InvalidRequestError);
    expect(server.requests()).toBe(1);
    expect(delays).toEqual([]);
  });

  it('a Retry-After on a 4xx other than 429 is not a wait hint', async () => {
    const server = await loopback((i) =>
      i === 0 ? { status: 401, headers: { 'retry-after': '30' }, body: errorBody(vss.ErrorCode.AUTH_EXCEPTION, 'expired') } : okGet(),
    );
    const { sleep, delays } = recordingSleep();
    await new VssClient(server.baseUrl, { sleep, retryPolicy: noJitter() }).getObject({ storeId: 's', key: 'k' });
    expect(delays).toEqual([10]);
  });

  it('a proxy’s 503 without the protocol header is waited out too', async () => {
    const server = await loopback((i) =>
      i === 0 ? { status: 503, noProtocolHeader: true, headers: { 'retry-after': '4', 'content-type': 'text/html' }, body: bytes('<h1>down</h1>') } : okGet(),
    );
    const { sleep, delays } = recordingSleep();
    const seen: unknown[] = [];
    await new VssClient(server.baseUrl, { sleep, retryPolicy: noJitter(), onRetry: ({ error }) => seen.push(error) }).getObject({ storeId: 's', key: 'k' });
    expect(seen[0]).toBeInstanceOf(VersionMismatchError);
    expect(seen[0]).toMatchObject({ fromIntermediary: true, retryAfterMs: 4000 });
    expect(delays).toEqual([4000]);
  });

  it('an abort during a Retry-After wait ends the call at once, with nothing more sent', async () => {
    // 60 s is within the default budget: the client sleeps it on a real timer.
    const server = await loopback(() => rateLimited('60'));
    const controller = new AbortController();
    const client = new VssClient(server.baseUrl, {
      sleep: timerSleep,
      onRetry: () => setTimeout(() => controller.abort(new Error('user left')), 20),
    });
    const outcome = await client.putObjects({ storeId: 's', transactionItems: [keyValue('k', 0n, bytes('v'))] }, { signal: controller.signal }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(VssClientError);
    expect((outcome as VssClientError).reason).toBe('aborted');
    expect(server.requests()).toBe(1);
  });
});

describe('the retry loop and Retry-After', () => {
  it('a custom policy that returns shorter delays still waits the hint', async () => {
    const short: RetryPolicy = { nextDelay: ({ attemptsMade }) => (attemptsMade < 3 ? 1 : undefined) };
    const hinted = () => Object.assign(new InternalServerError('slow down'), { retryAfterMs: 1500 });
    const delays: number[] = [];
    const seenContext: Array<number | undefined> = [];
    const outcome = await retry(
      async () => {
        throw hinted();
      },
      { nextDelay: (context) => (seenContext.push(context.retryAfterMs), short.nextDelay(context)) },
      { sleep: async (ms) => void delays.push(ms) },
    ).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(InternalServerError);
    expect(delays).toEqual([1500, 1500]);
    expect(seenContext).toEqual([1500, 1500, 1500]);
  });

  it('a Retry-After of 0 adds no wait', async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(
      async () => {
        calls += 1;
        if (calls === 1) throw Object.assign(new InternalServerError('x'), { retryAfterMs: 0 });
        return 'ok';
      },
      new ExponentialBackoffRetryPolicy(10).withMaxAttempts(3),
      { sleep: async (ms) => void delays.push(ms) },
    );
    expect(delays).toEqual([10]);
  });
});

describe('against the real server with a rate limit', () => {
  it('a rate-limited call waits the announced window and then succeeds, without hammering', async () => {
    const server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, rateLimit: { perIp: { limit: 1, windowMs: 1000 } }, port: 0 });
    try {
      let sent = 0;
      const fetch: FetchFunction = (input, init) => {
        sent += 1;
        return globalThis.fetch(input, init);
      };
      const delays: number[] = [];
      // Real waits: the server's bucket refills on its own clock.
      const sleep: Sleep = (ms, signal) => (delays.push(ms), timerSleep(ms, signal));
      const client = new VssClient(server.url, { fetch, sleep, retryPolicy: noJitter() });
      await client.putObjects({ storeId: 'rl', transactionItems: [keyValue('k', 0n, bytes('v'))] });
      const reply = await client.getObject({ storeId: 'rl', key: 'k' });
      expect(new TextDecoder().decode(reply.value?.value ?? new Uint8Array())).toBe('v');
      // The get was refused once with Retry-After: 1, then waited a whole second and passed.
      expect(delays).toEqual([1000]);
      expect(sent).toBe(3);
    } finally {
      await server.close();
    }
  });

  it('with a budget shorter than the window, fails at once with the 429', async () => {
    const server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, rateLimit: { perIp: { limit: 1, windowMs: 60_000 } }, port: 0 });
    try {
      let sent = 0;
      const fetch: FetchFunction = (input, init) => {
        sent += 1;
        return globalThis.fetch(input, init);
      };
      const { sleep, delays } = recordingSleep();
      const client = new VssClient(server.url, { fetch, sleep, retryPolicy: noJitter({ maxTotalDelayMs: 10_000 }) });
      await client.deleteObject({ storeId: 'rl', keyValue: keyValue('k', -1n, bytes('')) });
      const outcome = await client.getObject({ storeId: 'rl', key: 'k' }).catch((e: unknown) => e);
      expect(outcome).toBeInstanceOf(InternalServerError);
      expect(outcome).toMatchObject({ status: 429, retryAfterMs: 60_000 });
      expect(sent).toBe(2);
      expect(delays).toEqual([]);
    } finally {
      await server.close();
    }
  });
});
