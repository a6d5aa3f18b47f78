/**
 * Rate limiter bounds and keys: memory stays bounded however many distinct users or addresses
 * arrive within one window, and per-IP keys do not change with a proxy-appended port or with
 * the host part of an IPv6 address.
 */
import pino from 'pino';
import { Writable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { clientAddress, startVssServer } from '../../src/server/index.js';
import { DEFAULT_MAX_TRACKED_KEYS, ipRateLimitKey, MAX_NON_IP_KEY_LENGTH, TokenBuckets } from '../../src/server/rate-limit.js';
import { send } from './helpers.js';

describe('TokenBuckets memory', () => {
  it('tracks at most maxKeys keys within one window, forgetting the least recently seen', () => {
    let now = 0;
    const buckets = new TokenBuckets({ limit: 2, windowMs: 3_600_000 }, () => now, 1000);
    // A throttled key that keeps coming back stays tracked (and throttled) while others churn.
    expect(buckets.take('busy')).toBe(0);
    expect(buckets.take('busy')).toBe(0);
    for (let i = 0; i < 10_000; i++) {
      now += 1;
      expect(buckets.take(`user-${i}`)).toBe(0);
      if (i % 500 === 0) expect(buckets.take('busy')).toBeGreaterThan(0);
      expect(buckets.size).toBeLessThanOrEqual(1000);
    }
    expect(buckets.size).toBe(1000);
    expect(buckets.take('busy')).toBeGreaterThan(0);
  });

  it('has a finite default bound', () => {
    expect(DEFAULT_MAX_TRACKED_KEYS).toBeGreaterThan(0);
    const buckets = new TokenBuckets({ limit: 1, windowMs: 3_600_000 }, () => 0);
    for (let i = 0; i < DEFAULT_MAX_TRACKED_KEYS + 10; i++) buckets.take(String(i));
    expect(buckets.size).toBe(DEFAULT_MAX_TRACKED_KEYS);
  });
});

/** Heap in use after a full garbage collection. */
function heapAfterGc(): number {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
  return process.memoryUsage().heapUsed;
}

describe('per-IP keys from X-Forwarded-For entries a client writes', () => {
  it('are cut to a bounded length when they are not IP addresses', () => {
    const key = ipRateLimitKey(`${'x'.repeat(16_000)}1`);
    expect(key.length).toBeLessThanOrEqual(MAX_NON_IP_KEY_LENGTH);
    // Entries that differ only past the cut are one client, as far as the limit goes.
    expect(ipRateLimitKey(`${'x'.repeat(16_000)}2`)).toBe(key);
  });

  it('cost a bounded amount of memory when every hop is trusted, however long the header', () => {
    const buckets = new TokenBuckets({ limit: 10, windowMs: 3_600_000 });
    const before = heapAfterGc();
    const count = 20_000;
    for (let i = 0; i < count; i++) {
      // Header-sized and distinct in its first characters: a new key each time.
      const forwarded = `${i}-${'a'.repeat(8_000)}, 198.51.100.7`;
      const address = clientAddress({ socket: { remoteAddress: '127.0.0.1' }, headers: { 'x-forwarded-for': forwarded } } as never, true);
      expect(buckets.take(ipRateLimitKey(address))).toBe(0);
    }
    expect(buckets.size).toBe(count);
    // Kept whole (or as a substring, which keeps its whole header alive) this is ~160 MB.
    expect((heapAfterGc() - before) / count).toBeLessThan(1_000);
  });
});

describe('per-IP rate-limit keys', () => {
  it.each([
    ['203.0.113.9', '203.0.113.9'],
    ['203.0.113.9:41234', '203.0.113.9'],
    ['::ffff:203.0.113.9', '203.0.113.9'],
    ['2001:db8:1:2:aaaa:bbbb:cccc:dddd', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::7', '2001:db8:1:2::/64'],
    ['[2001:0db8:0001:0002::7]:443', '2001:db8:1:2::/64'],
    ['2001:db8:1:3::7', '2001:db8:1:3::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
  ])('%s is keyed as %s', (address, key) => {
    expect(ipRateLimitKey(address)).toBe(key);
  });

  /** Statuses of one getObject per X-Forwarded-For address, in order, against an `ip=2/min` limit. */
  async function statusesBehindProxy(addresses: readonly string[]): Promise<number[]> {
    const server = await startVssServer({ auth: { kind: 'noop' }, rateLimit: 'ip=2/min', trustProxy: 1 });
    try {
      const body = vss.GetObjectRequest.encode({ key: 'global_version' }).finish();
      const statuses: number[] = [];
      for (const forwarded of addresses) {
        statuses.push((await send(`${server.url}/getObject`, body, { headers: { 'x-forwarded-for': forwarded } })).status);
      }
      return statuses;
    } finally {
      await server.close();
    }
  }

  it('behind a proxy that appends client ports, one client is one key', async () => {
    expect(await statusesBehindProxy(['198.51.100.7:50001', '198.51.100.7:50002', '198.51.100.7:50003', '198.51.100.8:50003'])).toEqual([
      200, 200, 429, 200,
    ]);
  });

  it('an IPv6 client rotating through the addresses of its /64 is one key', async () => {
    expect(await statusesBehindProxy(['2001:db8:5:6::1', '2001:db8:5:6::2', '2001:db8:5:6:ffff::3', '2001:db8:5:7::1'])).toEqual([
      200, 200, 429, 200,
    ]);
  });
});
