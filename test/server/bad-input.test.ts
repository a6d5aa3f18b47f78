/**
 * Hostile and broken input: unknown paths, undecodable/truncated/random bodies, wrong wire
 * types, empty bodies, oversized bodies (streamed and declared), broken HTTP, failing
 * backends. Every answer must be a clear 4xx (or the documented 500) with an ErrorResponse
 * and the protocol-version header, and the server must keep serving afterwards.
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { bigIntToInt64, hasField, keyValue, vss } from '../../src/protocol/index.js';
import {
  MemoryBackend,
  ServerConfigError,
  startVssServer,
  type StartedVssServer,
  type StorageBackend,
} from '../../src/server/index.js';
import { errorOf, newIdentity, send, text } from './helpers.js';

const INVALID = vss.ErrorCode.INVALID_REQUEST_EXCEPTION;
const OPS = ['/getObject', '/putObjects', '/deleteObject', '/listKeyVersions'] as const;

/** Deterministic pseudo-random bytes (xorshift), so a failure can be replayed. */
function pseudoRandom(seed: number): (n: number) => Uint8Array {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  return (n) => Uint8Array.from({ length: n }, () => next() & 0xff);
}

async function expectStillServing(server: StartedVssServer): Promise<void> {
  const health = await send(server.url.replace(/\/vss$/, '/health'), undefined, { method: 'GET' });
  expect(health.status).toBe(200);
  const storeId = `alive-${Math.random()}`;
  const put = await send(`${server.url}/putObjects`, vss.PutObjectRequest.encode({ storeId, transactionItems: [keyValue('k', -1n, text('v'))] }).finish());
  expect(put.status).toBe(200);
  const get = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ storeId, key: 'k' }).finish());
  expect(get.status).toBe(200);
}

