/**
 * Server lifecycle and the operator features: graceful close with in-flight requests,
 * restarting on the same port and data, /health, /metrics, CORS and rate limits.
 */
import http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { BackendCloseTimeoutError, clientAddress, DEFAULT_BATCHING, MemoryBackend, PgliteBackend, ServerConfigError, startVssServer } from '../../src/server/index.js';
import { errorOf, newIdentity, send, TestClient, text } from './helpers.js';
import { ServerMetrics } from '../../src/server/metrics.js';

const origin = (url: string) => url.replace(/\/vss$/, '');

describe('a backend the caller opens and tunes', () => {
  it('is exported from ldk-vss/server, serves through startVssServer with its own batching, and stays open after close()', async () => {
    expect(DEFAULT_BATCHING.maxBatchSize).toBeGreaterThan(1);
    const backend = await PgliteBackend.open({ batching: false });
    try {
      expect(backend.batchStats).toBeUndefined(); // the caller's setting, not the default
      const server = await startVssServer({ backend, auth: { kind: 'noop' } });
      const put = vss.PutObjectRequest.encode({ storeId: 's', transactionItems: [keyValue('k', 0n, new Uint8Array([7]))] }).finish();
      expect((await send(`${server.url}/putObjects`, put)).status).toBe(200);
      await server.close();
      expect((await backend.get('unauth-user', 's', 'k'))?.version).toBe(1n);
    } finally {
      await backend.close();
    }
  });
});

describe('close()', () => {
  it('finishes an in-flight request before stopping, refuses new connections afterwards, and keeps a caller-owned backend', async () => {
    const backend = new MemoryBackend();
    const server = await startVssServer({ backend, auth: { kind: 'noop' } });
    const body = Buffer.from(vss.PutObjectRequest.encode({ storeId: 's', transactionItems: [keyValue('k', 0n, new Uint8Array(200_000))] }).finish());
    // Send half the body, start closing, then send the rest: the request must still succeed.
    const inFlight = new Promise<number>((resolve, reject) => {
      const request = http.request(`${server.url}/putObjects`, { method: 'POST', headers: { 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      request.on('error', reject);
      request.write(body.subarray(0, 100_000), () => {
        closing = server.close();
        setTimeout(() => request.end(body.subarray(100_000)), 100);
      });
    });
    let closing: Promise<void> | undefined;
    expect(await inFlight).toBe(200);
    await closing;
    await expect(fetch(`${server.url}/getObject`, { method: 'POST' })).rejects.toMatchObject({ cause: { code: 'ECONNREFUSED' } });
    // The backend the caller passed in is still open and holds the write.
    expect((await backend.get('unauth-user', 's', 'k'))?.version).toBe(1n);

    // Restart on the same port and data.
    const restarted = await startVssServer({ backend, auth: { kind: 'noop' }, port: server.port });
    try {
      expect(restarted.url).toBe(server.url);
      expect((await new TestClient(restarted.url, 's').get('k')).version).toBe(1n);
    } finally {
      await restarted.close();
    }
  });

  it('closes a backend it created itself, and close() is idempotent', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' } });
    await Promise.all([server.close(), server.close()]);
    await expect(server.backend.checkHealth()).rejects.toThrow('MemoryBackend is closed');
  });

  it('cuts connections that outlive the grace period', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const server = await startVssServer({ auth: { kind: 'noop' }, shutdownGraceMs: 200, logger });
    // Expect: 100-continue makes the server say when it has parsed the head and handed the request
    // to the app: from then on the request is in flight (a connection that is not, close() cuts
    // at once, which is not the path under test).
    let inFlight!: () => void;
    const handedToApp = new Promise<void>((resolve) => (inFlight = resolve));
    const stuck = new Promise<string>((resolve) => {
      const request = http.request(`${server.url}/putObjects`, { method: 'POST', headers: { 'content-length': 1000, expect: '100-continue' } }, () => resolve('answered'));
      request.on('error', () => resolve('cut'));
      request.on('continue', () => request.write('x'.repeat(10), () => inFlight()));
      request.flushHeaders();
    });
    await handedToApp;
    // Were the grace period not enforced, close() would wait for this request forever.
    await server.close();
    expect(await stuck).toBe('cut');
    // Cut by the end of the grace period, not before it.
    expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toContain('shutdown grace period over; closing remaining connections');
  });

  it('gives up on a backend that does not close, with a typed error, instead of hanging forever', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, shutdownGraceMs: 0 });
    // A pool waiting for a statement that never returns, as a stuck PostgreSQL connection would.
    const close = vi.spyOn(server.backend, 'close').mockReturnValue(new Promise<void>(() => {}));
    try {
      const outcome = await server.close().then(
        () => 'closed',
        (error: unknown) => error,
      );
      expect(outcome).toBeInstanceOf(BackendCloseTimeoutError);
      expect((outcome as BackendCloseTimeoutError).message).toMatch(/^the memory backend did not close within \d+ ms after the server stopped; abandoned it$/);
      expect(close).toHaveBeenCalledTimes(1);
    } finally {
      close.mockRestore();
    }
  });

  it('restored MemoryBackend snapshots bring back old data and new keys still sort first', async () => {
    const backend = new MemoryBackend();
    const server = await startVssServer({ backend, auth: { kind: 'noop' } });
    try {
      const client = new TestClient(server.url, 'snap');
      await client.put(0n, [{ key: 'a', version: 0n, value: 'a1' }]);
      const snapshot = backend.snapshot();
      await client.put(1n, [{ key: 'a', version: 1n, value: 'a2' }, { key: 'b', version: 0n, value: 'b1' }]);
      backend.restore(snapshot);
      expect((await client.get('a')).version).toBe(1n);
      await expect(client.get('b')).rejects.toMatchObject({ status: 404 });
      expect((await client.get('global_version')).version).toBe(1n);
      await client.put(1n, [{ key: 'c', version: 0n, value: 'c1' }]);
      expect((await client.list()).keys.map((k) => k.key)).toEqual(['c', 'a']);
      // Snapshots are deep copies: mutating the server does not change them.
      expect(snapshot.rows.map((r) => r.key).sort()).toEqual(['a', 'global_version']);
    } finally {
      await server.close();
    }
  });
});

