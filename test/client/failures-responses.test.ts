/**
 * Replies from a broken, hostile or misbehaving server, or from a middlebox in front of it (a
 * captive portal, a corporate proxy): bodies that are not protobuf, bodies that trickle or stop,
 * connections cut or garbled mid-body, odd statuses and headers, absurd Retry-After values.
 * Every case runs over real HTTP on loopback, through both transports the client ships with
 * (nodeHttpFetch and the platform fetch). What is checked: the error is typed, says what came
 * back (status, content-type, first bytes), and a write whose outcome is unknown is never
 * reported as known not applied.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  ConflictError,
  errorProvesNotApplied,
  ExponentialBackoffRetryPolicy,
  InternalServerError,
  MAX_RETRY_AFTER_MS,
  NO_RETRY,
  nodeHttpFetch,
  VersionMismatchError,
  VssClient,
  VssClientError,
  type FetchFunction,
} from '../../src/client/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';

const TRANSPORTS: [string, () => FetchFunction][] = [
  ['nodeHttpFetch', () => nodeHttpFetch()],
  ['platform fetch', () => globalThis.fetch as FetchFunction],
];

const VERSION = { 'vss-protocol-version': '0' };
const text = (s: string) => new TextEncoder().encode(s);
const errorBody = (code: vss.ErrorCode, message: string) => vss.ErrorResponse.encode({ errorCode: code, message }).finish();
const put = () => ({ storeId: 's', transactionItems: [keyValue('k', 0n, text('v'))] });

interface TestServer {
  url: string;
  close(): Promise<void>;
}

/** A node:http server answering every request with `handler` (the request body is drained first). */
async function httpServer(handler: (req: IncomingMessage, res: ServerResponse, index: number) => void): Promise<TestServer> {
  let index = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => handler(req, res, index++));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/vss`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A raw TCP server that answers each connection's first bytes with `reply` (for replies node:http will not send). */
async function tcpServer(reply: (socket: Socket) => void): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', () => reply(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/vss`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe.each(TRANSPORTS)('replies that are not from a VSS server (%s)', (_name, transport) => {
  it("a captive portal's or a proxy's HTML page without the protocol header names its status and content-type", async () => {
    const server = await httpServer((req, res) => {
      const status = req.url?.endsWith('/getObject') ? 200 : 403;
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<html><title>Hotel WiFi: please log in</title></html>');
    });
    const client = new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY });

    const portal = await client.getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(portal).toBeInstanceOf(VersionMismatchError);
    expect((portal as VersionMismatchError).contentType).toBe('text/html; charset=utf-8');
    expect((portal as Error).message).toContain('on an HTTP 200 reply with content-type text/html; charset=utf-8');
    expect((portal as Error).message).toContain('captive portal');

    const blocked = await client.putObjects(put()).catch((e: unknown) => e);
    expect(blocked).toBeInstanceOf(VersionMismatchError);
    expect((blocked as Error).message).toContain('on an HTTP 403 reply with content-type text/html');
    expect(errorProvesNotApplied(blocked)).toBe(false);
    await server.close();
  });

  it('a body that is not protobuf, behind a valid protocol header, is quoted with its content-type', async () => {
    const server = await httpServer((req, res) => {
      if (req.url?.endsWith('/getObject')) {
        res.writeHead(200, { ...VERSION, 'content-type': 'text/html' });
        res.end('<html><body>Login to the WiFi</body></html>');
      } else if (req.url?.endsWith('/putObjects')) {
        res.writeHead(500, { ...VERSION, 'content-type': 'text/plain' });
        res.end('Internal Server Error: database is down');
      } else if (req.url?.endsWith('/listKeyVersions')) {
        res.writeHead(200, VERSION);
        res.end(Buffer.from([0xff, 0x00, 0x13, 0x37]));
      } else {
        res.writeHead(409, VERSION);
        res.end();
      }
    });
    const client = new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY });

    const html = await client.getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(html).toBeInstanceOf(VssClientError);
    expect((html as VssClientError).reason).toBe('decode');
    expect((html as Error).message).toContain('undecodable 200 response (content-type text/html, 43 bytes: "<html><body>Login to the WiFi</body></html>")');

    const plain = await client.putObjects(put()).catch((e: unknown) => e);
    expect((plain as VssClientError).reason).toBe('decode');
    expect((plain as Error).message).toContain('HttpStatusCode: 500');
    expect((plain as Error).message).toContain('"Internal Server Error: database is down"');
    expect(errorProvesNotApplied(plain)).toBe(false);

    const binary = await client.listKeyVersions({ storeId: 's' }).catch((e: unknown) => e);
    expect((binary as VssClientError).reason).toBe('decode');
    expect((binary as Error).message).toContain('no content-type, 4 bytes: 0xff001337');

    // An empty body decodes as an ErrorResponse with code 0: the message must say so, not just "code 0".
    const empty = await client.deleteObject({ storeId: 's', keyValue: keyValue('k', 0n) }).catch((e: unknown) => e);
    expect((empty as VssClientError).reason).toBe('unknown-error-code');
    expect((empty as Error).message).toContain('(HTTP 409, no content-type, empty body)');
    expect(errorProvesNotApplied(empty)).toBe(false);
    await server.close();
  });

  it('a repeated protocol header (a proxy adding it while the server sends it too) is accepted; another value is not', async () => {
    let served = 0;
    const server = await tcpServer((socket) => {
      const second = served++ === 0 ? '0' : '1';
      socket.end(`HTTP/1.1 200 OK\r\nvss-protocol-version: 0\r\nvss-protocol-version: ${second}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
    });
    const client = new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY });
    await expect(client.putObjects(put())).resolves.toBeDefined();
    const other = await client.putObjects(put()).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(VersionMismatchError);
    expect((other as VersionMismatchError).versionServed).toBe('0, 1');
    await server.close();
  });

  it('a 101 Switching Protocols reply fails the attempt at once as a network error, not as a silent server', async () => {
    const server = await tcpServer((socket) => socket.end('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nvss-protocol-version: 0\r\n\r\n'));
    const error = await new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY, timeoutMs: 5_000 })
      .putObjects(put())
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect((error as VssClientError).reason).toBe('network');
    expect(errorProvesNotApplied(error)).toBe(false);
    await server.close();
  }, 15_000);
});

describe.each(TRANSPORTS)('bodies that trickle, stop or break (%s)', (_name, transport) => {
  it('the per-attempt deadline covers a body that trickles one byte at a time, not just the headers', async () => {
    const server = await httpServer((_req, res) => {
      res.writeHead(200, { ...VERSION, 'content-length': '1000' });
      const timer = setInterval(() => res.write(Buffer.from([0])), 20);
      res.on('close', () => clearInterval(timer));
    });
    const error = await new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY, timeoutMs: 300 })
      .getObject({ storeId: 's', key: 'k' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect((error as VssClientError).reason).toBe('timeout');
    expect((error as Error).message).toContain('reading the response of');
    await server.close();
  });

  it("a write whose reply is cut mid-body is ambiguous, and the retry's conflict says so", async () => {
    let attempts = 0;
    const server = await tcpServer((socket) => {
      if (attempts++ === 0) {
        // 200 with a Content-Length it never delivers: the write may well have committed.
        socket.write('HTTP/1.1 200 OK\r\nvss-protocol-version: 0\r\ncontent-length: 100\r\n\r\nab');
        setTimeout(() => socket.resetAndDestroy(), 20);
      } else {
        const body = Buffer.from(errorBody(vss.ErrorCode.CONFLICT_EXCEPTION, 'version moved'));
        socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 409 Conflict\r\nvss-protocol-version: 0\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`), body]));
      }
    });
    const cut = await new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY }).putObjects(put()).catch((e: unknown) => e);
    expect((cut as VssClientError).reason).toBe('network');
    expect(errorProvesNotApplied(cut)).toBe(false);

    attempts = 0;
    const retried = await new VssClient(server.url, { fetch: transport(), retryPolicy: new ExponentialBackoffRetryPolicy(0).withMaxAttempts(2) })
      .putObjects(put())
      .catch((e: unknown) => e);
    expect(retried).toBeInstanceOf(ConflictError);
    expect((retried as ConflictError).afterAmbiguousAttempt).toBe(true);
    expect(errorProvesNotApplied(retried)).toBe(false);
    await server.close();
  });

  it('a broken chunked encoding or a short Content-Length is a network error, never a decoded reply', async () => {
    for (const reply of [
      'HTTP/1.1 200 OK\r\nvss-protocol-version: 0\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nab\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nvss-protocol-version: 0\r\ncontent-length: 10\r\n\r\nab',
    ]) {
      const server = await tcpServer((socket) => socket.end(reply));
      const error = await new VssClient(server.url, { fetch: transport(), retryPolicy: NO_RETRY }).putObjects(put()).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(VssClientError);
      expect((error as VssClientError).reason).toBe('network');
      expect(errorProvesNotApplied(error)).toBe(false);
      await server.close();
    }
  });
});

