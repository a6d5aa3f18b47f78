/**
 * Connection-level errors Node reports before a request reaches the app: each gets a status
 * line that says what happened and an ErrorResponse whose code tells the client whether a
 * retry can help (a timed-out upload can; malformed HTTP cannot).
 */
import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { MemoryBackend, startVssServer } from '../../src/server/index.js';
import { answerClientError } from '../../src/server/server.js';

function parse(raw: string): { statusLine: string; headers: string; error: vss.ErrorResponse } {
  const split = raw.indexOf('\r\n\r\n');
  const head = raw.slice(0, split);
  return {
    statusLine: head.split('\r\n')[0],
    headers: head.toLowerCase(),
    error: vss.ErrorResponse.decode(Buffer.from(raw.slice(split + 4), 'latin1')),
  };
}

/** What a client receives when answerClientError handles `code` on the server side of a connection. */
async function answerTo(code: string): Promise<string> {
  const listener = net.createServer((socket) => answerClientError(Object.assign(new Error(code), { code }), socket));
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  try {
    const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
    let raw = '';
    client.on('data', (chunk: Buffer) => (raw += chunk.toString('latin1')));
    await once(client, 'close');
    return raw;
  } finally {
    listener.close();
  }
}

describe('connection-level errors', () => {
  it('a request that timed out (slow upload) is a retryable 408, not an invalid request', async () => {
    const { statusLine, headers, error } = parse(await answerTo('ERR_HTTP_REQUEST_TIMEOUT'));
    expect(statusLine).toBe('HTTP/1.1 408 Request Timeout');
    expect(headers).toContain('vss-protocol-version: 0');
    expect(error.errorCode).toBe(vss.ErrorCode.INTERNAL_SERVER_EXCEPTION);
  });

  it('malformed HTTP stays a non-retryable 400', async () => {
    const { statusLine, error } = parse(await answerTo('HPE_INVALID_METHOD'));
    expect(statusLine).toBe('HTTP/1.1 400 Bad Request');
    expect(error).toMatchObject({ errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: 'Malformed HTTP request' });
  });

  it('oversized request headers get 431 with its own reason phrase and message', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' } });
    try {
      const socket = net.connect(server.port, '127.0.0.1');
      let raw = '';
      socket.on('data', (chunk: Buffer) => (raw += chunk.toString('latin1')));
      socket.write(`POST /vss/getObject HTTP/1.1\r\nhost: vss\r\nx-big: ${'a'.repeat(64 * 1024)}\r\ncontent-length: 0\r\n\r\n`);
      await once(socket, 'close');
      const { statusLine, headers, error } = parse(raw);
      expect(statusLine).toBe('HTTP/1.1 431 Request Header Fields Too Large');
      expect(headers).toContain('vss-protocol-version: 0');
      expect(error).toMatchObject({ errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: 'Request headers too large' });
    } finally {
      await server.close();
    }
  });

  it('a malformed request on a live server gets 400 with the version header and an ErrorResponse', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' } });
    try {
      const { statusLine, headers, error } = parse(await exchange(server.port, 'GARBAGE\r\n\r\n'));
      expect(statusLine).toBe('HTTP/1.1 400 Bad Request');
      expect(headers).toContain('vss-protocol-version: 0');
      expect(error).toMatchObject({ errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: 'Malformed HTTP request' });
    } finally {
      await server.close();
    }
  });

  it('with CORS open to any origin, the 431 and 400 answers carry CORS headers a browser can read them with', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, corsOrigins: ['*'] });
    try {
      const big = `POST /vss/getObject HTTP/1.1\r\nhost: vss\r\norigin: https://wallet.example\r\nx-big: ${'a'.repeat(64 * 1024)}\r\n\r\n`;
      for (const [request, status] of [[big, '431'], ['GARBAGE\r\n\r\n', '400']] as const) {
        const { statusLine, headers } = parse(await exchange(server.port, request));
        expect(statusLine).toContain(` ${status} `);
        expect(headers).toContain('\r\naccess-control-allow-origin: *\r\n');
        expect(headers).toContain('\r\naccess-control-expose-headers: vss-protocol-version, retry-after');
        expect(headers).toContain('vss-protocol-version: 0');
      }
    } finally {
      await server.close();
    }
  });

  it('with an origin allow-list (the origin cannot be read from a refused request), no CORS header is guessed', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, corsOrigins: ['https://wallet.example'] });
    try {
      const { statusLine, headers } = parse(await exchange(server.port, 'GARBAGE\r\norigin: https://wallet.example\r\n\r\n'));
      expect(statusLine).toBe('HTTP/1.1 400 Bad Request');
      expect(headers).not.toContain('access-control-allow-origin');
    } finally {
      await server.close();
    }
  });

  it('a malformed request pipelined behind a valid one is answered after the valid one, which gets its own response', async () => {
    const backend = new MemoryBackend();
    await backend.put('unauth-user', { storeId: 's', transactionItems: [{ key: 'k', version: 0n, value: Buffer.from('stored value') }], deleteItems: [] });
    const server = await startVssServer({ auth: { kind: 'noop' }, backend });
    try {
      const body = Buffer.from(vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish());
      const valid = Buffer.concat([Buffer.from(`POST /vss/getObject HTTP/1.1\r\nhost: vss\r\ncontent-length: ${body.length}\r\n\r\n`), body]);
      // One write: Node parses the garbage while the valid request's response is still being prepared.
      const raw = await exchange(server.port, Buffer.concat([valid, Buffer.from('GARBAGE\r\n\r\n')]));
      expect(raw.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
      const second = raw.indexOf('HTTP/1.1 400 Bad Request\r\n');
      expect(second).toBeGreaterThan(0);
      const first = raw.slice(0, second);
      const response = vss.GetObjectResponse.decode(Buffer.from(first.slice(first.indexOf('\r\n\r\n') + 4), 'latin1'));
      expect(Buffer.from(response.value?.value ?? []).toString()).toBe('stored value');
      expect(parse(raw.slice(second)).error.message).toBe('Malformed HTTP request');
    } finally {
      await server.close();
    }
  });
});

describe('connection left open by a client after an error answer', () => {
  it('is cut after the linger time instead of lasting until the client closes its side', async () => {
    let serverSide: net.Socket | undefined;
    const listener = net.createServer((socket) => {
      serverSide = socket;
      answerClientError(Object.assign(new Error('bad'), { code: 'HPE_INVALID_METHOD' }), socket, {}, 100);
    });
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    // allowHalfOpen: this client reads the answer and its end, and never closes its own side.
    const client = net.connect({ port: (listener.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => {});
    client.resume();
    try {
      await once(client, 'end');
      await once(serverSide!, 'close');
      expect(serverSide?.destroyed).toBe(true);
    } finally {
      client.destroy();
      listener.close();
    }
  }, 10_000);
});

/** Sends `request` on a new connection and returns everything received until the server closes it. */
async function exchange(port: number, request: string | Buffer): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  let raw = '';
  socket.on('data', (chunk: Buffer) => (raw += chunk.toString('latin1')));
  socket.write(request);
  await once(socket, 'close');
  return raw;
}
