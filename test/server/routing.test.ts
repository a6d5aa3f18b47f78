/**
 * Request-target forms: an absolute-form target (`POST http://host/vss/getObject`, which an
 * HTTP/1.1 server must accept and some proxies send) reaches the operation, as with the
 * reference's hyper, and both operation routings agree.
 */
import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';

async function rawRequest(port: number, target: string, body: Buffer): Promise<{ statusLine: string; body: Buffer }> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.write(`POST ${target} HTTP/1.1\r\nHost: vss.example\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
  socket.write(body);
  await once(socket, 'close');
  const raw = Buffer.concat(chunks);
  const split = raw.indexOf('\r\n\r\n');
  return { statusLine: raw.subarray(0, raw.indexOf('\r\n')).toString('latin1'), body: raw.subarray(split + 4) };
}

describe.each(['direct', 'express'] as const)('absolute-form request targets (%s routing)', (operationRouting) => {
  it('route to the operation by the URI path, ignoring scheme, authority and query', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, operationRouting });
    try {
      const body = Buffer.from(vss.GetObjectRequest.encode({ key: 'global_version' }).finish());
      for (const target of [`http://127.0.0.1:${server.port}/vss/getObject`, `HTTP://vss.example/vss/getObject?x=1`]) {
        const response = await rawRequest(server.port, target, body);
        expect(response.statusLine, target).toBe('HTTP/1.1 200 OK');
        expect(vss.GetObjectResponse.decode(response.body).value?.key).toBe('global_version');
      }
      // The path still has to match exactly.
      const unknown = await rawRequest(server.port, `http://vss.example/vss/getObject/`, body);
      expect(unknown.statusLine).toBe('HTTP/1.1 400 Bad Request');
      expect(vss.ErrorResponse.decode(unknown.body).message).toBe('Invalid request path.');
    } finally {
      await server.close();
    }
  });
});
