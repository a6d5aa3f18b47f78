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
import { SignatureAuthorizer } from '../../src/server/auth/signature.js';
import { send, signatureHeader } from './helpers.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';

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

describe('per-user keys cut from an Authorization header', () => {
  it('cost a bounded amount of memory, however long the header the user token came from', async () => {
    // A signature header's time may carry any number of leading zeros (the reference's u64
    // parser accepts them), and anyone can make a new user, so a client controls both how many
    // user tokens arrive and how long the header each one is cut from.
    const authorizer = new SignatureAuthorizer({ verifiedCacheSize: 0 });
    const buckets = new TokenBuckets({ limit: 10, windowMs: 3_600_000 });
    const time = String(Math.floor(Date.now() / 1000)).padStart(12_000, '0');
    const headers = Array.from({ length: 400 }, () => signatureHeader(secp256k1.utils.randomSecretKey(), time));
    const before = heapAfterGc();
    for (let i = 0; i < headers.length; i++) {
      const userToken = await authorizer.authorize({ authorization: headers[i] });
      expect(buckets.take(userToken)).toBe(0);
      // A repeat request of the same user (a new header string, as each request brings) must not
      // swap the stored key for a slice of the new header.
      expect(buckets.take(await authorizer.authorize({ authorization: Buffer.from(headers[i]).toString() }))).toBe(0);
    }
    headers.length = 0;
    expect(buckets.size).toBe(400);
    // Kept as a slice of the header, each 66-character key holds its whole 12 KB header alive.
    expect((heapAfterGc() - before) / buckets.size).toBeLessThan(1_000);
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
    // IPv4-mapped addresses in other spellings are their IPv4 client, not the shared ::/64.
    ['::ffff:c000:201', '192.0.2.1'],
    ['0:0:0:0:0:FFFF:192.0.2.1', '192.0.2.1'],
    ['[::ffff:c633:6407]:41234', '198.51.100.7'],
    ['::1', '0:0:0:0::/64'],
    ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
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

  it('IPv4 clients whose proxy writes them as IPv4-mapped IPv6 in hex are keyed apart', async () => {
    expect(await statusesBehindProxy(['::ffff:c633:6407', '[::ffff:c633:6407]:50001', '198.51.100.7', '::ffff:c633:6408'])).toEqual([200, 200, 429, 200]);
  });

  it('an IPv6 client rotating through the addresses of its /64 is one key', async () => {
    expect(await statusesBehindProxy(['2001:db8:5:6::1', '2001:db8:5:6::2', '2001:db8:5:6:ffff::3', '2001:db8:5:7::1'])).toEqual([
      200, 200, 429, 200,
    ]);
  });
});
