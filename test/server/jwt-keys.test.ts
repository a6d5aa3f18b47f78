/**
 * JWT key configuration fails at startup when no configured key can ever verify a token, for a
 * JWKS as for a PEM: otherwise the server starts and answers every request 401.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, SignJWT, type JSONWebKeySet, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwtAuthorizer, JwtKeyError } from '../../src/server/index.js';
import { configError } from './helpers.js';

const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ldk-vss-jwks-keys-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('JWKS keys', () => {
  it.each<[string, () => Promise<JWK[]>]>([
    ['only an EC key', async () => [await exportJWK(ec.publicKey)]],
    ['only a 1024-bit RSA key', async () => [await exportJWK(rsa1024.publicKey)]],
    ['an RSA key restricted to another algorithm', async () => [{ ...(await exportJWK(rsa2048.publicKey)), alg: 'PS256' }]],
    ['an RSA key for encryption', async () => [{ ...(await exportJWK(rsa2048.publicKey)), use: 'enc' }]],
    ['a symmetric key', async () => [{ kty: 'oct', k: 'c2VjcmV0' }]],
    ['an entry that is not a key', async () => [{ kty: 'RSA' }]],
    // jose refuses private members of a key set when a token is checked, so it never verifies.
    ['only a private RSA key', async () => [rsa2048.privateKey.export({ format: 'jwk' }) as JWK]],
    ['an RSA key whose key_ops exclude verify', async () => [{ ...(await exportJWK(rsa2048.publicKey)), key_ops: ['encrypt'] }]],
  ])('refuses a JWKS with %s, at construction and as VSS_JWT_JWKS_PATH', async (_name, keys) => {
    const jwks = { keys: await keys() };
    expect(() => new JwtAuthorizer({ jwks })).toThrow(JwtKeyError);
    const path = join(dir, `${_name.replace(/\W+/g, '-')}.json`);
    await writeFile(path, JSON.stringify(jwks));
    expect(configError({ VSS_JWT_JWKS_PATH: path }).variable).toBe('VSS_JWT_JWKS_PATH');
  });

  it('accepts a JWKS mixing other keys with one usable RSA key, and verifies with it', async () => {
    const jwks = { keys: [await exportJWK(ec.publicKey), { ...(await exportJWK(rsa2048.publicKey)), use: 'sig' }] };
    const authorizer = new JwtAuthorizer({ jwks });
    const token = await new SignJWT({ sub: 'wallet-1', exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: 'RS256' }).sign(rsa2048.privateKey);
    expect(await authorizer.authorize({ authorization: `Bearer ${token}` })).toBe('wallet-1');
  });

  it('verifies a token without kid against a JWKS of several RSA keys (key rotation), trying each', async () => {
    const next = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    // The short key also matches a token without kid; failing it must not end the search.
    const keys = [await exportJWK(rsa1024.publicKey), await exportJWK(rsa2048.publicKey), await exportJWK(next.publicKey)];
    const authorizer = new JwtAuthorizer({ jwks: { keys } });
    const exp = Math.floor(Date.now() / 1000) + 600;
    for (const [sub, key] of [['old-key-user', rsa2048.privateKey], ['new-key-user', next.privateKey]] as const) {
      const token = await new SignJWT({ sub, exp }).setProtectedHeader({ alg: 'RS256' }).sign(key);
      expect(await authorizer.authorize({ authorization: `Bearer ${token}` })).toBe(sub);
    }
    const forged = await new SignJWT({ sub: 'x', exp }).setProtectedHeader({ alg: 'RS256' }).sign(other.privateKey);
    await expect(authorizer.authorize({ authorization: `Bearer ${forged}` })).rejects.toThrow('RSA verification failed');
  });

  it.each<[string, () => Promise<unknown>]>([
    ['null', async () => null],
    ['an array', async () => [await exportJWK(rsa2048.publicKey)]],
    ['a null entry', async () => ({ keys: [null] })],
    ['a usable key next to an entry that is not an object', async () => ({ keys: [await exportJWK(rsa2048.publicKey), 5] })],
  ])('refuses a malformed JWKS (%s) with JwtKeyError saying so', async (_name, make) => {
    const jwks = (await make()) as JSONWebKeySet;
    expect(() => new JwtAuthorizer({ jwks })).toThrow(JwtKeyError);
    expect(() => new JwtAuthorizer({ jwks })).toThrow(/JWKS must be an object with a "keys" array of JSON objects/);
  });
});
