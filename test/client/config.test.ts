import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  FixedHeaders,
  headerProviderFromConfig,
  InternalServerError,
  LnurlAuthJwtProvider,
  SigsAuthProvider,
  VssClient,
  vssClientFromConfig,
  type VssClientConfig,
} from '../../src/client/index.js';
import { deriveVssKeys, sigsAuthorizationValue } from '../../src/crypto/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { errorReply, mockFetch } from './mock-vss.js';

const keys = deriveVssKeys(new Uint8Array(64).fill(7));

describe('serializable client configuration', () => {
  it('survives structuredClone and rebuilds equivalent header providers', async () => {
    const configs: VssClientConfig[] = [
      { baseUrl: 'http://h/vss', auth: { kind: 'none' } },
      { baseUrl: 'http://h/vss', auth: { kind: 'fixed', headers: { 'x-api-key': 'k' } } },
      { baseUrl: 'http://h/vss', auth: { kind: 'sigs', secretKey: keys.sigsAuthSecretKey, headers: { 'x-a': 'b' } } },
      { baseUrl: 'http://h/vss', auth: { kind: 'lnurl', parentKey: keys.lnurlAuthParentKey.privateExtendedKey, url: 'http://h/auth' } },
    ];
    const cloned = structuredClone(configs);
    expect(cloned).toEqual(configs);
    const providers = cloned.map((c) => headerProviderFromConfig(c.auth!, { now: () => 1_700_000_000_000 }));
    expect(providers[0]).toBeInstanceOf(FixedHeaders);
    expect(await providers[0].getHeaders(new Uint8Array())).toEqual({});
    expect(await providers[1].getHeaders(new Uint8Array())).toEqual({ 'x-api-key': 'k' });
    expect(providers[2]).toBeInstanceOf(SigsAuthProvider);
    expect(await providers[2].getHeaders(new Uint8Array())).toEqual({
      'x-a': 'b',
      Authorization: sigsAuthorizationValue(keys.sigsAuthSecretKey, 1_700_000_000),
    });
    expect(providers[3]).toBeInstanceOf(LnurlAuthJwtProvider);
  });

  it('rejects an unknown auth kind', () => {
    expect(() => headerProviderFromConfig({ kind: 'magic' } as never)).toThrow(TypeError);
  });

  it('applies timeout, retry settings and the legacy-header opt-in', async () => {
    const failing = mockFetch(() => errorReply(500, 3, 'down'));
    const noRetry = vssClientFromConfig({ baseUrl: 'http://h/vss', retry: 'none' }, { fetch: failing.fetch });
    await expect(noRetry.getObject({ storeId: 's', key: 'k' })).rejects.toBeInstanceOf(InternalServerError);
    expect(failing.requests).toHaveLength(1);

    const delays: number[] = [];
    const retrying = vssClientFromConfig(
      { baseUrl: 'http://h/vss', retry: { baseDelayMs: 5, maxAttempts: 4, maxTotalDelayMs: 1000, maxJitterMs: 0 }, timeoutMs: 1234 },
      { fetch: failing.fetch, sleep: async (ms) => void delays.push(ms) },
    );
    expect(retrying.timeoutMs).toBe(1234);
    await expect(retrying.putObjects({ storeId: 's' })).rejects.toBeInstanceOf(InternalServerError);
    expect(delays).toEqual([5, 15, 35]);

    const legacy = mockFetch(() => ({ headers: null, body: vss.GetObjectResponse.encode({ value: keyValue('k', 1n) }).finish() }));
    const client = vssClientFromConfig({ baseUrl: 'http://h/vss', allowMissingProtocolVersion: true }, { fetch: legacy.fetch });
    expect((await client.getObject({ storeId: 's', key: 'k' })).value?.key).toBe('k');
  });
});

describe('connection reuse', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('reuses kept-alive connections for sequential requests with the default fetch', async () => {
    let sockets = 0;
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('vss-protocol-version', '0');
        res.end(vss.GetObjectResponse.encode({ value: keyValue('k', 1n) }).finish());
      });
    });
    server.on('connection', () => (sockets += 1));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const client = new VssClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}/vss`);
    for (let i = 0; i < 20; i++) await client.getObject({ storeId: 's', key: `k${i}` });
    // undici may open a second socket while the first is being returned to its pool; what
    // matters is that connections are reused rather than opened per request.
    expect(sockets).toBeLessThanOrEqual(2);
  });
});
