/**
 * The client against the real server from src/server, started in-process on a random port
 * with the embedded PGlite backend (one backend shared by a noop, a signature and a JWT
 * server, so the PGlite start-up cost is paid once).
 */
import { randomUUID } from 'node:crypto';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthError,
  ConflictError,
  FixedHeaders,
  InvalidRequestError,
  LnurlAuthJwtProvider,
  NO_RETRY,
  NoSuchKeyError,
  SigsAuthProvider,
  VersionMismatchError,
  VssClient,
  type FetchFunction,
} from '../../src/client/index.js';
import { deriveVssKeys } from '../../src/crypto/index.js';
import { bigIntToInt64, hasField, int64ToBigInt, keyValue } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';
import { startLnurlServer, type LnurlServer } from './lnurl-server.js';

type Started = Awaited<ReturnType<typeof startVssServer>>;
const bytes = (s: string) => new TextEncoder().encode(s);
const newStore = () => `client-test-${randomUUID()}`;
const instantSleep = async () => undefined;

let noop: Started;
let sigs: Started;
let jwt: Started;
let lnurl: LnurlServer;
let jwtPrivateKey: CryptoKey;

beforeAll(async () => {
  noop = await startVssServer({ backend: 'pglite', auth: { kind: 'noop' }, port: 0 });
  sigs = await startVssServer({ backend: noop.backend, auth: { kind: 'signature' }, port: 0 });
  const { publicKey, privateKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
  jwtPrivateKey = privateKey as CryptoKey;
  jwt = await startVssServer({ backend: noop.backend, auth: { kind: 'jwt', publicKeyPem: await exportSPKI(publicKey) }, port: 0 });
  // The LNURL endpoint mints RS256 tokens for the linking key, like an LNURL-auth login service.
  lnurl = await startLnurlServer(() => ({ body: '{}' }));
}, 120_000);

afterAll(async () => {
  await lnurl?.close();
  await jwt?.close();
  await sigs?.close();
  await noop?.close();
});

async function mintJwt(subject: string, key: CryptoKey = jwtPrivateKey): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'RS256' })
    .setSubject(subject)
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
    .sign(key);
}

