/**
 * Connection-level errors Node reports before a request reaches the app: each gets a status
 * line that says what happened and an ErrorResponse whose code tells the client whether a
 * retry can help (a timed-out upload can; malformed HTTP cannot).
 */
import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';
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
});
