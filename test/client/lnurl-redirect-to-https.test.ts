/**
 * The LNURL-auth JWT provider and a server that moves its clients from http to https (real
 * HTTP and HTTPS servers on loopback, the HTTPS one with the self-signed test certificate that a
 * custom fetch trusts). That one widening of "same origin only" is followed; every other change
 * of origin stays refused, including a downgrade after the upgrade.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { HDKey } from '@scure/bip32';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { HeaderProviderError, LnurlAuthJwtProvider, nodeHttpFetch, type FetchFunction, type FetchResponse } from '../../src/client/index.js';
import { testJwt } from './lnurl-server.js';

const cert = readFileSync(new URL('./fixtures/localhost-cert.pem', import.meta.url), 'utf8');
const key = readFileSync(new URL('./fixtures/localhost-key.pem', import.meta.url), 'utf8');

interface Received {
  url: string;
  headers: IncomingMessage['headers'];
}

interface Server {
  /** `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>` */
  origin: string;
  port: number;
  received: Received[];
  close(): Promise<void>;
}

const open: Server[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((server) => server.close()));
});

/** A loopback server (TLS with the localhost/127.0.0.1 test certificate) that records what it received. */
async function server(tls: boolean, handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const received: Received[] = [];
  const listener: RequestListener = (req, res) => {
    received.push({ url: req.url ?? '', headers: req.headers });
    handle(req, res);
  };
  const raw = tls ? createTlsServer({ cert, key }, listener) : createServer(listener);
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
  const port = (raw.address() as AddressInfo).port;
  const result: Server = {
    origin: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        raw.closeAllConnections();
        raw.close(() => resolve());
      }),
  };
  open.push(result);
  return result;
}

/** An http server that sends every request, path and query kept, to `target` (an https origin). */
const upgrading = (target: () => string, status = 301) => server(false, (req, res) => res.writeHead(status, { location: `${target()}${req.url}` }).end());

const parent = HDKey.fromMasterSeed(new Uint8Array(32).fill(9));
const K1 = 'ab'.repeat(32);
const validToken = () => testJwt({ exp: Math.floor(Date.now() / 1000) + 3600 });
/** The project's Node transport, trusting the test certificate. */
const trustingFetch = () => nodeHttpFetch({ ca: cert });
const paths = (server: Server) => server.received.map((r) => r.url.split('?')[0]);

/** Every message along an error's cause chain. */
function messages(error: unknown): string[] {
  const out: string[] = [];
  for (let e: unknown = error; e instanceof Error; e = e.cause) out.push(e.message);
  return out;
}

describe('LnurlAuthJwtProvider and a redirect from http to https on the same host', () => {
  it('follows it for both requests (another port), then redirects within the https origin', async () => {
    const token = validToken();
    let httpOrigin = '';
    const tls = await server(true, (req, res) => {
      const path = (req.url ?? '').split('?')[0];
      // A server that still writes http URLs into its challenges, as behind a TLS-terminating proxy.
      if (path === '/auth') res.end(`${httpOrigin}/verify?tag=login&k1=${K1}`);
      else if (path === '/verify') res.writeHead(307, { location: `/v2${(req.url ?? '').slice('/verify'.length)}` }).end();
      else res.end(JSON.stringify({ status: 'OK', token }));
    });
    const plain = await upgrading(() => tls.origin, 301);
    httpOrigin = plain.origin;
    const provider = new LnurlAuthJwtProvider(parent, `${plain.origin}/auth`, { 'x-api-key': 'api-secret' }, { fetch: trustingFetch() });
    expect(await provider.getHeaders()).toEqual({ 'x-api-key': 'api-secret', Authorization: `Bearer ${token}` });
    expect(paths(plain)).toEqual(['/auth', '/verify']);
    expect(paths(tls)).toEqual(['/auth', '/verify', '/v2']);
    // The signed login and the default headers arrived over TLS, after the upgrade and the move.
    expect(new URL(tls.received[2].url, tls.origin).searchParams.get('k1')).toBe(K1);
    expect(new URL(tls.received[2].url, tls.origin).searchParams.get('sig')).toMatch(/^[0-9a-f]+$/);
    expect(tls.received.map((r) => r.headers['x-api-key'])).toEqual(['api-secret', 'api-secret', 'api-secret']);
  });

  it('accepts the reply of a fetch that followed the upgrade by itself', async () => {
    const token = validToken();
    let httpOrigin = '';
    const tls = await server(true, (req, res) => {
      if (req.url === '/auth') res.end(`${httpOrigin}/verify?tag=login&k1=${K1}`);
      else res.end(JSON.stringify({ token }));
    });
    const plain = await upgrading(() => tls.origin, 302);
    httpOrigin = plain.origin;
    // Like React Native's fetch, which follows redirects whatever `redirect` says (undici, trusting the test CA).
    const dispatcher = new Agent({ connect: { ca: cert } });
    try {
      const following: FetchFunction = (input, init) =>
        undiciFetch(input, { method: init.method, headers: init.headers as Record<string, string>, signal: init.signal, redirect: 'follow', dispatcher }) as Promise<FetchResponse>;
      const provider = new LnurlAuthJwtProvider(parent, `${plain.origin}/auth`, {}, { fetch: following });
      expect(await provider.getHeaders()).toEqual({ Authorization: `Bearer ${token}` });
      expect(paths(plain)).toEqual(['/auth', '/verify']);
      expect(paths(tls)).toEqual(['/auth', '/verify']);
    } finally {
      await dispatcher.close();
    }
  });

  it('refuses a redirect back to http after the upgrade (a downgrade), without sending the signed URL there', async () => {
    let httpOrigin = '';
    const tls = await server(true, (req, res) => {
      if (req.url === '/auth') res.end(`${httpOrigin}/verify?tag=login&k1=${K1}`);
      // Back to the very origin the request started from: judged against https now.
      else res.writeHead(302, { location: `${httpOrigin}/v2${(req.url ?? '').slice('/verify'.length)}` }).end();
    });
    const plain = await server(false, (req, res) => {
      if ((req.url ?? '').startsWith('/v2')) res.end(JSON.stringify({ token: validToken() }));
      else res.writeHead(308, { location: `${tls.origin}${req.url}` }).end();
    });
    httpOrigin = plain.origin;
    const error = await new LnurlAuthJwtProvider(parent, `${plain.origin}/auth`, {}, { fetch: trustingFetch() }).getHeaders().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toContain(`${tls.origin}/verify?… answered with a redirect to ${plain.origin}/v2?…`);
    expect((error as Error).message).toContain('follow redirects only within one origin or from http to https on the same host');
    expect(paths(plain)).toEqual(['/auth', '/verify']);
    for (const message of messages(error)) expect(message).not.toContain('sig=');
  });

  it('refuses a direct downgrade from https to http on the same host', async () => {
    const plain = await server(false, (_req, res) => res.end(`http://127.0.0.1:1/verify?k1=${K1}`));
    const tls = await server(true, (_req, res) => res.writeHead(301, { location: `${plain.origin}/auth` }).end());
    const error = await new LnurlAuthJwtProvider(parent, `${tls.origin}/auth`, { 'x-api-key': 'api-secret' }, { fetch: trustingFetch() }).getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toContain(`answered with a redirect to ${plain.origin}/auth`);
    expect(plain.received).toEqual([]);
  });

  it('refuses an upgrade to https on another host name, even one the certificate covers and that reaches the same machine', async () => {
    const tls = await server(true, (_req, res) => res.end(`http://127.0.0.1:1/verify?k1=${K1}`));
    // "localhost" is 127.0.0.1 on the wire and in the certificate, but another host by name.
    const plain = await upgrading(() => `https://localhost:${tls.port}`);
    const error = await new LnurlAuthJwtProvider(parent, `${plain.origin}/auth`, { 'x-api-key': 'api-secret' }, { fetch: trustingFetch() }).getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toContain(`answered with a redirect to https://localhost:${tls.port}/auth`);
    expect(tls.received).toEqual([]);

    // Nor is the reply of a fetch that followed it by itself used.
    const dispatcher = new Agent({ connect: { ca: cert } });
    try {
      const following: FetchFunction = (input, init) =>
        undiciFetch(input, { method: init.method, headers: init.headers as Record<string, string>, signal: init.signal, redirect: 'follow', dispatcher }) as Promise<FetchResponse>;
      const followed = await new LnurlAuthJwtProvider(parent, `${plain.origin}/auth`, {}, { fetch: following }).getHeaders().catch((e: unknown) => e);
      expect((followed as HeaderProviderError).reason).toBe('request');
      expect((followed as Error).message).toContain(`was redirected by the fetch implementation to https://localhost:${tls.port}/auth`);
    } finally {
      await dispatcher.close();
    }
  });
});