describe('bad input against a noop-auth server', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ auth: { kind: 'noop' }, maxRequestBodySize: 64 * 1024 });
  });
  afterAll(async () => {
    await expectStillServing(server);
    await server.close();
  });
  const base = () => server.url.replace(/\/vss$/, '');

  it('answers unknown paths with 400 INVALID_REQUEST ErrorResponse, whatever the method', async () => {
    const paths = ['/', '/vss', '/vss/', '/vss/getObject/', '/vss//getObject', '/VSS/getObject', '/getObject', '/vss/GetObject', '/vss/getobject', '/vss/putObject', '/vss/getObject/extra', '/health/', '/metrics'];
    for (const path of paths) {
      for (const method of ['POST', 'GET', 'PUT', 'DELETE']) {
        const response = await send(base() + path, method === 'GET' ? undefined : 'x', { method });
        expect(response.status, `${method} ${path}`).toBe(400);
        expect(errorOf(response)).toEqual({ code: INVALID, message: 'Invalid request path.' });
      }
    }
  });

  it('ignores the query string and processes any method on an operation path (like the reference)', async () => {
    const body = vss.GetObjectRequest.encode({ storeId: 'q', key: 'global_version' }).finish();
    expect((await send(`${server.url}/getObject?foo=bar&x`, body)).status).toBe(200);
    expect((await send(`${server.url}/getObject`, body, { method: 'PUT' })).status).toBe(200);
  });

  it('treats empty bodies as all-default requests', async () => {
    expect(errorOf(await send(`${server.url}/getObject`, new Uint8Array(0))).code).toBe(vss.ErrorCode.NO_SUCH_KEY_EXCEPTION);
    expect((await send(`${server.url}/putObjects`, new Uint8Array(0))).status).toBe(200);
    const del = await send(`${server.url}/deleteObject`, new Uint8Array(0));
    expect(del.status).toBe(400);
    expect(errorOf(del)).toEqual({ code: INVALID, message: 'key_value missing in DeleteObjectRequest' });
    const list = await send(`${server.url}/listKeyVersions`, undefined);
    expect(list.status).toBe(200);
    const decoded = vss.ListKeyVersionsResponse.decode(list.body);
    expect(hasField(decoded, 'globalVersion') && hasField(decoded, 'nextPageToken')).toBe(true);
  });

  it('refuses undecodable bodies with a typed 400 (not plain text)', async () => {
    const invalidUtf8 = Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]); // store_id with a broken UTF-8 sequence
    const truncatedVarint = Uint8Array.from([0x10, 0xff, 0xff]);
    const overlongLength = Uint8Array.from([0x0a, 0x7f, 0x61]);
    for (const op of OPS) {
      for (const body of [invalidUtf8, truncatedVarint, overlongLength]) {
        const response = await send(server.url + op, body);
        expect(response.status, `${op} ${Buffer.from(body).toString('hex')}`).toBe(400);
        const error = errorOf(response);
        expect(error.code).toBe(INVALID);
        expect(error.message).toMatch(/^Error parsing request/);
      }
    }
  });

  it('answers wrong wire types with a 4xx or treats them as unknown fields, never a 500', async () => {
    const bodies = [
      Uint8Array.from([0x08, 0x01]), // field 1 (store_id) as a varint
      Uint8Array.from([0x12, 0x00, 0x10, 0x05]), // field 2 as bytes then as varint
      Uint8Array.from([0x18, 0x05, 0x1a, 0x01, 0x00]), // page_size / items with odd types
      Uint8Array.from([0x1d, 0x00, 0x00, 0x00, 0x00]), // fixed32 on field 3
      Uint8Array.from([0x21, 0, 0, 0, 0, 0, 0, 0, 0]), // fixed64 on field 4
      Uint8Array.from([0x0b, 0x0c]), // deprecated group start/end
      Uint8Array.from([0x07]), // wire type 7 does not exist
    ];
    for (const op of OPS) {
      for (const body of bodies) {
        const response = await send(server.url + op, body);
        expect([200, 400, 404, 409], `${op} ${Buffer.from(body).toString('hex')} → ${response.status}`).toContain(response.status);
        if (response.status !== 200) expect(errorOf(response).code).toBeGreaterThan(0);
      }
    }
  });

  it('refuses a known field sent with the wrong wire type (400), like the reference, instead of dropping it', async () => {
    // A store at global version 1, then a PutObjects whose global_version (field 2, an int64)
    // arrives length-delimited: dropped, it would skip the global-version check.
    const storeId = `wiretype-${Math.random()}`;
    const setup = vss.PutObjectRequest.encode({ storeId, globalVersion: bigIntToInt64(0n), transactionItems: [keyValue('k', 0n)] }).finish();
    expect((await send(`${server.url}/putObjects`, setup)).status).toBe(200);
    const item = vss.KeyValue.encode(keyValue('k2', 0n)).finish();
    const storeIdField = [0x0a, storeId.length, ...Buffer.from(storeId)];
    const misTyped = Uint8Array.from([...storeIdField, 0x12, 0x01, 0x00, 0x1a, item.length, ...item]);
    const response = await send(`${server.url}/putObjects`, misTyped);
    expect(response.status).toBe(400);
    expect(errorOf(response).message).toMatch(/^Error parsing request/);
    // Nothing was written, and store_id (field 1) as a varint is refused the same way.
    const read = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ storeId, key: 'k2' }).finish());
    expect(read.status).toBe(404);
    expect((await send(`${server.url}/getObject`, Uint8Array.from([0x08, 0x01]))).status).toBe(400);
  });

  it('survives random and truncated bodies without a single 500', async () => {
    const random = pseudoRandom(0x5eed);
    const valid = {
      '/getObject': vss.GetObjectRequest.encode({ storeId: 'fuzz', key: 'k' }).finish(),
      '/putObjects': vss.PutObjectRequest.encode({
        storeId: 'fuzz',
        globalVersion: bigIntToInt64(-1n),
        transactionItems: [keyValue('a', -1n, text('value')), keyValue('b', -1n, text('other'))],
        deleteItems: [keyValue('c', 5n)],
      }).finish(),
      '/deleteObject': vss.DeleteObjectRequest.encode({ storeId: 'fuzz', keyValue: keyValue('a', 3n) }).finish(),
      '/listKeyVersions': vss.ListKeyVersionsRequest.encode({ storeId: 'fuzz', keyPrefix: 'a', pageSize: 3, pageToken: '12' }).finish(),
    };
    const statuses = new Map<number, number>();
    for (const op of OPS) {
      const bodies: Uint8Array[] = [];
      for (let length = 0; length < valid[op].length; length++) bodies.push(valid[op].subarray(0, length));
      for (let i = 0; i < 150; i++) bodies.push(random(1 + (random(1)[0] % 64)));
      for (const body of bodies) {
        const response = await send(server.url + op, body);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        expect([200, 400, 404, 409], `${op} ${Buffer.from(body).toString('hex')} → ${response.status}`).toContain(response.status);
        if (response.status !== 200) errorOf(response);
      }
    }
    // The corpus really exercised the decoder's failure path, not only lucky valid bodies.
    expect(statuses.get(400) ?? 0).toBeGreaterThan(100);
  });

  it('caps huge page sizes at 100', async () => {
    const storeId = 'huge-pages';
    await send(`${server.url}/putObjects`, vss.PutObjectRequest.encode({ storeId, transactionItems: Array.from({ length: 120 }, (_, i) => keyValue(`k${i}`, 0n)) }).finish());
    const response = await send(`${server.url}/listKeyVersions`, vss.ListKeyVersionsRequest.encode({ storeId, pageSize: 2 ** 31 - 1 }).finish());
    expect(vss.ListKeyVersionsResponse.decode(response.body).keyVersions).toHaveLength(100);
  });

  it('refuses a body over the limit with 413 ErrorResponse and accepts one exactly at it', async () => {
    const limit = 64 * 1024;
    const atLimit = vss.PutObjectRequest.encode({ storeId: 'lim', transactionItems: [keyValue('k', -1n, new Uint8Array(limit - 20))] }).finish();
    // Size the value so the encoded request is exactly `limit` bytes.
    const overhead = atLimit.length - (limit - 20);
    const exact = vss.PutObjectRequest.encode({ storeId: 'lim', transactionItems: [keyValue('k', -1n, new Uint8Array(limit - overhead))] }).finish();
    expect(exact.length).toBe(limit);
    expect((await send(`${server.url}/putObjects`, exact)).status).toBe(200);
    const over = vss.PutObjectRequest.encode({ storeId: 'lim', transactionItems: [keyValue('k', -1n, new Uint8Array(limit - overhead + 1))] }).finish();
    const response = await send(`${server.url}/putObjects`, over);
    expect(response.status).toBe(413);
    expect(errorOf(response)).toEqual({ code: INVALID, message: 'Request body too large' });
  });

  it('stops reading a streamed (chunked) body as soon as it passes the limit', async () => {
    const limit = 64 * 1024;
    const total = 64 * 1024 * 1024;
    let written = 0;
    const result = await new Promise<{ status: number; header: unknown; writtenAtResponse: number; body: Buffer }>((resolve, reject) => {
      const request = http.request(`${server.url}/putObjects`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        const writtenAtResponse = written;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, header: res.headers['vss-protocol-version'], writtenAtResponse, body: Buffer.concat(chunks) }));
      });
      request.on('error', (error) => (written > limit ? undefined : reject(error)));
      const chunk = Buffer.alloc(16 * 1024, 1);
      const pump = () => {
        while (written < total) {
          written += chunk.length;
          if (!request.write(chunk)) return void request.once('drain', pump);
        }
        request.end();
      };
      pump();
    });
    expect(result.status).toBe(413);
    expect(result.header).toBe('0');
    expect(vss.ErrorResponse.decode(result.body).errorCode).toBe(INVALID);
    // The answer came long before the client could push the whole body.
    expect(result.writtenAtResponse).toBeLessThan(total / 2);
  });

  it('refuses a declared Content-Length over the limit before any body arrives', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const request = http.request(`${server.url}/putObjects`, { method: 'POST', headers: { 'content-length': String(2 * 1024 ** 3) } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        request.destroy();
      });
      request.on('error', () => undefined);
      request.flushHeaders();
      setTimeout(() => reject(new Error('no early answer')), 5000);
    });
    expect(status).toBe(413);
  });

  it('answers malformed HTTP with 400, the version header and an ErrorResponse', async () => {
    const raw = await new Promise<string>((resolve) => {
      const socket = net.connect(server.port, '127.0.0.1', () => socket.write('THIS IS NOT HTTP\r\n\r\n'));
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString('latin1')));
      socket.on('close', () => resolve(data));
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400/);
    expect(raw.toLowerCase()).toContain('vss-protocol-version: 0');
    const body = Buffer.from(raw.slice(raw.indexOf('\r\n\r\n') + 4), 'latin1');
    expect(vss.ErrorResponse.decode(body).errorCode).toBe(INVALID);
  });

  it('refuses more than 1000 items before decoding any of them, and still decodes 1000', async () => {
    const decode = vi.spyOn(vss.PutObjectRequest, 'decode');
    try {
      // Empty items cost two bytes each on the wire and one object each when decoded.
      const emptyItems = (n: number) => Buffer.concat([vss.PutObjectRequest.encode({ storeId: 's' }).finish(), Buffer.alloc(2 * n, Uint8Array.from([0x1a, 0x00]))]);
      const refused = await send(`${server.url}/putObjects`, emptyItems(1001));
      expect(refused.status).toBe(400);
      expect(errorOf(refused)).toEqual({ code: INVALID, message: 'Number of write items per request should be less than equal to 1000' });
      expect(decode).not.toHaveBeenCalled();
      // Delete items count too.
      const mixed = Buffer.concat([emptyItems(600), Buffer.alloc(2 * 401, Uint8Array.from([0x22, 0x00]))]);
      expect(errorOf(await send(`${server.url}/putObjects`, mixed)).message).toMatch(/^Number of write items/);
      expect(decode).not.toHaveBeenCalled();
      // At the limit the request is decoded and judged on its items (empty keys are invalid).
      const atLimit = await send(`${server.url}/putObjects`, emptyItems(1000));
      expect(decode).toHaveBeenCalledTimes(1);
      expect(errorOf(atLimit).message).not.toMatch(/^Number of write items/);
    } finally {
      decode.mockRestore();
    }
  });

  it('serves a request without Host, or with an Expect other than 100-continue, like any other', async () => {
    const body = vss.GetObjectRequest.encode({ storeId: 'no-such-store', key: 'k' }).finish();
    for (const headers of [`content-length: ${body.length}`, `host: x\r\nexpect: something-else\r\ncontent-length: ${body.length}`]) {
      const raw = await new Promise<string>((resolve) => {
        const socket = net.connect(server.port, '127.0.0.1', () => {
          socket.write(`POST /vss/getObject HTTP/1.1\r\n${headers}\r\nconnection: close\r\n\r\n`);
          socket.write(body);
        });
        let data = '';
        socket.on('data', (chunk) => (data += chunk.toString('latin1')));
        socket.on('close', () => resolve(data));
      });
      expect(raw, headers).toMatch(/^HTTP\/1\.1 404/);
      expect(raw.toLowerCase()).toContain('vss-protocol-version: 0');
      const answer = Buffer.from(raw.slice(raw.indexOf('\r\n\r\n') + 4), 'latin1');
      expect(vss.ErrorResponse.decode(answer).errorCode).toBe(vss.ErrorCode.NO_SUCH_KEY_EXCEPTION);
    }
  });

  it('survives clients that hang up in the middle of a body', async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const socket = net.connect(server.port, '127.0.0.1', () => {
          socket.write(`POST /vss/putObjects HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n${'a'.repeat(100)}`);
          setTimeout(() => socket.destroy(), 20);
        });
        socket.on('close', () => resolve());
      });
    }
    await expectStillServing(server);
  });
});