describe('statuses and headers a server should not send', () => {
  it('a 429 with an absurd Retry-After: unusable values are ignored, a far one is waited only up to MAX_RETRY_AFTER_MS', async () => {
    const retryAfter = ['-5', '99999999999', 'Wed, 21 Oct 2015 07:28:00 GMT', 'Fri, 01 Jan 2100 00:00:00 GMT', 'soon'];
    const server = await httpServer((_req, res, index) => {
      if (index < retryAfter.length) {
        res.writeHead(429, { ...VERSION, 'retry-after': retryAfter[index] });
        res.end(errorBody(vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'Rate limit exceeded'));
      } else {
        res.writeHead(200, VERSION);
        res.end();
      }
    });
    const delays: number[] = [];
    const client = new VssClient(server.url, {
      fetch: nodeHttpFetch(),
      retryPolicy: new ExponentialBackoffRetryPolicy(1).withMaxAttempts(10),
      sleep: async (ms) => void delays.push(ms),
    });
    await client.putObjects(put());
    // -5 and 'soon' are not Retry-After values; a past date asks for no wait; 99999999999 s and
    // the year 2100 are far beyond the cap, which is waited before asking again.
    expect(delays).toEqual([1, MAX_RETRY_AFTER_MS, 7, MAX_RETRY_AFTER_MS, 31]);
    await server.close();
  });

  it('a 5xx whose ErrorResponse claims CONFLICT is a ConflictError (the code decides, as documented)', async () => {
    const server = await httpServer((_req, res) => {
      res.writeHead(503, VERSION);
      res.end(errorBody(vss.ErrorCode.CONFLICT_EXCEPTION, 'odd'));
    });
    const error = await new VssClient(server.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY }).putObjects(put()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect((error as ConflictError).status).toBe(503);
    await server.close();
  });

  it('a 204 to getObject is the API violation of a missing value', async () => {
    const server = await httpServer((_req, res) => {
      res.writeHead(204, VERSION);
      res.end();
    });
    const error = await new VssClient(server.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InternalServerError);
    await server.close();
  });
});
