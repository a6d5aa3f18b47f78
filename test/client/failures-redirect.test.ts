/**
 * Redirects in front of a VSS server (an http → https rule, a moved host, a trailing-slash rule
 * of a proxy). fetch follows a 301/302/303 answer to a POST as a GET without the body, which a
 * VSS server takes for an empty request: a put of nothing succeeds, a listing of store "" comes
 * back empty. The client must refuse every redirect instead, loudly and without retrying.
 * Real HTTP on loopback: the real server (memory backend) behind a redirecting front.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  errorProvesNotApplied,
  isPermanentVssError,
  NoSuchKeyError,
  nodeHttpFetch,
  VssClient,
  VssClientError,
  type FetchFunction,
  type FetchResponse,
} from '../../src/client/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';

const instantSleep = async () => undefined;

let server: Awaited<ReturnType<typeof startVssServer>>;
let front: Server;
let frontUrl: string;
let frontHits = 0;
/** The status the front answers with; every request is redirected to the real server. */
let redirectStatus = 301;

beforeAll(async () => {
  server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  front = createServer((req, res) => {
    frontHits += 1;
    req.resume();
    res.statusCode = redirectStatus;
    // With a query holding a credential, to check that error messages elide it.
    res.setHeader('location', `http://127.0.0.1:${server.port}${req.url}?token=SECRET`);
    res.end();
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}/vss`;
});

afterAll(async () => {
  front?.closeAllConnections();
  await new Promise<void>((resolve) => (front ? front.close(() => resolve()) : resolve()));
  await server?.close();
});

const transports: Array<[string, () => FetchFunction | undefined]> = [
  ['the default fetch', () => undefined],
  ['nodeHttpFetch', () => nodeHttpFetch()],
];

describe.each(transports)('a redirecting base URL, with %s', (_name, transport) => {
  it.each([301, 302, 303, 307, 308])('HTTP %i: a put is refused (never reported done), not retried, and nothing is written', async (status) => {
    redirectStatus = status;
    const storeId = `redirect-${randomUUID()}`;
    const client = new VssClient(frontUrl, { fetch: transport(), sleep: instantSleep });
    const hitsBefore = frontHits;
    const error = await client.putObjects({ storeId, transactionItems: [keyValue('k', 0n, new Uint8Array([1, 2, 3]))] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(VssClientError);
    const clientError = error as VssClientError;
    expect(clientError.reason).toBe('redirect');
    expect(clientError.status).toBe(status);
    expect(clientError.message).toContain(`HTTP ${status} to http://127.0.0.1:${server.port}/vss/putObjects?…`);
    expect(clientError.message).not.toContain('SECRET');
    expect(isPermanentVssError(clientError)).toBe(true);
    expect(frontHits - hitsBefore).toBe(1);
    // The write did not happen; a redirect is no proof of that in general, so the error says "unknown".
    expect(errorProvesNotApplied(clientError)).toBe(false);
    const direct = new VssClient(server.url, { sleep: instantSleep });
    await expect(direct.getObject({ storeId, key: 'k' })).rejects.toBeInstanceOf(NoSuchKeyError);
  });

  it('a listing and a read are refused too, instead of answering for an empty store', async () => {
    redirectStatus = 301;
    const storeId = `redirect-${randomUUID()}`;
    const direct = new VssClient(server.url, { sleep: instantSleep });
    await direct.putObjects({ storeId, transactionItems: [keyValue('monitor', 0n, new Uint8Array([7]))] });
    const client = new VssClient(frontUrl, { fetch: transport(), sleep: instantSleep });
    const listed = await client.listKeyVersions({ storeId }).then(
      (r) => r,
      (e: unknown) => e,
    );
    expect(listed).toBeInstanceOf(VssClientError);
    expect((listed as VssClientError).reason).toBe('redirect');
    const read = await client.getObject({ storeId, key: 'monitor' }).then(
      (r) => r,
      (e: unknown) => e,
    );
    expect(read).toBeInstanceOf(VssClientError);
    expect((read as VssClientError).reason).toBe('redirect');
  });
});