describe('every operation against the real server (PGlite)', () => {
  it('creates, reads, updates conditionally, conflicts, deletes and reports missing keys', async () => {
    const client = new VssClient(noop.url);
    const storeId = newStore();
    await client.putObjects({ storeId, transactionItems: [keyValue('k', 0n, bytes('v1'))] });
    let got = await client.getObject({ storeId, key: 'k' });
    expect(int64ToBigInt(got.value?.version)).toBe(1n);
    expect(new TextDecoder().decode(got.value?.value ?? new Uint8Array())).toBe('v1');

    await client.putObjects({ storeId, transactionItems: [keyValue('k', 1n, bytes('v2'))] });
    const stale = await client.putObjects({ storeId, transactionItems: [keyValue('k', 1n, bytes('lost'))] }).catch((e) => e);
    expect(stale).toBeInstanceOf(ConflictError);
    expect(stale.status).toBe(409);
    expect(stale.afterAmbiguousAttempt).toBe(false);
    got = await client.getObject({ storeId, key: 'k' });
    expect(new TextDecoder().decode(got.value?.value ?? new Uint8Array())).toBe('v2');

    // Non-conditional write resets the version to 1.
    await client.putObjects({ storeId, transactionItems: [keyValue('k', -1n, bytes('v3'))] });
    expect(int64ToBigInt((await client.getObject({ storeId, key: 'k' })).value?.version)).toBe(1n);

    await client.deleteObject({ storeId, keyValue: keyValue('k', 1n) });
    const missing = await client.getObject({ storeId, key: 'k' }).catch((e) => e);
    expect(missing).toBeInstanceOf(NoSuchKeyError);
    expect(missing.status).toBe(404);
    // Deleting a missing key is not an error.
    await client.deleteObject({ storeId, keyValue: keyValue('k', -1n) });
  });

  it('applies transactions atomically and checks the global version', async () => {
    const client = new VssClient(noop.url);
    const storeId = newStore();
    await client.putObjects({ storeId, globalVersion: bigIntToInt64(0n), transactionItems: [keyValue('a', 0n, bytes('1')), keyValue('b', 0n, bytes('1'))] });
    const first = await client.listKeyVersions({ storeId });
    expect(int64ToBigInt(first.globalVersion)).toBe(1n);
    // A stale global version fails the whole transaction; nothing is written.
    const conflict = await client
      .putObjects({ storeId, globalVersion: bigIntToInt64(0n), transactionItems: [keyValue('c', 0n, bytes('1'))] })
      .catch((e) => e);
    expect(conflict).toBeInstanceOf(ConflictError);
    await expect(client.getObject({ storeId, key: 'c' })).rejects.toBeInstanceOf(NoSuchKeyError);
    // A put with delete items: a mismatched delete version fails everything.
    const badDelete = await client
      .putObjects({ storeId, transactionItems: [keyValue('c', 0n, bytes('1'))], deleteItems: [keyValue('a', 7n)] })
      .catch((e) => e);
    expect(badDelete).toBeInstanceOf(ConflictError);
    await client.putObjects({ storeId, transactionItems: [keyValue('c', 0n, bytes('1'))], deleteItems: [keyValue('a', 1n)] });
    const keys = (await client.listKeyVersions({ storeId })).keyVersions.map((kv) => kv.key).sort();
    expect(keys).toEqual(['b', 'c']);
  });

  it('maps invalid requests to InvalidRequestError', async () => {
    const client = new VssClient(noop.url, { retryPolicy: NO_RETRY });
    const storeId = newStore();
    const tooLong = await client.getObject({ storeId, key: 'k'.repeat(601) }).catch((e) => e);
    expect(tooLong).toBeInstanceOf(InvalidRequestError);
    expect(tooLong.status).toBe(400);
    await expect(client.deleteObject({ storeId })).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(client.listKeyVersions({ storeId, pageToken: 'not-a-token' })).rejects.toBeInstanceOf(InvalidRequestError);
  });

  it('pages through listings by following the opaque tokens', async () => {
    const client = new VssClient(noop.url);
    const storeId = newStore();
    const expected: string[] = [];
    for (let i = 0; i < 23; i++) {
      const key = `page/${String(i).padStart(3, '0')}`;
      expected.push(key);
      await client.putObjects({ storeId, transactionItems: [keyValue(key, 0n, bytes(String(i)))] });
    }
    await client.putObjects({ storeId, transactionItems: [keyValue('other', 0n, bytes('x'))] });
    const seen: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    do {
      const page = await client.listKeyVersions({ storeId, keyPrefix: 'page/', pageSize: 5, ...(pageToken ? { pageToken } : {}) });
      pages += 1;
      expect(page.keyVersions.length).toBeLessThanOrEqual(5);
      // global_version is only present on the first page.
      expect(hasField(page, 'globalVersion')).toBe(pages === 1);
      for (const kv of page.keyVersions) {
        expect(int64ToBigInt(kv.version)).toBe(1n);
        seen.push(kv.key ?? "");
      }
      pageToken = page.nextPageToken || undefined;
    } while (pageToken);
    expect(pages).toBeGreaterThanOrEqual(5);
    expect(seen.length).toBe(new Set(seen).size);
    expect(seen.sort()).toEqual(expected);
  });

  it('rejects a server that does not speak the protocol (no version header)', async () => {
    const client = new VssClient(lnurl.url.replace('/auth', ''), { retryPolicy: NO_RETRY });
    const error = await client.getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(error).toBeInstanceOf(VersionMismatchError);
  });
});

