/**
 * Request admission under bad configuration: library options and environment values that the
 * rate limiter cannot apply are refused at startup with a typed error naming the option and the
 * accepted range, instead of failing every request later (a 500, or a 429 forever).
 */
import { describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { loadServeConfig } from '../../src/server/config.js';
import { ServerConfigError, startVssServer } from '../../src/server/index.js';
import { TokenBuckets, type RateLimitOptions, type RateLimitRule } from '../../src/server/rate-limit.js';
import { configError, send } from './helpers.js';

const getGlobalVersion = vss.GetObjectRequest.encode({ key: 'global_version' }).finish();

async function startError(options: Parameters<typeof startVssServer>[0]): Promise<unknown> {
  return startVssServer(options).then(
    async (server) => {
      await server.close();
      return undefined;
    },
    (error: unknown) => error,
  );
}

describe('rate-limit rules the token buckets cannot apply', () => {
  it.each<[string, RateLimitRule, RegExp]>([
    // Under 1 no request is ever granted: every one got 429 with "Retry-After: 1", forever.
    ['a limit under one request', { limit: 0.5, windowMs: 1000 }, /^rateLimit\.perUser: limit must be an integer from 1 to \d+ \(got 0\.5\)$/],
    ['an infinite limit', { limit: Infinity, windowMs: 1000 }, /^rateLimit\.perUser: limit must be an integer/],
    // The bucket never refilled and the 429 said "Retry-After: Infinity".
    ['an infinite window', { limit: 1, windowMs: Infinity }, /^rateLimit\.perUser: windowMs must be a positive number of milliseconds up to \d+ \(got Infinity\)$/],
  ])('%s is refused by startVssServer with a ServerConfigError', async (_name, rule, message) => {
    const error = await startError({ auth: { kind: 'noop' }, rateLimit: { perUser: rule } });
    expect(error).toBeInstanceOf(ServerConfigError);
    expect((error as Error).message).toMatch(message);
    expect(() => new TokenBuckets(rule)).toThrow(RangeError);
  });

  it('a count past 2^53 in VSS_RATE_LIMIT is refused naming the variable and the range', () => {
    const error = configError({ VSS_RATE_LIMIT: `ip=${'9'.repeat(400)}/s` });
    expect(error.variable).toBe('VSS_RATE_LIMIT');
    expect(error.message).toMatch(/limit must be an integer from 1 to 9007199254740991/);
    expect((loadServeConfig({ VSS_RATE_LIMIT: '9007199254740991/hour' }).options.rateLimit as RateLimitOptions).perIp).toEqual({ limit: 9007199254740991, windowMs: 3_600_000 });
  });

  it('the same target twice in VSS_RATE_LIMIT is a conflict, not last-wins', () => {
    const error = configError({ VSS_RATE_LIMIT: 'user=100/s, ip=1000/min, user=5/s' });
    expect(error.variable).toBe('VSS_RATE_LIMIT');
    expect(error.message).toBe('VSS_RATE_LIMIT: user= is given twice');
    expect(configError({ VSS_RATE_LIMIT: 'ip=1/s,IP=2/s' }).message).toBe('VSS_RATE_LIMIT: ip= is given twice');
  });
});

describe('trustProxy', () => {
  it.each([-1, 1.5, Number.NaN])('%s is refused by startVssServer instead of failing every rate-limited request with a 500', async (trustProxy) => {
    const error = await startError({ auth: { kind: 'noop' }, rateLimit: 'ip=5/s', trustProxy });
    expect(error).toBeInstanceOf(ServerConfigError);
    expect((error as Error).message).toMatch(/^trustProxy must be true, false or a number of proxies/);
  });

  it.each([true, false, 0, 2])('%s is accepted and per-IP limits keep answering', async (trustProxy) => {
    const server = await startVssServer({ auth: { kind: 'noop' }, rateLimit: 'ip=5/s', trustProxy });
    try {
      const response = await send(`${server.url}/getObject`, getGlobalVersion, { headers: { 'x-forwarded-for': '198.51.100.1, 192.0.2.9' } });
      expect(response.status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('VSS_TRUST_PROXY that is not a number says that true and false are accepted too', () => {
    const error = configError({ VSS_TRUST_PROXY: 'yes' });
    expect(error.message).toBe('VSS_TRUST_PROXY: "yes" is neither true, false nor a number of proxies from 0 to 100');
    expect(configError({ VSS_TRUST_PROXY: '101' }).message).toBe('VSS_TRUST_PROXY: 101 is out of range (0 to 100)');
  });

  it('VSS_TRUST_PROXY without a per-IP limit is warned about (it has no effect)', () => {
    const warned = (env: Record<string, string>) => loadServeConfig(env).warnings.filter((line) => line.startsWith('VSS_TRUST_PROXY'));
    expect(warned({ VSS_TRUST_PROXY: '1' })).toEqual([expect.stringMatching(/^VSS_TRUST_PROXY is set but has no effect: only a per-IP limit/)]);
    expect(warned({ VSS_TRUST_PROXY: 'true', VSS_RATE_LIMIT: 'user=10/s' })).toHaveLength(1);
    expect(warned({ VSS_TRUST_PROXY: '1', VSS_RATE_LIMIT: '10/s' })).toEqual([]);
    expect(warned({ VSS_TRUST_PROXY: '1', VSS_RATE_LIMIT: 'ip=10/s' })).toEqual([]);
    expect(warned({ VSS_TRUST_PROXY: '0' })).toEqual([]);
  });
});

describe('integer variables that are not numbers', () => {
  it.each([
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_POOL_SIZE: 'ten' }, 'VSS_PSQL_POOL_SIZE: "ten" is not an integer from 1 to 1000'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_POOL_SIZE: '-1' }, 'VSS_PSQL_POOL_SIZE: "-1" is not an integer from 1 to 1000'],
    [{ VSS_MAX_REQUEST_BODY_SIZE: '1e6' }, 'VSS_MAX_REQUEST_BODY_SIZE: "1e6" is not an integer from 0 to 1073741824'],
    [{ VSS_SHUTDOWN_GRACE_MS: '10s' }, 'VSS_SHUTDOWN_GRACE_MS: "10s" is not an integer from 0 to 3600000'],
  ])('%j: the error names the variable and the accepted range', (env, message) => {
    expect(configError(env).message).toBe(message);
  });
});