describe('fetch implementations that follow redirects regardless', () => {
  const okReply = (extra: Partial<FetchResponse>): FetchFunction => async () =>
    Object.assign(new Response(vss.PutObjectResponse.encode({}).finish() as BodyInit, { status: 200, headers: { 'vss-protocol-version': '0' } }), extra);

  it('a reply that was reached through a redirect is refused, naming where it came from', async () => {
    // What a fetch that ignores `redirect: 'manual'` (an XMLHttpRequest-based one) hands back.
    const followed = okReply({});
    const fetch: FetchFunction = async (url, init) => {
      const response = await followed(url, init);
      return { status: response.status, headers: response.headers, arrayBuffer: () => response.arrayBuffer(), body: response.body, redirected: true, url: 'https://elsewhere.example/vss/putObjects' };
    };
    const error = await new VssClient('http://vss.invalid/vss', { fetch, sleep: instantSleep })
      .putObjects({ storeId: 's', transactionItems: [keyValue('k', 0n, new Uint8Array([1]))] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(VssClientError);
    expect((error as VssClientError).reason).toBe('redirect');
    expect((error as VssClientError).message).toContain('redirected by the fetch implementation to https://elsewhere.example/vss/putObjects');
  });

  it('a fetch that reports only the final URL (no `redirected` flag) is caught by that URL', async () => {
    const fetch: FetchFunction = async () => {
      const response = new Response(vss.ListKeyVersionsResponse.encode({ keyVersions: [] }).finish() as BodyInit, { status: 200, headers: { 'vss-protocol-version': '0' } });
      return { status: response.status, headers: response.headers, arrayBuffer: () => response.arrayBuffer(), body: response.body, url: 'https://vss.example/vss/listKeyVersions' };
    };
    const error = await new VssClient('http://vss.example/vss', { fetch, sleep: instantSleep })
      .listKeyVersions({ storeId: 's' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(VssClientError);
    expect((error as VssClientError).reason).toBe('redirect');
    // The same URL, however spelled, is no redirect.
    const same: FetchFunction = async () => {
      const response = new Response(vss.ListKeyVersionsResponse.encode({ keyVersions: [] }).finish() as BodyInit, { status: 200, headers: { 'vss-protocol-version': '0' } });
      return { status: response.status, headers: response.headers, arrayBuffer: () => response.arrayBuffer(), body: response.body, url: 'http://vss.example/vss/listKeyVersions' };
    };
    await expect(new VssClient('HTTP://VSS.example:80/vss', { fetch: same }).listKeyVersions({ storeId: 's' })).resolves.toMatchObject({ keyVersions: [] });
  });

  it("a browser's opaque redirect (status 0) is refused as a redirect", async () => {
    let calls = 0;
    const fetch: FetchFunction = async () => {
      calls += 1;
      return { status: 0, type: 'opaqueredirect', headers: new Headers(), arrayBuffer: async () => new ArrayBuffer(0), body: null };
    };
    const error = await new VssClient('https://vss.invalid/vss', { fetch, sleep: instantSleep })
      .getObject({ storeId: 's', key: 'k' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(VssClientError);
    expect((error as VssClientError).reason).toBe('redirect');
    expect((error as VssClientError).message).toContain('(opaque)');
    expect(calls).toBe(1);
  });

  it('asks fetch not to follow redirects', async () => {
    const seen: Array<RequestInit['redirect']> = [];
    const fetch: FetchFunction = async (_url, init) => {
      seen.push(init.redirect);
      return new Response(vss.PutObjectResponse.encode({}).finish() as BodyInit, { status: 200, headers: { 'vss-protocol-version': '0' } });
    };
    await new VssClient('http://vss.invalid/vss', { fetch }).putObjects({ storeId: 's' });
    expect(seen).toEqual(['manual']);
  });
});
