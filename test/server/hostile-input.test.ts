/**
 * What one hostile request can cost the server: CPU on the event loop for input sized by the
 * client (a body-sized key or store id, a header-sized signature time), memory kept after the
 * request (the verified-header cache, user tokens cut from huge headers), and a connection held
 * by a body that stopped arriving, without failing an honest upload that is merely slow.
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { once } from 'node:events';
import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { MAX_CACHED_HEADER_LENGTH } from '../../src/server/auth/signature.js';
import { AuthError, createVssHandler, fitsLength, MemoryBackend, NoopAuthorizer, SignatureAuthorizer, startVssServer } from '../../src/server/index.js';
import { signatureHeader, text } from './helpers.js';

// Passes everything through; lets a test see the options the server gave Node's HTTP server.
vi.mock('node:http', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:http')>();
  const createServer = vi.fn(actual.createServer);
  return { ...actual, createServer, default: { ...actual, createServer } };
});

/** Heap in use after a full garbage collection. */
function heapAfterGc(): number {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
  return process.memoryUsage().heapUsed;
}

/** Calls of String.prototype.charCodeAt made while `work` runs. */
function charCodeAtCalls(work: () => void): number {
  const spy = vi.spyOn(String.prototype, 'charCodeAt');
  try {
    work();
    return spy.mock.calls.length;
  } finally {
    spy.mockRestore();
  }
}

describe('fitsLength (keys, store ids, user tokens)', () => {
  it('counts code points like varchar(n): surrogate pairs once, lone surrogates once each', () => {
    expect(fitsLength('a'.repeat(600), 600)).toBe(true);
    expect(fitsLength('a'.repeat(601), 600)).toBe(false);
    expect(fitsLength('😀'.repeat(600), 600)).toBe(true);
    expect(fitsLength(`${'😀'.repeat(600)}a`, 600)).toBe(false);
    expect(fitsLength(`${'a'.repeat(599)}😀`, 600)).toBe(true);
    expect(fitsLength('\ud800'.repeat(600), 600)).toBe(true);
    expect(fitsLength('\ud800'.repeat(601), 600)).toBe(false);
    expect(fitsLength('', 0)).toBe(true);
    expect(fitsLength('a', 0)).toBe(false);
  });

  it('does not read a body-sized string to refuse it', () => {
    // Counted to the end, a 120-million-character key held the event loop for 1.4 s.
    const huge = 'a'.repeat(1_000_000);
    let fits = true;
    expect(charCodeAtCalls(() => (fits = fitsLength(huge, 600)))).toBe(0);
    expect(fits).toBe(false);
  });

  it('stops counting at the first code point past the limit', () => {
    // Between max and 2 * max UTF-16 units the answer depends on the pairs: count, but no further than needed.
    const text = 'a'.repeat(1_199);
    let fits = true;
    expect(charCodeAtCalls(() => (fits = fitsLength(text, 600)))).toBeLessThanOrEqual(601);
    expect(fits).toBe(false);
  });
});