describe('body limit configuration', () => {
  it('accepts limits up to 1 GiB and refuses larger ones', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, maxRequestBodySize: 1024 ** 3 });
    await server.close();
    await expect(startVssServer({ auth: { kind: 'noop' }, maxRequestBodySize: 1024 ** 3 + 1 })).rejects.toBeInstanceOf(ServerConfigError);
    await expect(startVssServer({ auth: { kind: 'noop' }, maxRequestBodySize: -1 })).rejects.toBeInstanceOf(ServerConfigError);
  });

  it('with a limit of 0 every non-empty body is refused and empty ones still work', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, maxRequestBodySize: 0 });
    try {
      expect((await send(`${server.url}/putObjects`, new Uint8Array(0))).status).toBe(200);
      expect((await send(`${server.url}/putObjects`, Uint8Array.from([0x0a, 0x00]))).status).toBe(413);
    } finally {
      await server.close();
    }
  });
});

describe('authentication happens before the body is read', () => {
  it('answers 401 to an unauthenticated request with a garbage or oversized body', async () => {
    const server = await startVssServer({ auth: { kind: 'signature' }, maxRequestBodySize: 1024 });
    try {
      for (const body of [Uint8Array.from([0xff, 0xff, 0xff]), new Uint8Array(4096)]) {
        const response = await send(`${server.url}/putObjects`, body);
        expect(response.status).toBe(401);
        expect(errorOf(response).code).toBe(vss.ErrorCode.AUTH_EXCEPTION);
      }
      // Unknown paths are refused without consulting the authorizer.
      expect((await send(`${server.url}/nope`, 'x')).status).toBe(400);
      // And an authenticated request on the same server still works.
      const identity = newIdentity();
      const ok = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), { headers: { authorization: identity.header() } });
      expect(ok.status).toBe(200);
    } finally {
      await server.close();
    }
  });
});

describe('internal errors', () => {
  it('are answered with 500 and a fixed message that leaks nothing, and the server keeps serving', async () => {
    const memory = new MemoryBackend();
    let failing = true;
    const flaky: StorageBackend = {
      kind: 'flaky',
      get: async (...args) => {
        if (failing) throw new Error('connection to db-secret-host:5432 refused (password=hunter2)');
        return memory.get(...args);
      },
      put: (...args) => memory.put(...args),
      delete: (...args) => memory.delete(...args),
      list: (...args) => memory.list(...args),
      checkHealth: async () => {
        if (failing) throw new Error('db down');
      },
      close: () => memory.close(),
    };
    const server = await startVssServer({ auth: { kind: 'noop' }, backend: flaky });
    try {
      const response = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish());
      expect(response.status).toBe(500);
      expect(errorOf(response)).toEqual({ code: vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, message: 'Unknown Server Error occurred.' });
      expect(response.body.toString('latin1')).not.toMatch(/secret|hunter2/);
      const health = await send(server.url.replace(/\/vss$/, '/health'), undefined, { method: 'GET' });
      expect(health.status).toBe(503);
      failing = false;
      await expectStillServing(server);
    } finally {
      await server.close();
    }
  });
});
