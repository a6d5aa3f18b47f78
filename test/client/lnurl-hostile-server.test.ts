/**
 * The LNURL-auth JWT provider against a hostile or broken LNURL server (real HTTP on loopback):
 * redirects, error reasons built to mess up logs, oversized and malformed replies. And the
 * signature provider's handling of the caller's key buffer.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HDKey } from '@scure/bip32';
import { afterEach, describe, expect, it } from 'vitest';
import { HeaderProviderError, LnurlAuthJwtProvider, SigsAuthProvider, type FetchFunction } from '../../src/client/index.js';
import { sigsAuthorizationValue } from '../../src/crypto/index.js';
import { testJwt } from './lnurl-server.js';

interface Received {
  url: string;
  headers: IncomingMessage['headers'];
}

interface RawServer {
  /** `http://127.0.0.1:<port>` */
  origin: string;
  received: Received[];
  close(): Promise<void>;
}

const open: RawServer[] = [];

/** A loopback server whose every reply is written by `handle`; it records what it received. */
async function rawServer(handle: (req: IncomingMessage, res: ServerResponse, server: RawServer) => void): Promise<RawServer> {
  const received: Received[] = [];
  const result = { received } as RawServer;
  const server = createServer((req, res) => {
    received.push({ url: req.url ?? '', headers: req.headers });
    handle(req, res, result);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  result.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  result.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  open.push(result);
  return result;
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((server) => server.close()));
});

const parent = HDKey.fromMasterSeed(new Uint8Array(32).fill(9));
const K1 = 'ab'.repeat(32);
const validToken = () => testJwt({ exp: Math.floor(Date.now() / 1000) + 3600 });

/** Every message along an error's cause chain. */
function messages(error: unknown): string[] {
  const out: string[] = [];
  for (let e: unknown = error; e instanceof Error; e = e.cause) out.push(e.message);
  return out;
}

describe('LnurlAuthJwtProvider and redirects', () => {
  it('does not follow a redirect of the signed login URL to another origin', async () => {
    const elsewhere = await rawServer((_req, res) => res.end(JSON.stringify({ token: validToken() })));
    const lnurl = await rawServer((req, res, self) => {
      if (req.url === '/auth') {
        res.end(`${self.origin}/verify?tag=login&k1=${K1}`);
        return;
      }
      // A "canonical host" redirect that keeps the query: k1, sig and key would go along.
      res.writeHead(302, { location: `${elsewhere.origin}${req.url}` }).end();
    });
    const provider = new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`, { 'x-api-key': 'api-secret' });
    const error = await provider.getHeaders().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toContain(`answered with a redirect to ${elsewhere.origin}/verify?…`);
    expect(elsewhere.received).toEqual([]);
    // The signed URL did reach the server it was signed for, and its credential stays out of the messages.
    expect(lnurl.received.map((r) => r.url.split('?')[0])).toEqual(['/auth', '/verify']);
    for (const message of messages(error)) {
      expect(message).not.toContain('sig=');
      expect(message).not.toContain(K1);
    }
  });

  it('does not send the default headers to another origin when the challenge request is redirected', async () => {
    const elsewhere = await rawServer((_req, res) => res.end(`http://127.0.0.1:1/verify?k1=${K1}`));
    const lnurl = await rawServer((_req, res) => res.writeHead(307, { location: `${elsewhere.origin}/auth` }).end());
    const provider = new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`, { 'x-api-key': 'api-secret' });
    const error = await provider.getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect(elsewhere.received).toEqual([]);
  });

  it('follows redirects within the origin, for both requests', async () => {
    const token = validToken();
    const lnurl = await rawServer((req, res, self) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/auth') res.writeHead(301, { location: '/auth/' }).end();
      else if (path === '/auth/') res.end(`${self.origin}/verify?tag=login&k1=${K1}`);
      else if (path === '/verify') res.writeHead(308, { location: `${self.origin}/v2${(req.url ?? '').slice('/verify'.length)}` }).end();
      else res.end(JSON.stringify({ status: 'OK', token }));
    });
    const provider = new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`);
    expect(await provider.getHeaders()).toEqual({ Authorization: `Bearer ${token}` });
    expect(lnurl.received.map((r) => r.url.split('?')[0])).toEqual(['/auth', '/auth/', '/verify', '/v2']);
    expect(new URL(lnurl.received[3].url, lnurl.origin).searchParams.get('k1')).toBe(K1);
  });

  it('refuses the reply of a fetch that followed a cross-origin redirect by itself, and an opaque redirect', async () => {
    const elsewhere = await rawServer((_req, res) => res.end(`http://127.0.0.1:1/verify?k1=${K1}`));
    const lnurl = await rawServer((_req, res) => res.writeHead(302, { location: `${elsewhere.origin}/auth` }).end());
    // Like React Native's fetch, which follows redirects whatever `redirect` says.
    const following: FetchFunction = (input, init) => globalThis.fetch(input, { ...init, redirect: 'follow' });
    const followed = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`, {}, { fetch: following }).getHeaders().catch((e: unknown) => e);
    expect((followed as HeaderProviderError).reason).toBe('request');
    expect((followed as Error).message).toContain(`was redirected by the fetch implementation to ${elsewhere.origin}/auth`);

    // A browser's `redirect: 'manual'` hides the target.
    const opaque: FetchFunction = async () => ({ status: 0, type: 'opaqueredirect', headers: new Headers(), arrayBuffer: async () => new ArrayBuffer(0), body: null });
    const hidden = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`, {}, { fetch: opaque }).getHeaders().catch((e: unknown) => e);
    expect((hidden as HeaderProviderError).reason).toBe('request');
    expect((hidden as Error).message).toContain('answered with a redirect to an address the runtime does not reveal');
  });

  it('does not follow a same-origin redirect to a URL with userinfo (fetch would quote it, signature included)', async () => {
    const lnurl = await rawServer((req, res, self) => {
      if (req.url === '/auth') res.end(`${self.origin}/verify?tag=login&k1=${K1}`);
      else res.writeHead(302, { location: `${self.origin.replace('http://', 'http://user:pw@')}/v2${(req.url ?? '').slice('/verify'.length)}` }).end();
    });
    const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toContain(`answered with a redirect to ${lnurl.origin}/v2?…`);
    for (const message of messages(error)) {
      expect(message).not.toContain('sig=');
      expect(message).not.toContain('pw');
    }
  });

  it('stops a same-origin redirect loop', async () => {
    const lnurl = await rawServer((_req, res) => res.writeHead(302, { location: '/auth' }).end());
    const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toMatch(/redirected more than \d+ times/);
    expect(lnurl.received.length).toBeLessThan(10);
  });
});

