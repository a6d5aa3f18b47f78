/**
 * Authorizers: the reference's unit cases (spec §5.3, tests 27–29) plus the header-format and
 * claim rules of §4, and the HTTP behaviour (401 AUTH_EXCEPTION, per-user isolation).
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { CompactSign, exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey as JoseCryptoKey } from 'jose';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigIntToInt64, vss } from '../../src/protocol/index.js';
import {
  AuthError,
  JwtAuthorizer,
  JwtKeyError,
  NoopAuthorizer,
  SignatureAuthorizer,
  startVssServer,
  type StartedVssServer,
} from '../../src/server/index.js';
import { errorOf, newIdentity, send, signatureHeader, TestClient, text } from './helpers.js';

const NOW = 1_750_000_000;
const auth = (value?: string) => (value === undefined ? {} : { authorization: value });

async function rejection(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AuthError);
  return (error as AuthError).message;
}

describe('signature authorizer (§4.3, reference test 29)', () => {
  const authorizer = new SignatureAuthorizer({ now: () => NOW, verifiedCacheSize: 0 });
  const secret = new Uint8Array(32).fill(0x2a);
  const pubkeyHex = Buffer.from(secp256k1.getPublicKey(secret, true)).toString('hex');

  it('test_sig: accepts a fresh token, rejects ±86410 s and corrupted signature or pubkey', async () => {
    const valid = signatureHeader(secret, String(NOW));
    expect(await authorizer.authorize(auth(valid))).toBe(pubkeyHex);
    expect(await rejection(authorizer.authorize(auth(signatureHeader(secret, String(NOW + 86_410)))))).toBe('Time is too far from now');
    expect(await rejection(authorizer.authorize(auth(signatureHeader(secret, String(NOW - 86_410)))))).toBe('Time is too far from now');
    const badSig = `${valid.slice(0, 76)}0000${valid.slice(80)}`;
    expect(badSig).not.toBe(valid);
    await rejection(authorizer.authorize(auth(badSig)));
    const badKey = `${valid.slice(0, 10)}0000${valid.slice(14)}`;
    expect(badKey).not.toBe(valid);
    await rejection(authorizer.authorize(auth(badKey)));
  });

  it('accepts the window edges (±86400 s inclusive)', async () => {
    expect(await authorizer.authorize(auth(signatureHeader(secret, String(NOW + 86_400))))).toBe(pubkeyHex);
    expect(await authorizer.authorize(auth(signatureHeader(secret, String(NOW - 86_400))))).toBe(pubkeyHex);
    await rejection(authorizer.authorize(auth(signatureHeader(secret, String(NOW + 86_401)))));
  });

  it('checks presence, length, characters, hex and the time syntax with the reference messages', async () => {
    const valid = signatureHeader(secret, String(NOW));
    expect(await rejection(authorizer.authorize({}))).toBe('Authorization header not found.');
    expect(await rejection(authorizer.authorize(auth(valid.slice(0, 194))))).toBe('Authorization header has wrong length');
    expect(await rejection(authorizer.authorize(auth(`${valid.slice(0, 100)}é${valid.slice(101)}`)))).toBe('Authorization header has bogus chars');
    expect(await rejection(authorizer.authorize(auth(`zz${valid.slice(2)}`)))).toBe('Authorization header is not hex');
    expect(await rejection(authorizer.authorize(auth(`${valid.slice(0, 194)}12a`)))).toBe('Time is not an integer');
    expect(await rejection(authorizer.authorize(auth(`${valid.slice(0, 194)}-5`)))).toBe('Time is not an integer');
    expect(await rejection(authorizer.authorize(auth(`${valid.slice(0, 194)}99999999999999999999`)))).toBe('Time is not an integer');
    const notOnCurve = `02${'ff'.repeat(32)}${valid.slice(66)}`;
    expect(await rejection(authorizer.authorize(auth(notOnCurve)))).toBe('Authorization header has bad pubkey');
  });

  it('accepts the time exactly as sent (leading + or zeros) since it is what was signed', async () => {
    expect(await authorizer.authorize(auth(signatureHeader(secret, `+${NOW}`)))).toBe(pubkeyHex);
    expect(await authorizer.authorize(auth(signatureHeader(secret, `000${NOW}`)))).toBe(pubkeyHex);
    // The signature covers the time string: reusing it with a different spelling fails.
    const header = signatureHeader(secret, String(NOW));
    await rejection(authorizer.authorize(auth(`${header.slice(0, 194)}+${NOW}`)));
  });

  it('accepts only low-S signatures', async () => {
    const pubkey = secp256k1.getPublicKey(secret, true);
    const time = String(NOW);
    const digest = sha256(new Uint8Array([...text('VSS Signature Authorizer Signing Salt Constant..................'), ...pubkey, ...text(time)]));
    const low = secp256k1.Signature.fromBytes(secp256k1.sign(digest, secret, { prehash: false }), 'compact');
    const high = new secp256k1.Signature(low.r, secp256k1.Point.CURVE().n - low.s);
    const header = (sig: InstanceType<typeof secp256k1.Signature>) => Buffer.from(pubkey).toString('hex') + Buffer.from(sig.toBytes('compact')).toString('hex') + time;
    expect(await authorizer.authorize(auth(header(low)))).toBe(pubkeyHex);
    expect(await rejection(authorizer.authorize(auth(header(high))))).toBe('Signature was invalid');
  });

  it('uses the pubkey hex exactly as sent as the user token (case matters, like the reference)', async () => {
    const valid = signatureHeader(secret, String(NOW));
    const upper = valid.slice(0, 66).toUpperCase() + valid.slice(66);
    expect(await authorizer.authorize(auth(upper))).toBe(pubkeyHex.toUpperCase());
  });

  it('remembers verified headers but still enforces the time window on every use', async () => {
    let now = NOW;
    const cached = new SignatureAuthorizer({ now: () => now });
    const header = signatureHeader(secret, String(NOW));
    expect(await cached.authorize(auth(header))).toBe(pubkeyHex);
    expect(await cached.authorize(auth(header))).toBe(pubkeyHex);
    now = NOW + 86_401;
    expect(await rejection(cached.authorize(auth(header)))).toBe('Time is too far from now');
    // A forged header never enters the cache.
    now = NOW;
    const forged = `${header.slice(0, 76)}0000${header.slice(80)}`;
    await rejection(cached.authorize(auth(forged)));
    await rejection(cached.authorize(auth(forged)));
  });
});

describe('JWT authorizer (§4.2, reference tests 27–28)', () => {
  let alice: { publicKey: JoseCryptoKey; privateKey: JoseCryptoKey };
  let bob: { publicKey: JoseCryptoKey; privateKey: JoseCryptoKey };
  let authorizer: JwtAuthorizer;
  const now = () => Math.floor(Date.now() / 1000);
  const sign = (claims: Record<string, unknown>, key = alice.privateKey, alg = 'RS256') => new SignJWT(claims).setProtectedHeader({ alg }).sign(key);
  const bearer = async (claims: Record<string, unknown>, key?: JoseCryptoKey) => auth(`Bearer ${await sign(claims, key)}`);

  beforeAll(async () => {
    alice = await generateKeyPair('RS256', { modulusLength: 2048 });
    bob = await generateKeyPair('RS256', { modulusLength: 2048 });
    authorizer = new JwtAuthorizer({ publicKeyPem: await exportSPKI(alice.publicKey) });
  });

  it('test_valid_jwt_token: the sub of a token signed by the configured key is the user token; another key is refused', async () => {
    const claims = { sub: 'valid_user_id', exp: 4_102_444_800 };
    expect(await authorizer.authorize(await bearer(claims))).toBe('valid_user_id');
    await rejection(authorizer.authorize(await bearer(claims, bob.privateKey)));
  });

  it('test_against_jsonwebtoken_lib: exp rules, 60 s leeway, aud refused, nbf/iat unchecked', async () => {
    const t = now();
    // u64::MAX must be spelled exactly: a JS number cannot hold it and JSON.stringify writes
    // 2^64 (18446744073709552000), which overflows u64 and is refused like the reference does.
    const u64Max = '18446744073709551615';
    const raw = async (json: string) => auth(`Bearer ${await new CompactSign(text(json)).setProtectedHeader({ alg: 'RS256' }).sign(alice.privateKey)}`);
    expect(await authorizer.authorize(await bearer({ sub: 'u', exp: t }))).toBe('u');
    expect(await authorizer.authorize(await raw(`{"sub":"u","exp":${u64Max}}`))).toBe('u');
    await rejection(authorizer.authorize(await bearer({ sub: 'u', exp: 18446744073709551615 })));
    expect(await authorizer.authorize(await bearer({ sub: 'u', exp: t - 50 }))).toBe('u');
    expect(await rejection(authorizer.authorize(await bearer({ sub: 'u', exp: t - 90 })))).toBe('The token is expired');
    await rejection(authorizer.authorize(await bearer({ sub: 'u', exp: 0 })));
    await rejection(authorizer.authorize(await bearer({ sub: 'u' })));
    await rejection(authorizer.authorize(await bearer({ sub: 'u', exp: t + 3600, aud: 'audience' })));
    await rejection(authorizer.authorize(await bearer({ sub: 'u', exp: t + 3600, aud: ['a'] })));
    expect(await authorizer.authorize(await bearer({ sub: 'u', iat: t, nbf: t, exp: t }))).toBe('u');
    expect(await authorizer.authorize(await raw(`{"sub":"u","iat":${t},"nbf":${t},"exp":${u64Max}}`))).toBe('u');
    await rejection(authorizer.authorize(await bearer({ sub: 'u', iat: t, nbf: t, exp: 0 })));
    // Not checked by the reference either: a future nbf.
    expect(await authorizer.authorize(await bearer({ sub: 'u', nbf: t + 10_000, exp: t + 3600 }))).toBe('u');
  });

  it('refuses fractional, negative and string exp, and a missing or non-string sub', async () => {
    const t = now() + 3600;
    for (const claims of [{ sub: 'u', exp: t + 0.5 }, { sub: 'u', exp: -1 }, { sub: 'u', exp: String(t) }, { exp: t }, { sub: 42, exp: t }]) {
      await rejection(authorizer.authorize(await bearer(claims)));
    }
  });

  it('requires exactly "Bearer " and three parts, and only RS256', async () => {
    const token = await sign({ sub: 'u', exp: now() + 3600 });
    expect(await rejection(authorizer.authorize({}))).toBe('Authorization header not found.');
    expect(await rejection(authorizer.authorize(auth(`bearer ${token}`)))).toBe('Invalid token format.');
    expect(await rejection(authorizer.authorize(auth(token)))).toBe('Invalid token format.');
    expect(await rejection(authorizer.authorize(auth('Bearer invalid.jwt')))).toBe('Token does not have three parts');
    await rejection(authorizer.authorize(auth('Bearer invalid.jwt.token')));
    const hs256 = await new SignJWT({ sub: 'u', exp: now() + 3600 }).setProtectedHeader({ alg: 'HS256' }).sign(new Uint8Array(32).fill(1));
    await rejection(authorizer.authorize(auth(`Bearer ${hs256}`)));
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"u","exp":9999999999}').toString('base64url')}.`;
    await rejection(authorizer.authorize(auth(`Bearer ${unsigned}`)));
  });

  it('loads PKCS#1 and indented PEMs and refuses non-RSA or short keys at construction', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pkcs1 = rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    expect(() => new JwtAuthorizer({ publicKeyPem: pkcs1 })).not.toThrow();
    const spki = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(() => new JwtAuthorizer({ publicKeyPem: spki.split('\n').map((line) => `    ${line}`).join('\n') })).not.toThrow();
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(() => new JwtAuthorizer({ publicKeyPem: small })).toThrow(JwtKeyError);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(() => new JwtAuthorizer({ publicKeyPem: ec })).toThrow(JwtKeyError);
    expect(() => new JwtAuthorizer({ publicKeyPem: 'not a pem' })).toThrow(JwtKeyError);
  });

  it('selects the key by kid from a JWKS', async () => {
    const jwks = { keys: [{ ...(await exportJWK(alice.publicKey)), kid: 'alice', alg: 'RS256' }, { ...(await exportJWK(bob.publicKey)), kid: 'bob', alg: 'RS256' }] };
    const fromJwks = new JwtAuthorizer({ jwks });
    const t = now() + 3600;
    const bobToken = await new SignJWT({ sub: 'bob-user', exp: t }).setProtectedHeader({ alg: 'RS256', kid: 'bob' }).sign(bob.privateKey);
    expect(await fromJwks.authorize(auth(`Bearer ${bobToken}`))).toBe('bob-user');
    const wrongKid = await new SignJWT({ sub: 'x', exp: t }).setProtectedHeader({ alg: 'RS256', kid: 'alice' }).sign(bob.privateKey);
    await rejection(fromJwks.authorize(auth(`Bearer ${wrongKid}`)));
  });
});

describe('authorizers over HTTP', () => {
  let jwtServer: StartedVssServer;
  let sigServer: StartedVssServer;
  let noopServer: StartedVssServer;
  let privateKey: JoseCryptoKey;
  let jwksDir: string;

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256', { modulusLength: 2048 });
    privateKey = pair.privateKey;
    jwksDir = await mkdtemp(join(tmpdir(), 'ldk-vss-jwks-'));
    const jwksPath = join(jwksDir, 'jwks.json');
    await writeFile(jwksPath, JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), alg: 'RS256' }] }));
    jwtServer = await startVssServer({ auth: { kind: 'jwt', jwksPath } });
    sigServer = await startVssServer({ backend: jwtServer.backend });
    noopServer = await startVssServer({ backend: jwtServer.backend, auth: { kind: 'noop' } });
  });
  afterAll(async () => {
    await noopServer?.close();
    await sigServer?.close();
    await jwtServer?.close();
    await rm(jwksDir, { recursive: true, force: true });
  });

  it('signature auth is the default and failures are 401 AUTH_EXCEPTION ErrorResponses', async () => {
    expect(sigServer.authorizer.kind).toBe('signature');
    const body = vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish();
    const attempts: Array<Record<string, string>> = [{}, { authorization: 'garbage' }, { authorization: `Bearer ${'x'.repeat(300)}` }];
    for (const headers of attempts) {
      const response = await send(`${sigServer.url}/getObject`, body, { headers });
      expect(response.status).toBe(401);
      expect(errorOf(response).code).toBe(vss.ErrorCode.AUTH_EXCEPTION);
    }
  });

  it('a request with more than one Authorization header is refused with 401 (ambiguous credentials), whichever authorizer', async () => {
    const body = vss.PutObjectRequest.encode({ storeId: 's', transactionItems: [{ key: 'dup', version: bigIntToInt64(-1n), value: new Uint8Array([1]) }] }).finish();
    const sign = () => signatureHeader(new Uint8Array(32).fill(0x07), String(Math.floor(Date.now() / 1000)));
    const jwt = `Bearer ${await new SignJWT({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600 }).setProtectedHeader({ alg: 'RS256' }).sign(privateKey)}`;
    for (const [server, valid] of [
      [sigServer, sign()],
      [jwtServer, jwt],
    ] as const) {
      // Each value alone is accepted; two of them (even the same one twice) are not.
      expect((await send(`${server.url}/putObjects`, body, { headers: { authorization: valid } })).status).toBe(200);
      for (const values of [[valid, valid], [valid, 'garbage'], ['garbage', valid]]) {
        const response = await send(`${server.url}/putObjects`, body, { headers: { authorization: values } });
        expect(response.status).toBe(401);
        expect(errorOf(response)).toEqual({ code: vss.ErrorCode.AUTH_EXCEPTION, message: 'More than one Authorization header: the credentials are ambiguous.' });
      }
    }
    // The noop authorizer ignores credentials, so a repeat changes nothing there.
    expect((await send(`${noopServer.url}/putObjects`, body, { headers: { authorization: ['a', 'b'] } })).status).toBe(200);
  });

  it('JWT users are isolated by sub, and an empty or over-long sub is refused with 401', async () => {
    const token = (sub: string) => new SignJWT({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
    const [aliceToken, bobToken] = [await token('alice'), await token('bob')];
    const aliceClient = new TestClient(jwtServer.url, 'store', () => `Bearer ${aliceToken}`);
    const bobClient = new TestClient(jwtServer.url, 'store', () => `Bearer ${bobToken}`);
    await aliceClient.put(undefined, [{ key: 'k', version: 0n, value: 'alice' }]);
    await expect(bobClient.get('k')).rejects.toMatchObject({ status: 404 });
    // Lone surrogates (a `sub` escaped as \ud800) are not text: stored, they would turn into U+FFFD
    // and merge users.
    for (const sub of ['', 'x'.repeat(121), 'alice\ud800', '\udc00alice', 'al\udc00\ud800ice']) {
      const response = await send(`${jwtServer.url}/getObject`, vss.GetObjectRequest.encode({ key: 'k' }).finish(), { headers: { authorization: `Bearer ${await token(sub)}` } });
      expect(response.status).toBe(401);
    }
    // A character outside the BMP (a surrogate pair) is fine.
    const emojiToken = await token('alice\u{1F600}');
    const emoji = new TestClient(jwtServer.url, 'store', () => `Bearer ${emojiToken}`);
    await emoji.put(undefined, [{ key: 'k', version: 0n, value: 'emoji' }]);
    expect((await emoji.get('k')).version).toBe(1n);
  });

  it('noop auth maps everyone to unauth-user, so the noop server sees data written as that user', async () => {
    expect(await new NoopAuthorizer().authorize()).toBe('unauth-user');
    const writer = new TestClient(noopServer.url, 'noop-store');
    await writer.put(undefined, [{ key: 'k', version: 0n, value: 'shared' }]);
    const anotherClient = new TestClient(noopServer.url, 'noop-store', () => 'whatever');
    expect((await anotherClient.get('k')).version).toBe(1n);
    // A signature user with the same store id does not see it.
    const identity = newIdentity();
    const signed = new TestClient(sigServer.url, 'noop-store', () => identity.header());
    await expect(signed.get('k')).rejects.toMatchObject({ status: 404 });
  });
});
