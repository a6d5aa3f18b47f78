/**
 * Graceful shutdown with kept-alive connections: responses finished during close() tell the
 * client to reconnect, so its next request is not sent on a socket the shutdown then resets
 * (a reset leaves the client unsure whether its write was applied), and busy connections end
 * after their current request instead of holding close() open.
 */
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { MemoryBackend, type PutRequest, startVssServer } from '../../src/server/index.js';

/** A MemoryBackend whose puts wait until released, to hold requests in flight. */
class GatedBackend extends MemoryBackend {
  private waiting: Array<() => void> = [];
  private arrivals: Array<() => void> = [];

  override async put(userToken: string, request: PutRequest): Promise<void> {
    await new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      for (const arrived of this.arrivals.splice(0)) arrived();
    });
    return super.put(userToken, request);
  }

  /** Resolves once `count` puts are waiting. */
  async held(count: number): Promise<void> {
    while (this.waiting.length < count) await new Promise<void>((resolve) => this.arrivals.push(resolve));
  }

  release(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }
}

const putBody = (key: string) =>
  Buffer.from(vss.PutObjectRequest.encode({ storeId: 's', transactionItems: [keyValue(key, -1n, new Uint8Array(8))] }).finish());

function post(url: string, body: Buffer, agent: http.Agent): Promise<{ status: number; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: 'POST', agent, headers: { 'content-length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

describe('close() with kept-alive connections', () => {
  it('answers requests in flight when close() starts with Connection: close (kept alive before)', async () => {
    const backend = new GatedBackend();
    const server = await startVssServer({ backend, auth: { kind: 'noop' }, shutdownGraceMs: 5000 });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    try {
      // Before shutdown, connections are kept alive.
      const warmup = post(`${server.url}/putObjects`, putBody('w'), agent);
      await backend.held(1);
      backend.release();
      expect(await warmup).toEqual({ status: 200, connection: 'keep-alive' });

      const inFlight = [0, 1, 2].map((i) => post(`${server.url}/putObjects`, putBody(`k${i}`), agent));
      await backend.held(3);
      const closing = server.close();
      backend.release();
      for (const response of await Promise.all(inFlight)) expect(response).toEqual({ status: 200, connection: 'close' });
      await closing;
      for (const key of ['k0', 'k1', 'k2']) expect((await backend.get('unauth-user', 's', key))?.version).toBe(1n);
    } finally {
      agent.destroy();
      await server.close();
    }
  });

  it('a request still arriving when close() starts is answered, with Connection: close, and its connection then ends', async () => {
    const backend = new MemoryBackend();
    const server = await startVssServer({ backend, auth: { kind: 'noop' }, shutdownGraceMs: 5000 });
    try {
      const { hostname, port } = new URL(server.url);
      const socket = net.connect(Number(port), hostname);
      await once(socket, 'connect');
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
      const ended = once(socket, 'close');
      const body = putBody('late');
      // Half the request head is on the wire: the connection is not idle, so shutdown waits for it.
      socket.write('POST /vss/putObjects HTTP/1.1\r\nHost: vss\r\n');
      await new Promise((resolve) => setTimeout(resolve, 50));
      const closing = server.close();
      await new Promise((resolve) => setTimeout(resolve, 100));
      socket.write(`Content-Length: ${body.length}\r\n\r\n`);
      socket.write(body);
      await ended;
      await closing;
      expect(received).toMatch(/^HTTP\/1\.1 200 /);
      expect(received.toLowerCase()).toContain('\r\nconnection: close\r\n');
      expect((await backend.get('unauth-user', 's', 'late'))?.version).toBe(1n);
    } finally {
      await server.close();
    }
  });
});
