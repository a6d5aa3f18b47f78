import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { HDKey } from '@scure/bip32';
import { afterEach, describe, expect, it } from 'vitest';
import {
  FixedHeaders,
  HeaderProviderError,
  JWT_EXPIRY_MARGIN_MS,
  LnurlAuthJwtProvider,
  parseJwtExpiry,
  SigsAuthProvider,
} from '../../src/client/index.js';
import { deriveVssKeys, lnurlLinkingKey, sigsAuthorizationValue, sigsAuthPreimage } from '../../src/crypto/index.js';
import { b64url, startLnurlServer, testJwt, type LnurlServer } from './lnurl-server.js';

describe('FixedHeaders', () => {
  it('returns the same headers every time, as independent copies', async () => {
    const provider = new FixedHeaders({ a: '1' });
    const first = await provider.getHeaders();
    first.a = 'changed';
    expect(await provider.getHeaders()).toEqual({ a: '1' });
    expect(await new FixedHeaders().getHeaders()).toEqual({});
  });
});

describe('SigsAuthProvider', () => {
  const secret = new Uint8Array(32).fill(42);

  it('sends the reference Authorization value for the current second', async () => {
    const provider = new SigsAuthProvider(secret, {}, { now: () => 1_700_000_000_999 });
    expect(await provider.getHeaders()).toEqual({ Authorization: sigsAuthorizationValue(secret, 1_700_000_000) });
  });

  it('signs a fresh timestamp on every call and keeps default headers', async () => {
    let clock = 1_000_000;
    const provider = new SigsAuthProvider(secret, { 'x-app': 'wallet', authorization: 'stale' }, { now: () => (clock += 1000) });
    const a = await provider.getHeaders();
    const b = await provider.getHeaders();
    expect(a['x-app']).toBe('wallet');
    expect(Object.keys(a).filter((k) => k.toLowerCase() === 'authorization')).toEqual(['Authorization']);
    expect(a.Authorization).not.toBe(b.Authorization);
    for (const header of [a.Authorization, b.Authorization]) {
      const pubkey = hexToBytes(header.slice(0, 66));
      const ok = secp256k1.verify(hexToBytes(header.slice(66, 194)), sha256(sigsAuthPreimage(pubkey, Number(header.slice(194)))), pubkey, {
        prehash: false,
      });
      expect(ok).toBe(true);
    }
    expect(Number(b.Authorization.slice(194)) - Number(a.Authorization.slice(194))).toBe(1);
  });

  it('rejects an invalid secret key at construction', () => {
    expect(() => new SigsAuthProvider(new Uint8Array(32))).toThrow(HeaderProviderError);
    expect(() => new SigsAuthProvider(new Uint8Array(31).fill(1))).toThrow(HeaderProviderError);
  });
});

describe('parseJwtExpiry', () => {
  it('reads exp in seconds, and no exp as never expiring', () => {
    expect(parseJwtExpiry(testJwt({ exp: 1234 }))).toBe(1_234_000);
    expect(parseJwtExpiry(testJwt({ sub: 'x' }))).toBeUndefined();
  });

  it('rejects malformed tokens the way the reference does', () => {
    for (const bad of [
      'a.b',
      `${testJwt({ exp: 1 })}.x`,
      `${b64url('x')}=.${b64url({ exp: 1 })}.${b64url('x')}`, // padded part
      `${b64url('x')}.${b64url('not json')}.${b64url('x')}`,
      testJwt({ exp: -1 }),
      testJwt({ exp: '12' }),
      `${b64url('x')}.${b64url('[1]').replace(/./g, '!')}.${b64url('x')}`,
    ]) {
      expect(() => parseJwtExpiry(bad), bad).toThrow(HeaderProviderError);
    }
  });
});