describe('LnurlAuthJwtProvider and which http to https redirects are the same host', () => {
  /**
   * A scripted LNURL server for host names loopback cannot serve: `redirects` maps a requested
   * URL (without its query) to a Location; anything else is the challenge or the token.
   */
  function scripted(redirects: Record<string, string>, challenge: string) {
    const requested: string[] = [];
    const token = validToken();
    const fetch: FetchFunction = async (input) => {
      requested.push(input.split('?')[0]);
      const url = new URL(input);
      const location = redirects[`${url.origin}${url.pathname}`];
      const reply = (status: number, headers: Record<string, string>, body: string): FetchResponse => ({
        status,
        headers: new Headers(headers),
        arrayBuffer: async () => new TextEncoder().encode(body).buffer as ArrayBuffer,
        body: null,
      });
      if (location !== undefined) return reply(302, { location }, '');
      return reply(200, {}, url.pathname === '/auth' ? challenge : JSON.stringify({ token }));
    };
    return { fetch, requested, token };
  }

  it('follows the upgrade of a host written in another case, to a non-default port', async () => {
    const { fetch, requested, token } = scripted(
      { 'http://login.example.test/auth': 'https://LOGIN.Example.TEST:8443/auth', 'http://login.example.test/verify': 'https://login.example.test/verify' },
      `http://login.example.test/verify?tag=login&k1=${K1}`,
    );
    expect(await new LnurlAuthJwtProvider(parent, 'http://login.example.test/auth', {}, { fetch }).getHeaders()).toEqual({ Authorization: `Bearer ${token}` });
    expect(requested).toEqual(['http://login.example.test/auth', 'https://login.example.test:8443/auth', 'http://login.example.test/verify', 'https://login.example.test/verify']);
  });

  it('refuses a move to another subdomain, a parent domain, a look-alike, a trailing dot, or userinfo', async () => {
    for (const target of [
      'https://www.login.example.test/auth',
      'https://example.test/auth',
      'https://login.example.test.evil/auth',
      'https://login.example.test./auth',
      'https://user:pw@login.example.test/auth',
      'ws://login.example.test/auth',
    ]) {
      const { fetch, requested } = scripted({ 'http://login.example.test/auth': target }, `http://login.example.test/verify?k1=${K1}`);
      const error = await new LnurlAuthJwtProvider(parent, 'http://login.example.test/auth', {}, { fetch }).getHeaders().catch((e: unknown) => e);
      expect((error as HeaderProviderError).reason, target).toBe('request');
      expect((error as Error).message, target).toContain('answered with a redirect to');
      expect(requested, target).toEqual(['http://login.example.test/auth']);
      for (const message of messages(error)) expect(message, target).not.toContain('pw');
    }
  });
});