describe('retries against an injected flaky transport', () => {
  it('retries dropped connections on the policy schedule and then succeeds', async () => {
    let calls = 0;
    const flaky: FetchFunction = async (url, init) => {
      calls += 1;
      if (calls <= 3) throw new TypeError('fetch failed: connection reset');
      return fetch(url, init);
    };
    const delays: number[] = [];
    const client = new VssClient(noop.url, { fetch: flaky, sleep: async (ms) => void delays.push(ms) });
    const storeId = newStore();
    await client.putObjects({ storeId, transactionItems: [keyValue('k', 0n, bytes('v'))] });
    expect(calls).toBe(4);
    expect(delays).toHaveLength(3);
    // Default policy: 10, 30, 70 ms plus jitter below 100 ms.
    [10, 30, 70].forEach((base, i) => {
      expect(delays[i]).toBeGreaterThanOrEqual(base);
      expect(delays[i]).toBeLessThan(base + 100);
    });
  });

  it('a conditional put whose reply was lost surfaces as an ambiguous ConflictError; reading back resolves it', async () => {
    let calls = 0;
    // The first attempt reaches the server and commits, but its reply is lost.
    const lossy: FetchFunction = async (url, init) => {
      calls += 1;
      const response = await fetch(url, init);
      if (calls === 1) {
        await response.arrayBuffer();
        throw new TypeError('fetch failed: socket hang up');
      }
      return response;
    };
    const storeId = newStore();
    const client = new VssClient(noop.url, { fetch: lossy, sleep: instantSleep });
    const error = await client.putObjects({ storeId, transactionItems: [keyValue('k', 0n, bytes('mine'))] }).catch((e) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error.afterAmbiguousAttempt).toBe(true);
    expect(calls).toBe(2);
    // Reading back shows our value at the version our write would have produced: it committed.
    const readBack = await new VssClient(noop.url).getObject({ storeId, key: 'k' });
    expect(int64ToBigInt(readBack.value?.version)).toBe(1n);
    expect(new TextDecoder().decode(readBack.value?.value ?? new Uint8Array())).toBe('mine');
  });
});

describe('authentication against the real authorizers', () => {
  it('sigs auth is accepted by the signature authorizer, and users are isolated', async () => {
    const alice = new VssClient(sigs.url, { headerProvider: new SigsAuthProvider(deriveVssKeys(new Uint8Array(64).fill(1)).sigsAuthSecretKey) });
    const bob = new VssClient(sigs.url, { headerProvider: new SigsAuthProvider(deriveVssKeys(new Uint8Array(64).fill(2)).sigsAuthSecretKey) });
    const storeId = newStore();
    await alice.putObjects({ storeId, transactionItems: [keyValue('k', 0n, bytes('alice'))] });
    await expect(bob.getObject({ storeId, key: 'k' })).rejects.toBeInstanceOf(NoSuchKeyError);
    expect((await alice.listKeyVersions({ storeId })).keyVersions.map((k) => k.key)).toEqual(['k']);
  });

  it('missing or forged credentials are AuthError 401', async () => {
    const anonymous = new VssClient(sigs.url, { retryPolicy: NO_RETRY });
    const e1 = await anonymous.getObject({ storeId: newStore(), key: 'k' }).catch((e) => e);
    expect(e1).toBeInstanceOf(AuthError);
    expect(e1.status).toBe(401);
    expect(e1.fromHeaderProvider).toBe(false);
    const forged = new VssClient(sigs.url, { retryPolicy: NO_RETRY, headerProvider: new FixedHeaders({ Authorization: '02'.repeat(33) + '00'.repeat(64) + '1700000000' }) });
    await expect(forged.getObject({ storeId: newStore(), key: 'k' })).rejects.toBeInstanceOf(AuthError);
  });

  it('LNURL-auth → JWT is accepted by the JWT authorizer; a rejected token is refreshed', async () => {
    const { privateKey: wrongKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
    // The login service first hands out a token signed with the wrong key, then good ones.
    const issued = [await mintJwt('lnurl-user', wrongKey as CryptoKey), await mintJwt('lnurl-user')];
    let logins = 0;
    lnurl.verifyReply = () => ({ body: JSON.stringify({ status: 'OK', token: issued[Math.min(logins++, 1)] }) });
    const provider = new LnurlAuthJwtProvider(deriveVssKeys(new Uint8Array(64).fill(3)).lnurlAuthParentKey, lnurl.url);
    const client = new VssClient(jwt.url, { headerProvider: provider, sleep: instantSleep });
    const storeId = newStore();
    // The server answers AUTH_EXCEPTION to the bad token; the client tells the provider, which
    // drops exactly that token and logs in again, and the retry succeeds.
    await client.putObjects({ storeId, transactionItems: [keyValue('k', 0n, bytes('v'))] });
    expect(provider.fetchCount).toBe(2);
    expect(int64ToBigInt((await client.getObject({ storeId, key: 'k' })).value?.version)).toBe(1n);
    expect(provider.fetchCount).toBe(2); // the good token stays cached

    // The JWT subject is the user: another subject does not see the data.
    const otherUser = new VssClient(jwt.url, { headerProvider: new FixedHeaders({ Authorization: `Bearer ${await mintJwt('someone-else')}` }) });
    await expect(otherUser.getObject({ storeId, key: 'k' })).rejects.toBeInstanceOf(NoSuchKeyError);
  });
});