describe('LnurlAuthJwtProvider and the host a challenge is signed for', () => {
  it('refuses a challenge whose LUD-05 host is not the host fetch would contact', async () => {
    // LUD-05 (and the reference's parser) read the host after the last "@" of the authority:
    // "localhost". WHATWG reads the backslash as a slash: the request goes to 127.0.0.1:<port>.
    // This server would get a login signed with the wallet's key for "localhost".
    const lnurl = await rawServer((_req, res, self) => res.end(`${self.origin}\\@localhost/verify?tag=login&k1=${K1}`));
    const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect((error as HeaderProviderError).reason).toBe('invalid-data');
    expect((error as Error).message).toBe('invalid lnurl: the challenge would be signed for the host localhost but sent to 127.0.0.1');
    expect(lnurl.received.map((r) => r.url)).toEqual(['/auth']);
  });

  it('refuses, without quoting the signed URL, a challenge with userinfo or a scheme fetch cannot use', async () => {
    for (const challenge of [
      (origin: string) => origin.replace('http://', 'http://user:pw@'),
      (origin: string) => origin.replace('http://', 'ftp://'),
    ]) {
      const lnurl = await rawServer((_req, res, self) => res.end(`${challenge(self.origin)}/verify?tag=login&k1=${K1}`));
      const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
      expect((error as HeaderProviderError).reason).toBe('invalid-data');
      expect((error as Error).message).toMatch(/^invalid lnurl: the challenge URL( holds a user name or password|'s scheme is ftp:)/);
      for (const message of messages(error)) {
        expect(message).not.toContain('sig=');
        expect(message).not.toContain(K1);
      }
      expect(lnurl.received.map((r) => r.url)).toEqual(['/auth']);
    }
  });

  it('accepts the same host written in another form (IPv4 shorthand 127.1)', async () => {
    const token = validToken();
    const lnurl = await rawServer((req, res, self) => {
      if (req.url === '/auth') res.end(`${self.origin.replace('127.0.0.1', '127.1')}/verify?k1=${K1}`);
      else res.end(JSON.stringify({ token }));
    });
    expect(await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders()).toEqual({ Authorization: `Bearer ${token}` });
    expect(lnurl.received.map((r) => r.url.split('?')[0])).toEqual(['/auth', '/verify']);
  });
});

describe('LnurlAuthJwtProvider and what a server can put into error messages', () => {
  const hostile = '\x1b[2J\x1b[31mERROR\x1b[0m\r\n2026-01-01 FATAL forged log line\u009b31m\u202Eevil\u2028';
  // Everything a terminal or a log viewer would interpret rather than print.
  const uninterpreted = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

  it('quotes an error reason on one line, without terminal escapes, and shortened', async () => {
    const lnurl = await rawServer((req, res, self) => {
      if (req.url === '/auth') res.end(`${self.origin}/verify?k1=${K1}`);
      else res.writeHead(403).end(JSON.stringify({ status: 'ERROR', reason: hostile + 'x'.repeat(1_000_000) }));
    });
    const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('authorization');
    const { message } = error as Error;
    expect(message).toMatch(/^LNURL Auth failed, reason is: \\u001b\[2J\\u001b\[31mERROR/);
    expect(message).toContain('\\u000d\\u000a2026-01-01 FATAL forged log line\\u009b31m\\u202eevil\\u2028');
    expect(message).not.toMatch(uninterpreted);
    expect(message.length).toBeLessThan(500);
  });

  it('does the same for the reason of a refused challenge and for a malformed JWT exp', async () => {
    let reply = JSON.stringify({ status: 'ERROR', reason: hostile });
    const lnurl = await rawServer((req, res, self) => {
      if (req.url === '/auth' && reply !== '') res.writeHead(503).end(reply);
      else if (req.url === '/auth') res.end(`${self.origin}/verify?k1=${K1}`);
      else res.end(JSON.stringify({ token: testJwt({ exp: hostile + 'y'.repeat(1_000_000) }) }));
    });
    const refused = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((refused as Error).message).toContain('reason: \\u001b[2J');
    expect((refused as Error).message).not.toMatch(uninterpreted);

    reply = '';
    const badJwt = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((badJwt as HeaderProviderError).reason).toBe('invalid-data');
    expect((badJwt as Error).message).toMatch(/^invalid JWT token: exp must be a non-negative integer, got "/);
    expect((badJwt as Error).message).not.toMatch(uninterpreted);
    expect((badJwt as Error).message.length).toBeLessThan(500);
  });
});

describe('LnurlAuthJwtProvider and malformed or oversized replies', () => {
  it('refuses a streamed reply past the 16 MiB cap without reading it all', async () => {
    let sent = 0;
    const chunk = Buffer.alloc(1 << 20, 0x61);
    const lnurl = await rawServer((_req, res) => {
      // No Content-Length: chunked, and endless until the client hangs up.
      const pump = () => {
        while (sent < 1 << 30 && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      pump();
    });
    const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((error as HeaderProviderError).reason).toBe('request');
    expect((error as Error).message).toContain('exceeds the 16777216-byte limit');
    expect(sent).toBeLessThan(1 << 30);
  });

  it('refuses a declared Content-Length past the cap before reading', async () => {
    const lnurl = await rawServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(64 * 1024 * 1024) });
      res.write('x');
    });
    const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
    expect((error as Error).message).toContain('response body of 67108864 bytes exceeds the 16777216-byte limit');
  });

  it('sends nothing to sign for a k1 that is not 32 bytes of hex', async () => {
    for (const k1 of [K1.slice(2), 'zz'.repeat(32), `${K1}00`, '']) {
      const lnurl = await rawServer((req, res, self) => res.end(`${self.origin}/verify?k1=${k1}`));
      const error = await new LnurlAuthJwtProvider(parent, `${lnurl.origin}/auth`).getHeaders().catch((e: unknown) => e);
      expect((error as HeaderProviderError).reason, k1).toBe('invalid-data');
      expect(lnurl.received.map((r) => r.url), k1).toEqual(['/auth']);
    }
  });
});

describe('SigsAuthProvider and the caller key buffer', () => {
  it('keeps signing with the key after the caller wipes its Buffer', async () => {
    const secret = Buffer.alloc(32, 42);
    const provider = new SigsAuthProvider(secret, {}, { now: () => 1_700_000_000_000 });
    secret.fill(0);
    expect(await provider.getHeaders()).toEqual({ Authorization: sigsAuthorizationValue(new Uint8Array(32).fill(42), 1_700_000_000) });
  });
});
