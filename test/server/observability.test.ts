/**
 * What the server writes to its log and exposes as metrics: requests Node refuses before
 * routing are counted and logged too; no credential, query string, store id or key reaches a
 * log line or a metric label, even at trace level; metric labels stay a fixed set whatever
 * paths and stores clients use; and a broken idle PostgreSQL connection is logged as its error,
 * not as a dump of the pg client.
 */
import { once } from 'node:events';
import net from 'node:net';
import pg from 'pg';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { keyValue, vss } from '../../src/protocol/index.js';
import { PostgresBackend } from '../../src/server/backends/postgres.js';
import { startVssServer } from '../../src/server/index.js';
import { dropDatabase, newIdentity, send, TEST_DATABASE_URL, testDatabaseUrl, TestClient, uniqueDatabaseName } from './helpers.js';

const origin = (url: string) => url.replace(/\/vss$/, '');

/** A pino logger at `level` whose lines land in the returned array. */
function capturingLogger(level: pino.LevelWithSilent): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level }, { write: (line: string) => void lines.push(line) }), lines };
}

/** Writes `raw` on a fresh connection and returns the status line the server answered with. */
async function rawStatusLine(port: number, raw: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  socket.on('error', () => {});
  socket.write(raw);
  await once(socket, 'close');
  return received.split('\r\n')[0];
}

async function exposition(url: string): Promise<string> {
  return (await send(`${origin(url)}/metrics`, undefined, { method: 'GET' })).body.toString();
}

describe('requests refused before routing', () => {
  it('are counted under operation="other" with their status, and logged at debug', async () => {
    const { logger, lines } = capturingLogger('debug');
    const server = await startVssServer({ auth: { kind: 'noop' }, metrics: true, logger });
    try {
      const tooLarge = `POST /vss/getObject HTTP/1.1\r\nhost: vss\r\nx-big: ${'a'.repeat(64 * 1024)}\r\ncontent-length: 0\r\n\r\n`;
      expect(await rawStatusLine(server.port, tooLarge)).toBe('HTTP/1.1 431 Request Header Fields Too Large');
      expect(await rawStatusLine(server.port, 'NOT HTTP AT ALL\r\n\r\n')).toBe('HTTP/1.1 400 Bad Request');
      expect(await rawStatusLine(server.port, 'NOT HTTP AT ALL\r\n\r\n')).toBe('HTTP/1.1 400 Bad Request');
      const metrics = await exposition(server.url);
      expect(metrics).toMatch(/vss_http_requests_total\{operation="other",status="431"\} 1\n/);
      expect(metrics).toMatch(/vss_http_requests_total\{operation="other",status="400"\} 2\n/);
      // No start time is known for them, so they are counted but not given a made-up latency.
      expect(metrics).not.toMatch(/vss_http_request_duration_seconds_count\{operation="other"/);
      const refused = lines.map((line) => JSON.parse(line) as { level: number; msg: string; status?: number; code?: string }).filter((entry) => entry.msg === 'request refused before routing');
      expect(refused.map((entry) => [entry.level, entry.status, entry.code])).toEqual([
        [20, 431, 'HPE_HEADER_OVERFLOW'],
        [20, 400, 'HPE_INVALID_METHOD'],
        [20, 400, 'HPE_INVALID_METHOD'],
      ]);
    } finally {
      await server.close();
    }
  });
});

describe('what a request leaves in the log and the metrics', () => {
  it('no credential, query string, store id or key appears in trace-level logs or metric labels', async () => {
    const { logger, lines } = capturingLogger('trace');
    const server = await startVssServer({ auth: { kind: 'signature' }, metrics: true, logger });
    try {
      const identity = newIdentity();
      const header = identity.header();
      const storeId = 'store-SECRET-STORE';
      const client = new TestClient(server.url, storeId, () => header);
      await client.put(undefined, [{ key: 'key-SECRET-KEY', version: 0n, value: 'v' }]);
      await expect(client.get('missing-SECRET-KEY')).rejects.toMatchObject({ status: 404 });
      // A wrong signature from the same identity, a bearer token, and a token in the query string.
      const body = vss.GetObjectRequest.encode({ storeId, key: 'key-SECRET-KEY' }).finish();
      const forged = header.slice(0, 66) + '00'.repeat(64) + header.slice(194);
      expect((await send(`${server.url}/getObject`, body, { headers: { authorization: forged } })).status).toBe(401);
      expect((await send(`${server.url}/getObject`, body, { headers: { authorization: 'Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl' } })).status).toBe(401);
      expect((await send(`${server.url}/getObject?token=SECRET-QUERY`, body, { headers: { authorization: header } })).status).toBe(200);
      const everything = [...lines, await exposition(server.url)].join('\n');
      expect(lines.some((line) => line.includes('"msg":"request"'))).toBe(true);
      for (const secret of [header.slice(66, 194), forged.slice(66, 194), 'eyJhbGciOiJSUzI1NiJ9', identity.userToken, 'SECRET']) {
        expect(everything, secret).not.toContain(secret);
      }
    } finally {
      await server.close();
    }
  });

  it('metric labels come from a fixed set, whatever paths, methods and stores clients use', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, metrics: true });
    try {
      for (let i = 0; i < 20; i++) {
        await send(`${origin(server.url)}/probe-${i}?q=${i}`, undefined, { method: 'GET' });
        await send(`${server.url}/getObject/${i}`, undefined, { method: 'POST' });
        await send(`${origin(server.url)}/%zz${i}`, undefined, { method: 'DELETE' });
        const put = vss.PutObjectRequest.encode({ storeId: `store-${i}`, transactionItems: [keyValue(`key-${i}`, 0n, new Uint8Array([i]))] }).finish();
        expect((await send(`${server.url}/putObjects`, put)).status).toBe(200);
      }
      const series = (await exposition(server.url)).split('\n').filter((line) => line.startsWith('vss_http_requests_total{'));
      expect(series.sort()).toEqual([
        'vss_http_requests_total{operation="putObjects",status="200"} 20',
        'vss_http_requests_total{operation="unknown",status="400"} 60',
      ]);
    } finally {
      await server.close();
    }
  });
});

describe.skipIf(!TEST_DATABASE_URL)(`PostgreSQL idle connection failures${TEST_DATABASE_URL ? '' : ' — SKIPPED: TEST_DATABASE_URL is not set'}`, () => {
  it('are logged as the error PostgreSQL sent, without the pg client pg-pool attaches to it', async () => {
    const database = uniqueDatabaseName('observability');
    const { logger, lines } = capturingLogger('warn');
    const backend = await PostgresBackend.open({ url: testDatabaseUrl(database), logger, batching: false });
    try {
      await backend.get('u', 's', 'k'); // leaves an idle pooled connection
      const admin = new pg.Client({ connectionString: testDatabaseUrl('postgres') });
      await admin.connect();
      try {
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [database]);
      } finally {
        await admin.end();
      }
      for (let attempt = 0; attempt < 100 && !lines.some((line) => line.includes('idle PostgreSQL connection failed')); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const logged = lines.map((line) => JSON.parse(line) as { msg: string; err?: Record<string, unknown> }).find((entry) => entry.msg === 'idle PostgreSQL connection failed');
      expect(logged?.err).toMatchObject({ code: '57P01', message: 'terminating connection due to administrator command' });
      expect(logged?.err).not.toHaveProperty('client');
      // The pool still serves requests on a new connection.
      expect(await backend.get('u', 's', 'k')).toBeUndefined();
    } finally {
      await backend.close();
      await dropDatabase(database);
    }
  });
});
