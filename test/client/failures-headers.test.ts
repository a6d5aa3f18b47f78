/**
 * Header providers that fail in odd ways: headers that fetch or node:http would refuse to send
 * (a line break, a non-Latin-1 character, a bad name, a non-string value), a provider that
 * answers synchronously, and many concurrent calls whose shared LNURL token the server rejects.
 * Real HTTP on loopback.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getEventListeners } from 'node:events';
import { HDKey } from '@scure/bip32';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthError,
  errorProvesNotApplied,
  FixedHeaders,
  HeaderProviderError,
  LnurlAuthJwtProvider,
  nodeHttpFetch,
  SigsAuthProvider,
  VssClient,
  type FetchFunction,
  type VssHeaderProvider,
} from '../../src/client/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { startLnurlServer, testJwt } from './lnurl-server.js';
import { errorReply, mockFetch } from './mock-vss.js';

const instantSleep = async () => undefined;

let server: Server;
let baseUrl: string;
let hits = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    hits += 1;
    req.resume();
    req.on('end', () => {
      res.setHeader('vss-protocol-version', '0');
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/vss`;
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
});

const unusable: Array<[string, Record<string, unknown>]> = [
  ['a line break in a value', { Authorization: 'Bearer abc\r\nX-Injected: 1' }],
  ['a character above U+00FF', { Authorization: 'Bearer \u20ac' }],
  ['an invalid header name', { 'Bad Name': 'x' }],
  ['a value that is not a string', { 'X-Api-Key': undefined }],
];

describe.each([
  ['the default fetch', (): FetchFunction | undefined => undefined],
  ['nodeHttpFetch', (): FetchFunction | undefined => nodeHttpFetch()],
])('a header provider that returns unusable headers, with %s', (_name, transport) => {
  it.each(unusable)('%s: a typed header-provider failure, nothing sent, and a write known not applied', async (_case, headers) => {
    const provider: VssHeaderProvider = { getHeaders: async () => headers as Record<string, string> };
    const client = new VssClient(baseUrl, { headerProvider: provider, fetch: transport(), sleep: instantSleep });
    const hitsBefore = hits;
    const error = await client.putObjects({ storeId: 's', transactionItems: [keyValue('k', 0n, new Uint8Array([1]))] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AuthError);
    expect((error as AuthError).fromHeaderProvider).toBe(true);
    expect((error as AuthError).cause).toBeInstanceOf(HeaderProviderError);
    expect((error as AuthError).message).toMatch(/unusable headers/);
    // Not a "network" failure after which the write's outcome would be unknown.
    expect((error as AuthError).afterAmbiguousAttempt).toBe(false);
    expect(errorProvesNotApplied(error)).toBe(true);
    expect(hits).toBe(hitsBefore);
  });
});

describe('built-in providers refuse unusable default headers when built', () => {
  const secret = 'Bearer s3cr3t\nvalue';
  const key = HDKey.fromMasterSeed(new Uint8Array(32).fill(3));
  const builders: Array<[string, () => unknown]> = [
    ['FixedHeaders', () => new FixedHeaders({ Authorization: secret })],
    ['SigsAuthProvider', () => new SigsAuthProvider(new Uint8Array(32).fill(1), { 'X-Api-Key': secret })],
    ['LnurlAuthJwtProvider', () => new LnurlAuthJwtProvider(key, 'http://127.0.0.1:1/auth', { 'X-Api-Key': secret })],
  ];
  it.each(builders)('%s', (_name, build) => {
    let error: unknown;
    try {
      build();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect((error as HeaderProviderError).reason).toBe('invalid-data');
    expect((error as HeaderProviderError).message).not.toContain('s3cr3t');
  });
});

describe('a header provider that answers synchronously', () => {
  it('works the same with a signal, and leaves no listener on the caller\'s signal', async () => {
    const provider = { getHeaders: () => ({ 'X-Api-Key': 'k' }) } as unknown as VssHeaderProvider;
    const client = new VssClient(baseUrl, { headerProvider: provider, sleep: instantSleep });
    const controller = new AbortController();
    await client.deleteObject({ storeId: 's' });
    await client.deleteObject({ storeId: 's' }, { signal: controller.signal });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});

describe('many concurrent calls whose shared LNURL token the server rejects', () => {
  it('log in once more in all, not once per call, and every call then succeeds', async () => {
    let issued = 0;
    const lnurl = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ exp: Math.floor(Date.now() / 1000) + 3600, n: ++issued }) }) }));
    lnurl.verifyDelayMs = 20;
    try {
      const provider = new LnurlAuthJwtProvider(HDKey.fromMasterSeed(new Uint8Array(32).fill(5)), lnurl.url);
      const firstToken = (await provider.getHeaders()).Authorization;
      // The VSS side rejects the first token (as after a key rotation) and accepts any later one.
      const { fetch } = mockFetch(async (request) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (request.headers.authorization === firstToken) return errorReply(401, vss.ErrorCode.AUTH_EXCEPTION, 'token rejected');
        return { body: vss.DeleteObjectResponse.encode({}).finish() };
      });
      const client = new VssClient('http://vss.invalid/vss', { headerProvider: provider, fetch, sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) });
      const results = await Promise.allSettled(Array.from({ length: 40 }, () => client.deleteObject({ storeId: 's' })));
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      expect(provider.fetchCount).toBe(2);
    } finally {
      await lnurl.close();
    }
  });

  it('a server that rejects every token costs at most one login per attempt, never a loop', async () => {
    const lnurl = await startLnurlServer(() => ({ body: JSON.stringify({ token: testJwt({ exp: Math.floor(Date.now() / 1000) + 3600 }) }) }));
    try {
      const provider = new LnurlAuthJwtProvider(HDKey.fromMasterSeed(new Uint8Array(32).fill(6)), lnurl.url);
      const { fetch, requests } = mockFetch(() => errorReply(401, vss.ErrorCode.AUTH_EXCEPTION, 'no'));
      const client = new VssClient('http://vss.invalid/vss', { headerProvider: provider, fetch, sleep: instantSleep });
      await expect(client.deleteObject({ storeId: 's' })).rejects.toBeInstanceOf(AuthError);
      // The default policy's 14 attempts, each with a fresh login after the previous rejection.
      expect(requests).toHaveLength(14);
      expect(provider.fetchCount).toBe(14);
    } finally {
      await lnurl.close();
    }
  });
});