describe('operator features', () => {
  it('GET /health reports the backend', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' } });
    try {
      const response = await send(`${origin(server.url)}/health`, undefined, { method: 'GET' });
      expect(response.status).toBe(200);
      expect(JSON.parse(response.body.toString())).toEqual({ status: 'ok', backend: 'memory' });
    } finally {
      await server.close();
    }
  });

  it('GET /health answers 503 when the backend does not answer, instead of holding the probe forever', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => void lines.push(line) });
    const backend = new MemoryBackend();
    let checks = 0;
    // A database that stopped answering (or a pool whose every connection is stuck).
    backend.checkHealth = () => {
      checks++;
      return new Promise<void>(() => {});
    };
    const server = await startVssServer({ backend, auth: { kind: 'noop' }, healthCheckTimeoutMs: 100, logger });
    try {
      const probes = await Promise.all([0, 1].map(() => send(`${origin(server.url)}/health`, undefined, { method: 'GET' })));
      for (const probe of probes) {
        expect(probe.status).toBe(503);
        expect(JSON.parse(probe.body.toString())).toEqual({ status: 'unavailable', backend: 'memory' });
      }
      // Probes during a hung check share it rather than piling up waiting checks.
      expect(checks).toBe(1);
      expect(lines.map((line) => (JSON.parse(line) as { err?: { message: string } }).err?.message)).toContain('the memory backend did not answer within 100 ms');
    } finally {
      await server.close();
    }
    await expect(startVssServer({ healthCheckTimeoutMs: Number.NaN })).rejects.toThrow('healthCheckTimeoutMs must be an integer from 1 to 2147483647 (ms), not NaN');
    // No time at all would answer 503 for a healthy backend.
    await expect(startVssServer({ healthCheckTimeoutMs: 0 })).rejects.toBeInstanceOf(ServerConfigError);
    await expect(startVssServer({ shutdownGraceMs: -1 })).rejects.toThrow('shutdownGraceMs must be an integer from 0 to');
  });

  it('refuses a port outside 0..65535 with a ServerConfigError before any storage opens', async () => {
    const dataDir = join(await mkdtemp(join(tmpdir(), 'ldk-vss-port-')), 'data');
    try {
      for (const port of [-1, 65_536, 1.5, Number.NaN, '8080' as unknown as number, null as unknown as number]) {
        const failure = await startVssServer({ port, backend: { kind: 'pglite', dataDir }, auth: { kind: 'noop' } }).then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(failure, `port ${port}`).toBeInstanceOf(ServerConfigError);
        expect((failure as Error).message).toBe(`port must be an integer from 0 to 65535 (0: any free port), not ${typeof port === 'number' ? port : JSON.stringify(port)}`);
      }
      // Refused before the embedded database was created (a first start takes seconds).
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      await rm(dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('GET /health logs a failing backend once at error (probes are unauthenticated), and its recovery', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const backend = new MemoryBackend();
    let down = true;
    backend.checkHealth = async () => {
      if (down) throw new Error('connection refused');
    };
    const server = await startVssServer({ backend, auth: { kind: 'noop' }, logger });
    const probe = async () => (await send(`${origin(server.url)}/health`, undefined, { method: 'GET' })).status;
    const messages = () => lines.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((entry) => /health/.test(entry.msg));
    try {
      for (let i = 0; i < 5; i++) expect(await probe()).toBe(503);
      expect(messages()).toEqual([expect.objectContaining({ level: 50, msg: 'health check failed' })]);
      down = false;
      expect(await probe()).toBe(200);
      down = true;
      expect(await probe()).toBe(503);
      expect(messages().map((entry) => entry.msg)).toEqual(['health check failed', 'health check passes again', 'health check failed']);
    } finally {
      await server.close();
    }
  });

  it('counts requests whose client hung up before the response, as status "aborted"', async () => {
    const backend = new MemoryBackend();
    let entered!: () => void;
    const inBackend = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const get = backend.get.bind(backend);
    backend.get = async (...args) => {
      entered();
      await released;
      return get(...args);
    };
    const server = await startVssServer({ backend, auth: { kind: 'noop' }, metrics: true });
    try {
      const body = vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish();
      const request = http.request(`${server.url}/getObject`, { method: 'POST', headers: { 'content-length': body.length } });
      const gone = new Promise<void>((resolve) => request.on('close', resolve));
      request.on('error', () => {});
      request.end(body);
      await inBackend;
      // The client gives up (its timeout) while the server still waits on the database.
      request.destroy();
      await gone;
      // Still held in the backend: counted once the server sees the connection close.
      let exposition = '';
      for (let attempt = 0; attempt < 100 && !exposition.includes('status="aborted"'); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        exposition = (await send(`${origin(server.url)}/metrics`, undefined, { method: 'GET' })).body.toString();
      }
      expect(exposition).toMatch(/vss_http_requests_total\{operation="getObject",status="aborted"\} 1/);
      // Answering afterwards, into the closed connection, does not count it a second time.
      release();
      await new Promise((resolve) => setTimeout(resolve, 50));
      exposition = (await send(`${origin(server.url)}/metrics`, undefined, { method: 'GET' })).body.toString();
      expect(exposition).toMatch(/vss_http_requests_total\{operation="getObject",status="aborted"\} 1/);
      expect(exposition).not.toMatch(/operation="getObject",status="(200|404)"/);
    } finally {
      release();
      await server.close();
    }
  });

  it('serves Prometheus metrics per operation and status only when enabled', async () => {
    const off = await startVssServer({ auth: { kind: 'noop' } });
    try {
      expect((await send(`${origin(off.url)}/metrics`, undefined, { method: 'GET' })).status).toBe(400);
    } finally {
      await off.close();
    }
    const server = await startVssServer({ auth: { kind: 'noop' }, metrics: true });
    try {
      const client = new TestClient(server.url, 'm');
      await client.put(undefined, [{ key: 'k', version: 0n, value: 'v' }]);
      await client.get('k');
      await expect(client.get('missing')).rejects.toMatchObject({ status: 404 });
      const response = await send(`${origin(server.url)}/metrics`, undefined, { method: 'GET' });
      expect(response.status).toBe(200);
      const exposition = response.body.toString();
      expect(exposition).toMatch(/vss_http_requests_total\{operation="getObject",status="200"\} 1/);
      expect(exposition).toMatch(/vss_http_requests_total\{operation="getObject",status="404"\} 1/);
      expect(exposition).toMatch(/vss_http_requests_total\{operation="putObjects",status="200"\} 1/);
      expect(exposition).toMatch(/vss_http_request_duration_seconds_bucket\{le="[0-9.]+",operation="putObjects",status="200"\} 1/);
      expect(exposition).toContain('process_cpu_user_seconds_total');
    } finally {
      await server.close();
    }
  });

  it('servers in one process keep their own request counters but share one process-metrics collector', async () => {
    const a = new ServerMetrics({ processMetrics: true });
    const b = new ServerMetrics({ processMetrics: true });
    a.observe('getObject', 200, 0.001);
    expect(await a.registry.getSingleMetricAsString('vss_http_requests_total')).toMatch(/status="200"\} 1/);
    expect(await b.registry.getSingleMetricAsString('vss_http_requests_total')).not.toMatch(/status="200"/);
    // One collector (and one GC observer) per process, not per server.
    const cpu = a.registry.getSingleMetric('process_cpu_user_seconds_total');
    expect(cpu).toBeDefined();
    expect(b.registry.getSingleMetric('process_cpu_user_seconds_total')).toBe(cpu);
    expect(new ServerMetrics().registry.getSingleMetric('process_cpu_user_seconds_total')).toBeUndefined();
  });

  it('CORS: allowed origins get headers and preflights, others get none', async () => {
    const server = await startVssServer({ auth: { kind: 'signature' }, corsOrigins: ['https://wallet.example'] });
    try {
      const preflight = await send(`${server.url}/putObjects`, undefined, {
        method: 'OPTIONS',
        headers: { origin: 'https://wallet.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBe('https://wallet.example');
      expect(String(preflight.headers['access-control-allow-headers'])).toContain('authorization');
      const identity = newIdentity();
      const allowed = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), {
        headers: { origin: 'https://wallet.example', authorization: identity.header() },
      });
      expect(allowed.status).toBe(200);
      expect(allowed.headers['access-control-allow-origin']).toBe('https://wallet.example');
      expect(String(allowed.headers['access-control-expose-headers'])).toContain('vss-protocol-version');
      const denied = await send(`${server.url}/getObject`, new Uint8Array(0), { headers: { origin: 'https://evil.example' } });
      expect(denied.status).toBe(401);
      expect(denied.headers['access-control-allow-origin']).toBeUndefined();
      const deniedPreflight = await send(`${server.url}/putObjects`, undefined, {
        method: 'OPTIONS',
        headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
      });
      expect(deniedPreflight.headers['access-control-allow-origin']).toBeUndefined();
      expect(deniedPreflight.status).toBe(401);
    } finally {
      await server.close();
    }
  });

  it('rate limits per user token with 429, Retry-After and a retryable ErrorResponse; other users are unaffected', async () => {
    const server = await startVssServer({ rateLimit: { perUser: { limit: 3, windowMs: 60_000 } } });
    try {
      const alice = newIdentity();
      const bob = newIdentity();
      const get = (identity: typeof alice) =>
        send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), { headers: { authorization: identity.header() } });
      for (let i = 0; i < 3; i++) expect((await get(alice)).status).toBe(200);
      const limited = await get(alice);
      expect(limited.status).toBe(429);
      expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(errorOf(limited).code).toBe(vss.ErrorCode.INTERNAL_SERVER_EXCEPTION);
      expect((await get(bob)).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('rate limits per client address before authentication', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, rateLimit: 'ip=2/min' });
    try {
      const body = vss.GetObjectRequest.encode({ key: 'global_version' }).finish();
      expect((await send(`${server.url}/getObject`, body)).status).toBe(200);
      expect((await send(`${server.url}/getObject`, body)).status).toBe(200);
      expect((await send(`${server.url}/getObject`, body)).status).toBe(429);
      // Health checks are not operations and stay reachable.
      expect((await send(`${origin(server.url)}/health`, undefined, { method: 'GET' })).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('behind trusted proxies, per-IP limits key on the X-Forwarded-For client address', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, rateLimit: { perIp: { limit: 1, windowMs: 60_000 } }, trustProxy: 1 });
    try {
      const body = vss.GetObjectRequest.encode({ key: 'global_version' }).finish();
      // One trusted proxy (the peer) appends the address it saw; a client-supplied entry before it is ignored.
      const from = (client: string, spoofed = '192.0.2.66') => send(`${server.url}/getObject`, body, { headers: { 'x-forwarded-for': `${spoofed}, ${client}` } });
      expect((await from('198.51.100.1')).status).toBe(200);
      expect((await from('198.51.100.2')).status).toBe(200);
      expect((await from('198.51.100.1', '192.0.2.77')).status).toBe(429);
    } finally {
      await server.close();
    }
    expect(clientAddress({ socket: { remoteAddress: '127.0.0.1' }, headers: { 'x-forwarded-for': '203.0.113.9, 10.0.0.1' } } as never, 1)).toBe('10.0.0.1');
    expect(clientAddress({ socket: { remoteAddress: '127.0.0.1' }, headers: { 'x-forwarded-for': '203.0.113.9, 10.0.0.1' } } as never, 2)).toBe('203.0.113.9');
    expect(clientAddress({ socket: { remoteAddress: '127.0.0.1' }, headers: { 'x-forwarded-for': '203.0.113.9, 10.0.0.1' } } as never, true)).toBe('203.0.113.9');
    expect(clientAddress({ socket: { remoteAddress: '127.0.0.1' }, headers: { 'x-forwarded-for': '203.0.113.9' } } as never, false)).toBe('127.0.0.1');
    expect(clientAddress({ socket: { remoteAddress: '127.0.0.1' }, headers: {} } as never, 1)).toBe('127.0.0.1');
  });

  it('streams large values through without corrupting them', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, maxRequestBodySize: 8 * 1024 * 1024 });
    try {
      const client = new TestClient(server.url, 'big');
      const value = text('0123456789abcdef'.repeat(256 * 1024));
      await client.put(undefined, [{ key: 'big', version: -1n, value }]);
      expect(Buffer.compare(Buffer.from((await client.get('big')).value), Buffer.from(value))).toBe(0);
    } finally {
      await server.close();
    }
  });
});
