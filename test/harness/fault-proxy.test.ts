/**
 * The fault proxy against a real node:http server over loopback sockets. Every assertion is on
 * what a client or the server can observe: bytes, status codes, socket error codes, whether the
 * server saw the request, and which bytes the proxy delivered where a latency test moves a fake
 * clock by hand (never wall-clock durations).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { randomBytes, createHash } from 'node:crypto';
import { FaultProxy } from '../../harness/fault-proxy.js';

/** A real HTTP server that records what reached it. */
interface Upstream {
  server: Server;
  port: number;
  /** Paths of the requests the server has fully received, in order. */
  received: string[];
}

async function startUpstream(): Promise<Upstream> {
  const received: string[] = [];
  const server = createServer((req, res) => {
    if (req.url === '/early') {
      // Answers before reading the body, as a server refusing an upload does (node then reads and
      // discards the rest of the body, and the connection stays usable).
      received.push(req.url);
      res.writeHead(413, { 'content-type': 'text/plain' });
      res.end('too large');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(req.url ?? '');
      const body = Buffer.concat(chunks);
      if (req.url === '/echo') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(body);
      } else if (req.url === '/chunked') {
        // No length: node sends the body with chunked transfer coding.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('one ');
        res.write('two ');
        res.end('three');
      } else if (req.url?.startsWith('/bytes/')) {
        // A deterministic large response, to check integrity through the proxy.
        const size = Number(req.url.slice('/bytes/'.length));
        res.writeHead(200);
        res.end(patternBytes(size));
      } else {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`ok ${req.url}`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, received };
}

function patternBytes(size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + 7) & 0xff;
  return out;
}

interface Reply {
  status: number;
  body: Buffer;
}

/** One HTTP request; rejects with the socket error (its `code`), or ETIMEDOUT after `timeoutMs`. */
function send(
  url: string,
  options: { path?: string; body?: Buffer; agent?: Agent; timeoutMs?: number } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}${options.path ?? '/'}`,
      { method: options.body ? 'POST' : 'GET', agent: options.agent ?? false },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    if (options.timeoutMs !== undefined) {
      req.setTimeout(options.timeoutMs, () => {
        req.destroy(Object.assign(new Error('client timeout'), { code: 'ETIMEDOUT' }));
      });
    }
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The error code a failed request ends with. */
async function failureCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? `no code: ${String(error)}`;
  }
  throw new Error('expected the request to fail, but it succeeded');
}

/** How a raw TCP connection through the proxy ends: a clean FIN ('end') or an error code. */
function rawOutcome(port: number, payload?: string): Promise<{ kind: 'end' } | { kind: 'error'; code: string }> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host: '127.0.0.1', port });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve({ kind: 'error', code: error.code ?? '?' }));
    socket.on('end', () => {
      resolve({ kind: 'end' });
      socket.destroy();
    });
    socket.on('data', () => undefined);
    if (payload !== undefined) socket.write(payload);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** The real setTimeout, for waits while a test runs on a fake clock. */
const realSetTimeout = globalThis.setTimeout;

/**
 * A hand-written HTTP/1.1 client on one raw socket, for what node's client never does on its own:
 * waiting for `100 Continue`, sending a body after an early answer, pipelining.
 */
class RawClient {
  readonly socket: Socket;
  text = '';
  readonly ended: Promise<{ kind: 'end' } | { kind: 'error'; code: string }>;

  private constructor(port: number) {
    this.socket = connect({ host: '127.0.0.1', port });
    this.socket.on('data', (chunk: Buffer) => (this.text += chunk.toString('latin1')));
    this.ended = new Promise((resolve) => {
      this.socket.on('error', (error: NodeJS.ErrnoException) => resolve({ kind: 'error', code: error.code ?? '?' }));
      this.socket.on('end', () => {
        resolve({ kind: 'end' });
        this.socket.destroy();
      });
    });
  }

  static async open(port: number): Promise<RawClient> {
    const client = new RawClient(port);
    await new Promise<void>((resolve) => client.socket.once('connect', () => resolve()));
    return client;
  }

  /** Writes and waits until the bytes are handed to the system. */
  async write(text: string): Promise<void> {
    await new Promise<void>((resolve, reject) => this.socket.write(text, (error) => (error ? reject(error) : resolve())));
  }

  /** Waits until what was received contains `needle` `times` times (or fails once the socket ends). */
  async waitFor(needle: string, times = 1): Promise<void> {
    let done = false;
    void this.ended.then(() => (done = true));
    for (;;) {
      if (this.text.split(needle).length - 1 >= times) return;
      if (done) throw new Error(`connection ended before ${times} x ${JSON.stringify(needle)}; got ${JSON.stringify(this.text)}`);
      await sleep(5);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Waits (within a bound, to fail instead of hanging) until `received` has `n` entries. */
async function receivedCount(upstream: Upstream, n: number): Promise<void> {
  for (let waited = 0; upstream.received.length < n && waited < 5_000; waited += 5) await sleep(5);
}

describe('FaultProxy', () => {
  let upstream: Upstream;
  let proxy: FaultProxy;

  beforeEach(async () => {
    upstream = await startUpstream();
    proxy = await FaultProxy.start({ target: `http://127.0.0.1:${upstream.port}` });
  });

  afterEach(async () => {
    await proxy.close();
    upstream.server.closeAllConnections();
    await new Promise<void>((resolve) => upstream.server.close(() => resolve()));
  });

  describe('normal mode', () => {
    it('forwards requests and responses byte for byte and counts them', async () => {
      const body = randomBytes(3 * 1024 * 1024);
      const reply = await send(proxy.url, { path: '/echo', body });
      expect(reply.status).toBe(200);
      expect(createHash('sha256').update(reply.body).digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));

      const big = await send(proxy.url, { path: '/bytes/2000000' });
      expect(big.body.equals(patternBytes(2_000_000))).toBe(true);

      const stats = proxy.stats();
      expect(stats.connectionsAccepted).toBe(2);
      expect(stats.requests).toBe(2);
      // Headers come on top of the bodies, so the bodies are lower bounds.
      expect(stats.bytesToServer).toBeGreaterThan(body.length);
      expect(stats.bytesToClient).toBeGreaterThan(body.length + 2_000_000);
      expect(upstream.received).toEqual(['/echo', '/bytes/2000000']);
      expect(proxy.mode).toEqual({ kind: 'none' });
    });

    it('counts each request on a kept-alive connection and passes keep-alive through', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let i = 0; i < 5; i++) expect((await send(proxy.url, { path: `/r${i}`, agent })).body.toString()).toBe(`ok /r${i}`);
      } finally {
        agent.destroy();
      }
      expect(proxy.stats().connectionsAccepted).toBe(1);
      expect(proxy.stats().requests).toBe(5);
    });

    it('resets the client when the server cannot be reached', async () => {
      upstream.server.closeAllConnections();
      await new Promise<void>((resolve) => upstream.server.close(() => resolve()));
      expect(await failureCode(send(proxy.url))).toBe('ECONNRESET');
      expect(proxy.stats().upstreamFailures).toBe(1);
      // Restart so afterEach has a server to close.
      upstream = await startUpstream();
    });

    it('accepts a target given as host and port and rejects bad settings', async () => {
      const second = await FaultProxy.start({ target: { host: '127.0.0.1', port: upstream.port } });
      try {
        expect((await send(second.url, { path: '/x' })).body.toString()).toBe('ok /x');
        expect(() => second.setLatency({ toServerMs: -1 })).toThrow(RangeError);
        await expect(second.reset({ probability: 2 })).rejects.toThrow(RangeError);
        await expect(second.drop({ times: 0 })).rejects.toThrow(RangeError);
      } finally {
        await second.close();
      }
    });
  });

  describe('request boundaries (HTTP/1.1 read, not guessed from turns)', () => {
    it('a body sent in many TCP writes with nothing from the server is one request', async () => {
      const client = await RawClient.open(proxy.port);
      try {
        const body = 'x'.repeat(200);
        await client.write(`POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`);
        for (let i = 0; i < body.length; i += 20) {
          await client.write(body.slice(i, i + 20));
          await sleep(2);
        }
        await client.waitFor(body);
        expect(proxy.stats().requests).toBe(1);
      } finally {
        client.close();
      }
      expect(upstream.received).toEqual(['/echo']);
    });

    it('Expect: 100-continue: the body after the 100 is the same request, so a drop armed then hits the next one', async () => {
      const client = await RawClient.open(proxy.port);
      await client.write('POST /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n');
      await client.waitFor('HTTP/1.1 100 Continue');
      await proxy.drop({ times: 1 });
      await client.write('bo');
      await client.write('dy!');
      await client.write('\n');
      await client.waitFor('ok /continue');
      expect(proxy.stats().requests).toBe(1);
      expect(proxy.mode.kind).toBe('drop');
      await client.write('GET /next HTTP/1.1\r\nHost: x\r\n\r\n');
      expect(await client.ended).toEqual({ kind: 'end' });
      expect(proxy.stats().requests).toBe(2);
      expect(proxy.mode).toEqual({ kind: 'none' });
      await sleep(50);
      expect(upstream.received).toEqual(['/continue']);
    });

    it('Expect: 100-continue: a response fault waits for the final answer, after the server acted', async () => {
      await proxy.reset({ at: 'response', times: 1 });
      const client = await RawClient.open(proxy.port);
      await client.write('PUT /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n');
      await client.waitFor('HTTP/1.1 100 Continue');
      await client.write('put');
      expect(await client.ended).toEqual({ kind: 'error', code: 'ECONNRESET' });
      expect(client.text).not.toContain('ok /continue');
      expect(upstream.received).toEqual(['/continue']);
      expect(proxy.stats()).toMatchObject({ requests: 1, connectionsReset: 1 });
    });

    it('an early answer (413 before the body is complete): the rest of the body is not another request', async () => {
      const client = await RawClient.open(proxy.port);
      const head = 'POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n';
      await client.write(`${head}${'a'.repeat(1000)}`);
      await client.waitFor('too large');
      // Armed now, a drop is for the next request: the rest of this body still goes through.
      await proxy.drop({ times: 1 });
      await client.write('b'.repeat(1000));
      await client.write('c'.repeat(1000));
      for (let waited = 0; proxy.stats().bytesToServer < head.length + 3000 && waited < 5_000; waited += 5) await sleep(5);
      expect(proxy.stats().bytesToServer).toBe(head.length + 3000);
      expect(proxy.stats().requests).toBe(1);
      expect(proxy.mode).toMatchObject({ kind: 'drop', remaining: 1 });
      await client.write('GET /after HTTP/1.1\r\nHost: x\r\n\r\n');
      expect(await client.ended).toEqual({ kind: 'end' });
      expect(proxy.stats().requests).toBe(2);
      await sleep(50);
      expect(upstream.received).toEqual(['/early']);
    });

    it('pipelined requests are counted one by one', async () => {
      proxy.setLatency({ perRequestMs: 20 });
      const client = await RawClient.open(proxy.port);
      try {
        await client.write(
          'GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n' +
            'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\necho\r\n0\r\nX-Trailer: t\r\n\r\n' +
            'GET /p3 HTTP/1.1\r\nHost: x\r\n\r\n',
        );
        await client.waitFor('ok /p3');
      } finally {
        client.close();
      }
      expect(client.text).toContain('ok /p1');
      expect(client.text).toContain('\r\n\r\n4\r\necho\r\n0\r\n\r\n'); // echoed with chunked coding
      expect(proxy.stats().requests).toBe(3);
      expect(upstream.received).toEqual(['/p1', '/echo', '/p3']);
    });

    it('a request fault hits the pipelined request it draws, after the ones before it reached the server', async () => {
      const draws = [0.9, 0.1];
      const seeded = await FaultProxy.start({ target: { host: '127.0.0.1', port: upstream.port }, random: () => draws.shift() ?? 1 });
      try {
        await seeded.drop({ probability: 0.5 });
        const client = await RawClient.open(seeded.port);
        // The accept-time check draws 0.9 (and stands for the first request), the second draws 0.1.
        await client.write('POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst' + 'GET /second HTTP/1.1\r\nHost: x\r\n\r\n');
        expect(await client.ended).toEqual({ kind: 'end' });
        await receivedCount(upstream, 1);
        await sleep(50);
        expect(upstream.received).toEqual(['/echo']);
        expect(seeded.stats()).toMatchObject({ requests: 2, connectionsDropped: 1 });
      } finally {
        await seeded.close();
      }
    });

    it('a response fault hits the pipelined response it draws; responses before it arrive whole (HEAD, chunked, sized)', async () => {
      const draws = [0.9, 0.9, 0.1];
      const seeded = await FaultProxy.start({ target: { host: '127.0.0.1', port: upstream.port }, random: () => draws.shift() ?? 1 });
      try {
        await seeded.drop({ at: 'response', probability: 0.5 });
        const client = await RawClient.open(seeded.port);
        await client.write('HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n' + 'GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n' + 'GET /third HTTP/1.1\r\nHost: x\r\n\r\n');
        expect(await client.ended).toEqual({ kind: 'end' });
        // The HEAD answer (no body, and no length to say so: only the method tells) and the whole chunked one.
        expect(client.text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
        expect(client.text).toMatch(/\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
        expect(client.text).toMatch(/\r\n\r\n4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n$/);
        expect(client.text).not.toContain('ok /third');
        expect(upstream.received).toEqual(['/bytes/100', '/chunked', '/third']);
        expect(seeded.stats()).toMatchObject({ requests: 3, connectionsDropped: 1 });
      } finally {
        await seeded.close();
      }
    });

    it('a large head right after a large body is still read: the body does not count toward the head size limit', async () => {
      // A server that takes everything and never answers: with turn-taking, requests sent after
      // the first would not be counted at all, so the count tells whether the proxy still reads.
      const sink = createNetServer((socket) => socket.on('data', () => undefined));
      await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
      const sinkProxy = await FaultProxy.start({ target: { host: '127.0.0.1', port: (sink.address() as AddressInfo).port } });
      const client = await RawClient.open(sinkProxy.port);
      const delivered = async (bytes: number): Promise<void> => {
        for (let waited = 0; sinkProxy.stats().bytesToServer < bytes && waited < 5_000; waited += 5) await sleep(5);
      };
      try {
        const head = 'POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n';
        await client.write(`${head}${'a'.repeat(10_000)}`);
        await delivered(head.length + 10_000);
        // The end of the body arrives in one chunk, then 60 KB of the next head (within any limit).
        await client.write('b'.repeat(30_000));
        await delivered(head.length + 40_000);
        await client.write(`GET /b HTTP/1.1\r\nHost: x\r\nX-Big: ${'c'.repeat(60_000)}`);
        await client.write('\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n');
        await delivered(head.length + 40_000 + 60_000);
        for (let waited = 0; sinkProxy.stats().requests < 4 && waited < 2_000; waited += 5) await sleep(5);
        expect(sinkProxy.stats().requests).toBe(4);
      } finally {
        client.close();
        await sinkProxy.close();
        await new Promise<void>((resolve) => sink.close(() => resolve()));
      }
    });

    it('traffic that is not HTTP/1.1 falls back to turn-taking: each client burst after an answer is a request', async () => {
      const echo = createNetServer((socket) => socket.on('data', (chunk: Buffer) => socket.write(chunk)));
      await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
      const raw = await FaultProxy.start({ target: { host: '127.0.0.1', port: (echo.address() as AddressInfo).port } });
      const client = await RawClient.open(raw.port);
      try {
        await client.write('\x16\x03\x01 hello');
        await client.waitFor('hello');
        await client.write('again');
        await client.waitFor('again');
        expect(raw.stats().requests).toBe(2);
      } finally {
        client.close();
        await raw.close();
        await new Promise<void>((resolve) => echo.close(() => resolve()));
      }
    });
  });

  describe('latency', () => {
    // The proxy times its deliveries with Date.now() and setTimeout: on a fake clock (sockets stay
    // real) each test holds the clock while the bytes travel and moves it by hand, so what is
    // asserted is which bytes the proxy delivered at which point of the clock, not wall time.
    const onFakeClock = () => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    afterEach(() => {
      vi.useRealTimers();
    });

    /** Waits on real time (the fake clock stands still meanwhile) until `condition` holds. */
    async function until(condition: () => boolean, what: string): Promise<void> {
      const deadline = performance.now() + 5_000;
      while (!condition()) {
        if (performance.now() > deadline) throw new Error(`still waiting for ${what}`);
        await new Promise((resolve) => realSetTimeout(resolve, 2));
      }
    }

    /** Moves the fake clock on until `promise` settles (later chunks are held from their own arrival). */
    async function settle<T>(promise: Promise<T>): Promise<T> {
      let done = false;
      void promise.then(() => (done = true), () => (done = true));
      await until(() => {
        if (!done) vi.advanceTimersByTime(50);
        return done;
      }, 'the exchange to finish');
      return promise;
    }

    it('holds the request toServerMs from its arrival, then delivers it', async () => {
      onFakeClock();
      proxy.setLatency({ toServerMs: 150 });
      const reply = send(proxy.url, { path: '/slow-in' });
      // One delivery timer: the proxy holds the request, and nothing reached the server.
      await until(() => proxy.stats().requests === 1 && vi.getTimerCount() === 1, 'the proxy to hold the request');
      await vi.advanceTimersByTimeAsync(149);
      expect(proxy.stats().bytesToServer).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(proxy.stats().bytesToServer).toBeGreaterThan(0);
      expect((await settle(reply)).status).toBe(200);
      expect(upstream.received).toEqual(['/slow-in']);
    });

    it('holds the response toClientMs from its arrival and keeps a large body intact', async () => {
      onFakeClock();
      proxy.setLatency({ toClientMs: 120 });
      const reply = send(proxy.url, { path: '/bytes/1500000' });
      // The request passed at once; the timer is the response's first bytes held.
      await until(() => upstream.received.length === 1 && vi.getTimerCount() === 1, 'the proxy to hold the response');
      expect(proxy.stats().bytesToServer).toBeGreaterThan(0);
      await vi.advanceTimersByTimeAsync(119);
      expect(proxy.stats().bytesToClient).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(proxy.stats().bytesToClient).toBeGreaterThan(0);
      expect((await settle(reply)).body.equals(patternBytes(1_500_000))).toBe(true);
    });

    it('holds every request on a kept-alive connection perRequestMs', async () => {
      onFakeClock();
      proxy.setLatency({ perRequestMs: 100 });
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let i = 0; i < 3; i++) {
          const deliveredBefore = proxy.stats().bytesToServer;
          const reply = send(proxy.url, { path: `/p${i}`, agent });
          await until(() => proxy.stats().requests === i + 1 && vi.getTimerCount() === 1, `the proxy to hold request ${i}`);
          await vi.advanceTimersByTimeAsync(99);
          expect(proxy.stats().bytesToServer, `request ${i}`).toBe(deliveredBefore);
          await vi.advanceTimersByTimeAsync(1);
          expect(proxy.stats().bytesToServer, `request ${i}`).toBeGreaterThan(deliveredBefore);
          expect((await settle(reply)).status).toBe(200);
        }
      } finally {
        agent.destroy();
      }
      expect(upstream.received).toEqual(['/p0', '/p1', '/p2']);
      expect(proxy.stats().connectionsAccepted).toBe(1);
    });

    it('holds both directions on one round trip and normal() removes the latency', async () => {
      onFakeClock();
      proxy.setLatency({ toServerMs: 80, toClientMs: 80 });
      const reply = send(proxy.url);
      await until(() => proxy.stats().requests === 1 && vi.getTimerCount() === 1, 'the proxy to hold the request');
      await vi.advanceTimersByTimeAsync(79);
      expect(proxy.stats().bytesToServer).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(proxy.stats().bytesToServer).toBeGreaterThan(0);
      await until(() => upstream.received.length === 1 && vi.getTimerCount() === 1, 'the proxy to hold the response');
      await vi.advanceTimersByTimeAsync(79);
      expect(proxy.stats().bytesToClient).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(proxy.stats().bytesToClient).toBeGreaterThan(0);
      expect((await settle(reply)).status).toBe(200);
      await proxy.normal();
      expect(proxy.latency).toEqual({ toServerMs: 0, toClientMs: 0, perRequestMs: 0 });
      // With the clock standing still, only a request with no latency can be answered.
      expect((await send(proxy.url, { path: '/after' })).status).toBe(200);
    });

    /** Sends a request on a raw socket and resets it (RST) once the proxy holds the request. */
    async function sendThenReset(path: string): Promise<void> {
      const socket = connect({ host: '127.0.0.1', port: proxy.port });
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      const before = proxy.stats().requests;
      socket.write(`POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nput`);
      while (proxy.stats().requests === before) await sleep(5);
      socket.resetAndDestroy();
    }

    /** Waits until the proxy has no connection open (a bound only to fail instead of hanging). */
    async function allClosed(): Promise<void> {
      for (let waited = 0; proxy.stats().connectionsOpen > 0 && waited < 5_000; waited += 10) await sleep(10);
    }

    it('a client reset does not lose the request bytes held for latency: they reach the server first, as on a real network', async () => {
      proxy.setLatency({ toServerMs: 300 });
      await sendThenReset('/sent-before-reset');
      await allClosed();
      expect(proxy.stats().connectionsOpen).toBe(0);
      for (let waited = 0; upstream.received.length === 0 && waited < 5_000; waited += 10) await sleep(10);
      expect(upstream.received).toEqual(['/sent-before-reset']);
      expect(proxy.stats().bytesToServer).toBeGreaterThan(0);
    });

    it('a client reset in a black hole loses what was held: nothing reaches the server, even once the hole lifts', async () => {
      proxy.setLatency({ toServerMs: 50 });
      await proxy.blackHole();
      await sendThenReset('/held-in-the-hole');
      await allClosed();
      expect(proxy.stats().connectionsOpen).toBe(0);
      await proxy.normal();
      await sleep(100);
      expect(upstream.received).toEqual([]);
      expect(proxy.stats().bytesToServer).toBe(0);
    });
  });

  describe('drop (FIN)', () => {
    it('at request: closes with a FIN, the server never sees the request', async () => {
      await proxy.drop();
      expect(await failureCode(send(proxy.url, { path: '/lost' }))).toBe('ECONNRESET'); // node: "socket hang up"
      expect(await rawOutcome(proxy.port)).toEqual({ kind: 'end' });
      await sleep(50);
      expect(upstream.received).toEqual([]);
      expect(proxy.stats().connectionsDropped).toBe(2);
      expect(proxy.mode.kind).toBe('drop');
    });

    it('at response: the server acted on the request but the client gets no answer', async () => {
      await proxy.drop({ at: 'response' });
      expect(await failureCode(send(proxy.url, { path: '/done-but-unanswered' }))).toBe('ECONNRESET');
      expect(upstream.received).toEqual(['/done-but-unanswered']);
      expect(proxy.stats().connectionsDropped).toBe(1);
    });

    it('hits an idle kept-alive connection when it sends its next request', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        expect((await send(proxy.url, { path: '/first', agent })).status).toBe(200);
        await proxy.drop();
        expect(await failureCode(send(proxy.url, { path: '/second', agent }))).toBe('ECONNRESET');
      } finally {
        agent.destroy();
      }
      expect(upstream.received).toEqual(['/first']);
      expect(proxy.stats().connectionsAccepted).toBe(1);
    });
    it('hits a fresh connection accepted before the fault was switched on, at its first request', async () => {
      // A client that connects first and sends later (a pre-opened or pooled socket): the
      // accept-time check ran with no fault in force, so it must not stand for the request.
      const socket = connect({ host: '127.0.0.1', port: proxy.port });
      const outcome = new Promise<{ kind: 'end' } | { kind: 'error'; code: string }>((resolve) => {
        socket.on('error', (error: NodeJS.ErrnoException) => resolve({ kind: 'error', code: error.code ?? '?' }));
        socket.on('end', () => {
          resolve({ kind: 'end' });
          socket.destroy();
        });
        socket.on('data', () => undefined);
      });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      while (proxy.stats().connectionsAccepted === 0) await sleep(5);
      await proxy.drop({ times: 1 });
      socket.write('GET /late HTTP/1.1\r\nHost: x\r\n\r\n');
      expect(await outcome).toEqual({ kind: 'end' });
      await sleep(50);
      expect(upstream.received).toEqual([]);
      expect(proxy.stats().connectionsDropped).toBe(1);
      expect(proxy.mode).toEqual({ kind: 'none' });
    });
  });

  describe('reset (RST)', () => {
    it('at request: the client sees ECONNRESET, the server never sees the request', async () => {
      await proxy.reset();
      expect(await failureCode(send(proxy.url, { path: '/lost' }))).toBe('ECONNRESET');
      expect(await rawOutcome(proxy.port, 'GET / HTTP/1.1\r\n\r\n')).toEqual({ kind: 'error', code: 'ECONNRESET' });
      await sleep(50);
      expect(upstream.received).toEqual([]);
      expect(proxy.stats().connectionsReset).toBe(2);
    });

    it('at response: the server acted on the request, the client sees ECONNRESET', async () => {
      await proxy.reset({ at: 'response' });
      expect(await failureCode(send(proxy.url, { path: '/applied', body: Buffer.from('put') }))).toBe('ECONNRESET');
      expect(upstream.received).toEqual(['/applied']);
    });

    it('times: hits only the next N requests, then returns to normal by itself', async () => {
      await proxy.reset({ times: 2 });
      expect(await failureCode(send(proxy.url, { path: '/a' }))).toBe('ECONNRESET');
      expect(proxy.mode).toMatchObject({ kind: 'reset', remaining: 1 });
      expect(await failureCode(send(proxy.url, { path: '/b' }))).toBe('ECONNRESET');
      expect(proxy.mode).toEqual({ kind: 'none' });
      expect((await send(proxy.url, { path: '/c' })).status).toBe(200);
      expect(upstream.received).toEqual(['/c']);
    });

    it('probability: each request is hit when the random draw falls below it', async () => {
      const draws = [0.1, 0.9, 0.4, 0.6];
      const seeded = await FaultProxy.start({ target: { host: '127.0.0.1', port: upstream.port }, random: () => draws.shift() ?? 1 });
      try {
        await seeded.reset({ probability: 0.5 });
        const outcomes: string[] = [];
        for (let i = 0; i < 4; i++) {
          outcomes.push(await send(seeded.url, { path: `/q${i}` }).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code ?? '?'));
        }
        expect(outcomes).toEqual(['ECONNRESET', 'ok', 'ECONNRESET', 'ok']);
        expect(upstream.received).toEqual(['/q1', '/q3']);
      } finally {
        await seeded.close();
      }
    });
  });

  describe('black hole', () => {
    it('accepts and never answers: the client times out and the server sees nothing', async () => {
      await proxy.blackHole();
      expect(await failureCode(send(proxy.url, { path: '/void', timeoutMs: 300 }))).toBe('ETIMEDOUT');
      expect(upstream.received).toEqual([]);
      expect(proxy.stats().bytesToClient).toBe(0);
      expect(proxy.stats().connectionsAccepted).toBe(1);
      expect(proxy.stats().bytesToServer).toBe(0);
    });

    it('holds traffic of open connections, which flows again when the hole is lifted', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        expect((await send(proxy.url, { path: '/before', agent })).status).toBe(200);
        await proxy.blackHole();
        let settled = false;
        const onOld = send(proxy.url, { path: '/held-old', agent }).finally(() => (settled = true));
        const onNew = send(proxy.url, { path: '/held-new' });
        await sleep(300);
        expect(settled).toBe(false);
        expect(upstream.received).toEqual(['/before']);
        await proxy.normal();
        expect((await onOld).body.toString()).toBe('ok /held-old');
        expect((await onNew).body.toString()).toBe('ok /held-new');
      } finally {
        agent.destroy();
      }
      expect(upstream.received.sort()).toEqual(['/before', '/held-new', '/held-old']);
    });
  });

  describe('outage', () => {
    it('refuses new connections, resets open ones, and recovers on the same port', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        expect((await send(proxy.url, { path: '/up', agent })).status).toBe(200);
        const url = proxy.url;
        await proxy.outage();
        expect(await failureCode(send(url, { path: '/refused' }))).toBe('ECONNREFUSED');
        expect(await rawOutcome(proxy.port)).toEqual({ kind: 'error', code: 'ECONNREFUSED' });
        expect(proxy.stats().connectionsOpen).toBe(0);
        expect(proxy.stats().connectionsReset).toBe(1);

        await proxy.normal();
        expect(proxy.url).toBe(url);
        expect((await send(url, { path: '/back', agent })).body.toString()).toBe('ok /back');
      } finally {
        agent.destroy();
      }
      expect(upstream.received).toEqual(['/up', '/back']);
    });

    it('stays in the outage when it cannot listen again, and a later call recovers', async () => {
      await proxy.outage();
      // Someone else took the port meanwhile.
      const squatter = createNetServer();
      await new Promise<void>((resolve) => squatter.listen(proxy.port, '127.0.0.1', resolve));
      try {
        await expect(proxy.normal()).rejects.toMatchObject({ code: 'EADDRINUSE' });
        expect(proxy.mode).toEqual({ kind: 'outage' });
      } finally {
        await new Promise<void>((resolve) => squatter.close(() => resolve()));
      }
      await proxy.normal();
      expect(proxy.mode).toEqual({ kind: 'none' });
      expect((await send(proxy.url, { path: '/recovered' })).body.toString()).toBe('ok /recovered');
    });

    it('can move from an outage straight into another fault', async () => {
      await proxy.outage();
      await proxy.blackHole();
      expect(await failureCode(send(proxy.url, { timeoutMs: 200 }))).toBe('ETIMEDOUT');
      await proxy.normal();
      expect((await send(proxy.url, { path: '/ok' })).status).toBe(200);
    });
  });

  it('fetch (undici, what the VSS client uses) sees each fault as its own error', async () => {
    const outcome = async (): Promise<string> => {
      try {
        const reply = await fetch(`${proxy.url}/f`, { method: 'POST', body: 'x', signal: AbortSignal.timeout(400) });
        return `${reply.status} ${await reply.text()}`;
      } catch (error) {
        const cause = (error as { cause?: { code?: string } }).cause;
        return cause?.code ?? (error as Error).name;
      }
    };
    const seen: Record<string, string> = {};
    seen.normal = await outcome();
    await proxy.reset();
    seen.reset = await outcome();
    await proxy.drop();
    seen.drop = await outcome();
    await proxy.reset({ at: 'response' });
    seen.resetAtResponse = await outcome();
    await proxy.blackHole();
    seen.blackHole = await outcome();
    await proxy.outage();
    seen.outage = await outcome();
    await proxy.normal();
    seen.normalAgain = await outcome();
    expect(seen).toEqual({
      normal: '200 ok /f',
      reset: 'ECONNRESET',
      drop: 'UND_ERR_SOCKET', // "other side closed"
      resetAtResponse: 'ECONNRESET',
      blackHole: 'TimeoutError',
      outage: 'ECONNREFUSED',
      normalAgain: '200 ok /f',
    });
    // Only the request cut at the response, and the two normal ones, reached the server.
    expect(upstream.received).toEqual(['/f', '/f', '/f']);
  });

  it('close() while an outage is being lifted leaves nothing listening', async () => {
    await proxy.outage();
    const lifting = proxy.normal().then(
      () => 'resolved',
      (error: Error) => error.message,
    );
    await proxy.close();
    expect(await lifting).toMatch(/closed/);
    expect(await rawOutcome(proxy.port)).toEqual({ kind: 'error', code: 'ECONNREFUSED' });
  });

  it('close(): stops listening and ends open connections', async () => {
    const socket = connect({ host: '127.0.0.1', port: proxy.port });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    await proxy.close();
    await closed;
    expect(await rawOutcome(proxy.port)).toEqual({ kind: 'error', code: 'ECONNREFUSED' });
    await expect(proxy.drop()).rejects.toThrow(/closed/);
  });
});