describe('LnurlAuthJwtProvider against a local LNURL endpoint', () => {
  let server: LnurlServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });
  const parent = HDKey.fromMasterSeed(new Uint8Array(32));
  const nowSeconds = () => Math.floor(Date.now() / 1000);

  it('signs with the LUD-05 linking key of the challenge domain and sends default headers', async () => {
    const jwt = testJwt({ exp: nowSeconds() + 365 * 86_400 });
    server = await startLnurlServer(() => ({ body: JSON.stringify({ status: 'OK', token: jwt }) }));
    const provider = new LnurlAuthJwtProvider(parent, server.url, { 'x-app': 'wallet' });
    expect(await provider.getHeaders()).toEqual({ 'x-app': 'wallet', Authorization: `Bearer ${jwt}` });
    expect(server.verifiedKeys).toEqual([bytesToHex(lnurlLinkingKey(parent, '127.0.0.1').publicKey!)]);
    expect(server.requests.map((r) => r.path)).toEqual(['/auth', '/verify']);
    expect(server.requests.every((r) => r.headers['x-app'] === 'wallet')).toBe(true);
  });

  it('refuses a timeout a timer cannot wait (0, NaN, negative, over 2^31 - 1 ms)', () => {
    for (const timeoutMs of [0, Number.NaN, -5, 2 ** 31]) {
      expect(() => new LnurlAuthJwtProvider(parent, 'http://127.0.0.1:1/auth', {}, { timeoutMs })).toThrow(RangeError);
    }
  });

  it('uses an expired token once, then fetches again (reference round 1)', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ status: 'OK', token: testJwt({ exp: 0 }) }) }));
    const provider = new LnurlAuthJwtProvider(parent, server.url);
    await provider.getHeaders();
    await provider.getHeaders();
    expect(provider.fetchCount).toBe(2);
  });

  it('caches a valid token until 60 s before exp (reference round 2 and the margin)', async () => {
    let clock = 1_000_000_000_000;
    const exp = clock / 1000 + 3600;
    server = await startLnurlServer(() => ({ body: JSON.stringify({ status: 'OK', token: testJwt({ exp }) }) }));
    const provider = new LnurlAuthJwtProvider(parent, server.url, {}, { now: () => clock });
    const a = await provider.getHeaders();
    const b = await provider.getHeaders();
    expect(a).toEqual(b);
    expect(provider.fetchCount).toBe(1);
    clock = exp * 1000 - JWT_EXPIRY_MARGIN_MS; // exactly at the margin: still usable
    await provider.getHeaders();
    expect(provider.fetchCount).toBe(1);
    clock += 1; // inside the margin: refresh
    await provider.getHeaders();
    expect(provider.fetchCount).toBe(2);
  });

  it('never refreshes a token without exp', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ sub: 'me' }) }) }));
    let clock = 0;
    const provider = new LnurlAuthJwtProvider(parent, server.url, {}, { now: () => (clock += 10 ** 12) });
    for (let i = 0; i < 3; i++) await provider.getHeaders();
    expect(provider.fetchCount).toBe(1);
  });

  it('shares one in-flight fetch between concurrent callers (single-flight)', async () => {
    let issued = 0;
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ exp: nowSeconds() + 3600, n: ++issued }) }) }));
    server.verifyDelayMs = 50;
    const provider = new LnurlAuthJwtProvider(parent, server.url);
    const results = await Promise.all(Array.from({ length: 10 }, () => provider.getHeaders()));
    expect(new Set(results.map((h) => h.Authorization)).size).toBe(1);
    expect(provider.fetchCount).toBe(1);
    expect(server.verifiedKeys).toHaveLength(1);
  });

  it('refreshes an expired token with one login shared by concurrent callers', async () => {
    let clock = 1_000_000_000_000;
    let issued = 0;
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ exp: clock / 1000 + 3600, n: ++issued }) }) }));
    const provider = new LnurlAuthJwtProvider(parent, server.url, {}, { now: () => clock });
    const first = await provider.getHeaders();
    clock += 3600 * 1000; // past exp
    server.verifyDelayMs = 50;
    const refreshed = await Promise.all(Array.from({ length: 5 }, () => provider.getHeaders()));
    expect(new Set(refreshed.map((h) => h.Authorization))).toEqual(new Set([refreshed[0].Authorization]));
    expect(refreshed[0].Authorization).not.toBe(first.Authorization);
    expect(provider.fetchCount).toBe(2);
  });

  it('does not remember a failed login: every waiter gets the error, and the next call logs in again', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ exp: nowSeconds() + 3600 }) }) }));
    server.challengeReply = { status: 503, body: 'maintenance' };
    const provider = new LnurlAuthJwtProvider(parent, server.url);
    const failures = await Promise.all(Array.from({ length: 3 }, () => provider.getHeaders().catch((e: unknown) => e)));
    for (const failure of failures) expect(failure).toBeInstanceOf(HeaderProviderError);
    expect(provider.fetchCount).toBe(1);
    server.challengeReply = undefined;
    expect((await provider.getHeaders()).Authorization).toMatch(/^Bearer /);
    expect(provider.fetchCount).toBe(2);
  });

  it('drops exactly the token the server rejected (forced refresh)', async () => {
    let issued = 0;
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ exp: nowSeconds() + 3600, n: ++issued }) }) }));
    const provider = new LnurlAuthJwtProvider(parent, server.url);
    const first = await provider.getHeaders();
    provider.onAuthError({ Authorization: 'Bearer some-older-token' });
    expect(await provider.getHeaders()).toEqual(first);
    provider.onAuthError(first);
    const second = await provider.getHeaders();
    expect(second.Authorization).not.toBe(first.Authorization);
    expect(provider.fetchCount).toBe(2);
  });

  it('prefers a token over a reason, and reports reason-only replies as authorization errors', async () => {
    const token = testJwt({ exp: nowSeconds() + 3600 });
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token, reason: 'ignored' }) }));
    expect((await new LnurlAuthJwtProvider(parent, server.url).getHeaders()).Authorization).toBe(`Bearer ${token}`);
    server.verifyReply = () => ({ status: 403, body: JSON.stringify({ status: 'ERROR', reason: 'banned' }) });
    const error = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect(error.reason).toBe('authorization');
    expect(error.message).toBe('LNURL Auth failed, reason is: banned');
  });

  it('reports replies without token or reason, non-JSON and bad JWTs as invalid data', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ status: 'OK' }) }));
    for (const body of [JSON.stringify({ status: 'OK' }), 'not json', JSON.stringify({ token: 'a.b' })]) {
      server.verifyReply = () => ({ body });
      const error = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
      expect(error, body).toBeInstanceOf(HeaderProviderError);
      expect(error.reason, body).toBe('invalid-data');
    }
  });

  it('reports a challenge that is not a signable URL as invalid data', async () => {
    server = await startLnurlServer(() => ({ body: '{}' }));
    // The 404 body "not found" is not a URL; the HTTP status is ignored like the reference.
    const error = await new LnurlAuthJwtProvider(parent, server.url.replace('/auth', '/nope')).getHeaders().catch((e) => e);
    expect(error.reason).toBe('invalid-data');
  });

  it('names the HTTP status and the LUD error reason when a reply is unusable', async () => {
    server = await startLnurlServer(() => ({ status: 502, body: '<html>Bad Gateway</html>' }));
    server.challengeReply = { status: 503, body: JSON.stringify({ status: 'ERROR', reason: 'down for maintenance' }) };
    const refused = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
    expect(refused.reason).toBe('invalid-data');
    expect(refused.message).toBe('invalid lnurl: URL has no scheme (the LNURL server answered HTTP 503, reason: down for maintenance)');

    server.challengeReply = { status: 200, body: JSON.stringify({ status: 'ERROR', reason: 'rate limited' }) };
    const limited = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
    expect(limited.message).toContain('(the LNURL server answered reason: rate limited)');

    server.challengeReply = undefined;
    const gateway = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
    expect(gateway.reason).toBe('invalid-data');
    expect(gateway.message).toBe('Failed to parse LNURL Auth response as JSON (the LNURL server answered HTTP 502)');

    server.verifyReply = () => ({ status: 500, body: '{}' });
    const empty = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
    expect(empty.message).toBe('LNURL Auth response did not contain a token nor an error (the LNURL server answered HTTP 500)');
  });

  it('reports an unreachable endpoint as a request error, and a slow one as a timeout', async () => {
    const closed = await startLnurlServer(() => ({ body: '{}' }));
    await closed.close();
    const error = await new LnurlAuthJwtProvider(parent, closed.url).getHeaders().catch((e) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect(error.reason).toBe('request');
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({}) }) }));
    server.verifyDelayMs = 2000;
    const slow = await new LnurlAuthJwtProvider(parent, server.url, {}, { timeoutMs: 200 }).getHeaders().catch((e) => e);
    expect(slow.reason).toBe('request');
    expect(slow.cause.reason).toBe('timeout');
  });

  it('keeps the signed login URL (k1, sig, key) out of every error message in the chain', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({}) }) }));
    server.verifyDelayMs = 2000;
    const error = await new LnurlAuthJwtProvider(parent, server.url, {}, { timeoutMs: 200 }).getHeaders().catch((e) => e);
    expect(error.cause.reason).toBe('timeout');
    const messages: string[] = [];
    for (let e: unknown = error; e instanceof Error; e = e.cause) messages.push(e.message);
    const k1 = /k1=([0-9a-f]{64})/.exec(server.lastVerifyUrl ?? '')?.[1];
    expect(k1).toMatch(/^[0-9a-f]{64}$/);
    for (const message of messages) {
      expect(message).not.toContain('sig=');
      expect(message).not.toContain('key=');
      expect(message).not.toContain(k1!);
    }
    // Still says which request failed.
    expect(error.message).toContain('/verify?…');
  });

  it('refuses a signable challenge that fetch cannot request, without quoting the signed URL', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({}) }) }));
    const k1 = 'ab'.repeat(32);
    // The LUD-05 parser takes this host as written; fetch refuses the URL (and its error text
    // quotes the whole URL, signature included).
    server.challengeReply = { status: 200, body: `https://exa mple.com/verify?tag=login&k1=${k1}` };
    const error = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect(error.reason).toBe('invalid-data');
    expect(error.message).toMatch(/^invalid lnurl: /);
    for (let e: unknown = error; e instanceof Error; e = e.cause) {
      expect(e.message).not.toContain('sig=');
      expect(e.message).not.toContain(k1);
    }
  });

  it('accepts the parent key as an extended private key string (m/877\'/138\')', async () => {
    server = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({}) }) }));
    const keys = deriveVssKeys(Uint8Array.from({ length: 64 }, (_, i) => i));
    const provider = new LnurlAuthJwtProvider(keys.lnurlAuthParentKey.privateExtendedKey, server.url);
    await provider.getHeaders();
    expect(server.verifiedKeys).toEqual([bytesToHex(lnurlLinkingKey(keys.lnurlAuthParentKey, '127.0.0.1').publicKey!)]);
    expect(() => new LnurlAuthJwtProvider(keys.lnurlAuthParentKey.publicExtendedKey, server!.url)).toThrow('an extended PRIVATE key is required, got a public one');
  });

  it('refuses a parent HDKey without its private key, before any request', () => {
    const keys = deriveVssKeys(Uint8Array.from({ length: 64 }, (_, i) => i));
    const publicOnly = HDKey.fromExtendedKey(keys.lnurlAuthParentKey.publicExtendedKey);
    let thrown: unknown;
    try {
      new LnurlAuthJwtProvider(publicOnly, 'http://127.0.0.1:9/auth');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(HeaderProviderError);
    expect(thrown).toMatchObject({ reason: 'invalid-data', message: 'LNURL parent key must be a private key' });
  });
});