describe('signature authorizer memory and CPU per request', () => {
  // The reference's u64 parser accepts any number of leading zeros, so a client can send a valid
  // header of up to Node's 16 KB header limit, and anyone can make any number of users.
  const paddedTime = () => String(Math.floor(Date.now() / 1000)).padStart(12_000, '0');
  /** Flat copies, as each request's header arrives from the HTTP parser. */
  const freshCopy = (header: string) => Buffer.from(header, 'latin1').toString('latin1');

  it('keeps a bounded amount of memory per cached header, however long the header', async () => {
    const authorizer = new SignatureAuthorizer();
    const time = paddedTime();
    let headers = Array.from({ length: 400 }, () => signatureHeader(secp256k1.utils.randomSecretKey(), time));
    const before = heapAfterGc();
    for (const header of headers) await authorizer.authorize({ authorization: freshCopy(header) });
    headers = [];
    // Cached whole, each entry is a 12 KB header: 10,000 of them (the cache size) over 120 MB.
    expect((heapAfterGc() - before) / 400).toBeLessThan(2_000);
  });

  it('returns a user token that does not keep a long header alive', async () => {
    const authorizer = new SignatureAuthorizer({ verifiedCacheSize: 0 });
    const time = paddedTime();
    let headers = Array.from({ length: 400 }, () => signatureHeader(secp256k1.utils.randomSecretKey(), time));
    const tokens: string[] = [];
    const before = heapAfterGc();
    for (const header of headers) tokens.push(await authorizer.authorize({ authorization: freshCopy(header) }));
    headers = [];
    expect(tokens.every((token) => token.length === 66)).toBe(true);
    // Anything that holds user tokens (a backend's batch, a cache) would hold the headers too.
    expect((heapAfterGc() - before) / tokens.length).toBeLessThan(2_000);
  });

  it('still accepts long headers, verifying them on every use, and caches ordinary ones', async () => {
    const secret = secp256k1.utils.randomSecretKey();
    const pubkeyHex = Buffer.from(secp256k1.getPublicKey(secret, true)).toString('hex');
    const authorizer = new SignatureAuthorizer();
    const long = signatureHeader(secret, paddedTime());
    expect(long.length).toBeGreaterThan(MAX_CACHED_HEADER_LENGTH);
    const bufferFrom = vi.spyOn(Buffer, 'from');
    // Signature checks since the last clear: @noble's exports cannot be spied on, and the
    // authorizer decodes the pubkey from hex only to verify a signature.
    const verifications = () => (bufferFrom.mock.calls as unknown[][]).filter(([value, encoding]) => encoding === 'hex' && String(value).length === 66).length;
    try {
      expect(await authorizer.authorize({ authorization: freshCopy(long) })).toBe(pubkeyHex);
      expect(await authorizer.authorize({ authorization: freshCopy(long) })).toBe(pubkeyHex);
      expect(verifications()).toBe(2);
      // An honest client's header: 10 digits of time, or a few zeros more, is verified once.
      const now = String(Math.floor(Date.now() / 1000));
      for (const time of [now, `+${now.padStart(31, '0')}`]) {
        const header = signatureHeader(secret, time);
        expect(header.length).toBeLessThanOrEqual(MAX_CACHED_HEADER_LENGTH);
        bufferFrom.mockClear();
        expect(await authorizer.authorize({ authorization: freshCopy(header) })).toBe(pubkeyHex);
        expect(await authorizer.authorize({ authorization: freshCopy(header) })).toBe(pubkeyHex);
        expect(verifications()).toBe(1);
      }
    } finally {
      bufferFrom.mockRestore();
    }
  });

  it('refuses a header-sized time by its digit count, without converting it', async () => {
    const authorizer = new SignatureAuthorizer({ verifiedCacheSize: 0 });
    const header = signatureHeader(secp256k1.utils.randomSecretKey(), '9'.repeat(12_000));
    const bigint = vi.spyOn(globalThis, 'BigInt');
    try {
      const error = await authorizer.authorize({ authorization: header }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(AuthError);
      expect((error as AuthError).message).toBe('Time is not an integer');
      // Converting 12,000 digits costs about 0.3 ms, only to refuse the result.
      expect(bigint.mock.calls.filter(([value]) => String(value).length > 20)).toEqual([]);
    } finally {
      bigint.mockRestore();
    }
    // u64::MAX itself is a number (then out of the time window); one more is not.
    const at = (time: string) => authorizer.authorize({ authorization: signatureHeader(secp256k1.utils.randomSecretKey(), time) }).catch((e: AuthError) => e.message);
    expect(await at(`+000${'18446744073709551615'}`)).toBe('Time is too far from now');
    expect(await at('18446744073709551616')).toBe('Time is not an integer');
    expect(await at('0')).toBe('Time is too far from now');
  });
});

describe('request timeouts', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  /** The app on a plain Node server with the given stall timeout, no limit on the whole request. */
  async function appServer(bodyStallTimeoutMs: number): Promise<number> {
    const handler = createVssHandler({
      backend: new MemoryBackend(),
      authorizer: new NoopAuthorizer(),
      logger: pino({ level: 'silent' }),
      maxRequestBodySize: 1024 * 1024,
      bodyStallTimeoutMs,
    });
    const server = http.createServer({ requestTimeout: 0 }, handler);
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as AddressInfo).port;
  }

  /** Sends the head, then the body in `pieces` `gapMs` apart; resolves with the start of the answer. */
  async function upload(port: number, body: Uint8Array, pieces: number, gapMs: number): Promise<Buffer> {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    try {
      const answer = once(socket, 'data').then(([chunk]) => chunk as Buffer);
      socket.write(`POST /vss/putObjects HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`);
      const size = Math.ceil(body.length / pieces);
      for (let offset = 0; offset < body.length; offset += size) {
        await new Promise((resolve) => setTimeout(resolve, gapMs));
        socket.write(body.subarray(offset, offset + size));
      }
      return await answer;
    } finally {
      socket.destroy();
    }
  }

  function parse(raw: Buffer): { statusLine: string; headers: string; body: Buffer } {
    const split = raw.indexOf('\r\n\r\n');
    const head = raw.subarray(0, split).toString('latin1');
    return { statusLine: head.split('\r\n')[0], headers: head.toLowerCase(), body: raw.subarray(split + 4) };
  }

  it('a body that stops arriving is answered with a retryable 408 and its connection closed', async () => {
    const port = await appServer(300);
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.write('POST /vss/putObjects HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc');
    // Without a stall timeout (and with no limit on the whole request) this waits forever.
    const gaveUp = new Promise((_resolve, reject) => setTimeout(() => reject(new Error('no answer to a stalled body within 5 s')), 5_000).unref());
    await Promise.race([once(socket, 'close'), gaveUp]);
    socket.destroy();
    const { statusLine, headers, body } = parse(Buffer.concat(chunks));
    expect(statusLine).toBe('HTTP/1.1 408 Request Timeout');
    expect(headers).toContain('vss-protocol-version: 0');
    expect(headers).toContain('connection: close');
    expect(vss.ErrorResponse.decode(body)).toMatchObject({ errorCode: vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, message: 'Request not received in time' });
  });

  it('a slow upload that keeps progressing succeeds, however long it takes in total', async () => {
    const port = await appServer(300);
    const body = vss.PutObjectRequest.encode({ storeId: 'slow', transactionItems: [keyValue('k', -1n, text('v'.repeat(2_000)))] }).finish();
    // Ten pieces 100 ms apart: three times the stall timeout in all, never 300 ms of silence.
    expect(parse(await upload(port, body, 10, 100)).statusLine).toBe('HTTP/1.1 200 OK');
  });

  it('bytes that arrived while the event loop was held past the stall timeout are not a stall', async () => {
    const port = await appServer(300);
    const body = vss.PutObjectRequest.encode({ storeId: 'held', transactionItems: [keyValue('k', -1n, text('v'.repeat(2_000)))] }).finish();
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    try {
      const answer = once(socket, 'data').then(([chunk]) => chunk as Buffer);
      socket.write(`POST /vss/putObjects HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`);
      socket.write(body.subarray(0, 100));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // The rest reaches the server's socket buffer at once, then the event loop is held (a long
      // synchronous call) for well past the stall timeout before it could read them: the next
      // turn of the loop runs the overdue timer before it reads the bytes.
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          socket.write(body.subarray(100));
          const until = Date.now() + 1_000;
          while (Date.now() < until) {
            // held
          }
          resolve();
        }),
      );
      expect(parse(await answer).statusLine).toBe('HTTP/1.1 200 OK');
    } finally {
      socket.destroy();
    }
  });

  it('the server has no limit on the whole request, but keeps the one on its headers', async () => {
    const createServer = vi.mocked(http.createServer);
    createServer.mockClear();
    const server = await startVssServer({ auth: { kind: 'noop' } });
    try {
      expect(createServer).toHaveBeenCalledTimes(1);
      const created = createServer.mock.results[0].value as Server;
      // Node's default, 300 s for the whole request, answered 408 to every retry of a 128 MiB
      // upload slower than about 450 KB/s.
      expect(created.requestTimeout).toBe(0);
      expect(created.headersTimeout).toBeGreaterThan(0);
      expect(created.headersTimeout).toBeLessThanOrEqual(60_000);
    } finally {
      await server.close();
    }
  });

  it('refuses a stall timeout a timer cannot honour', () => {
    const options = { backend: new MemoryBackend(), authorizer: new NoopAuthorizer(), logger: pino({ level: 'silent' }), maxRequestBodySize: 1024 };
    for (const bad of [-1, Number.NaN, 1.5, 2 ** 31]) expect(() => createVssHandler({ ...options, bodyStallTimeoutMs: bad })).toThrow(RangeError);
    expect(() => createVssHandler({ ...options, bodyStallTimeoutMs: 0 })).not.toThrow();
  });
});
