/**
 * Large values on the embedded database (PGlite) through the real HTTP server: a value at the
 * default body limit round-trips on a fresh data directory, and values the embedded database
 * cannot hold (its WebAssembly memory stops at 2 GiB) are refused up front with a typed 413
 * naming the limit, nothing written, the server serving on. Slow by nature (a 128 MiB value
 * passes through PGlite's synchronous WebAssembly calls), hence the generous timeouts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { int64ToBigInt, keyValue, vss } from '../../src/protocol/index.js';
import { DEFAULT_MAX_REQUEST_BODY_SIZE, PGLITE_MAX_VALUE_SIZE, PgliteBackend, startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { errorOf, send } from './helpers.js';

const MiB = 1024 * 1024;

function filled(size: number): Uint8Array {
  const value = new Uint8Array(size);
  for (let i = 0; i < size; i += 4093) value[i] = (i * 7) & 0xff;
  value[size - 1] = 0xa5;
  return value;
}

function putBody(items: ReadonlyArray<{ key: string; value: Uint8Array }>, version = 0n): Uint8Array {
  return vss.PutObjectRequest.encode({ storeId: 's', transactionItems: items.map((item) => keyValue(item.key, version, item.value)) }).finish();
}

async function put(server: StartedVssServer, items: ReadonlyArray<{ key: string; value: Uint8Array }>, version = 0n) {
  return send(`${server.url}/putObjects`, putBody(items, version));
}

async function get(server: StartedVssServer, key: string): Promise<{ status: number; value?: Uint8Array; version?: bigint }> {
  const response = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ storeId: 's', key }).finish());
  if (response.status !== 200) return { status: response.status };
  const found = vss.GetObjectResponse.decode(response.body).value as vss.KeyValue;
  return { status: 200, value: found.value, version: int64ToBigInt(found.version) };
}

/** A small write and read, and /health: the embedded database still answers. */
async function expectServing(server: StartedVssServer, key: string): Promise<void> {
  expect((await put(server, [{ key, value: Uint8Array.from([1, 2, 3]) }], -1n)).status).toBe(200);
  expect(Array.from((await get(server, key)).value ?? [])).toEqual([1, 2, 3]);
  const health = await send(server.url.replace(/\/vss$/, '/health'), undefined, { method: 'GET' });
  expect(health.status).toBe(200);
}

describe('PGlite on a fresh data directory', () => {
  let dir: string;
  let server: StartedVssServer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ldk-vss-pglite-large-'));
    server = await startVssServer({ port: 0, backend: { kind: 'pglite', dataDir: dir }, auth: { kind: 'noop' } });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stores and reads back the largest value the default body limit admits', async () => {
    // The body's overhead around the value (store id, key, nested lengths) is the same for any
    // value whose length takes a 4-byte varint (2 MiB to 256 MiB).
    const overhead = putBody([{ key: 'big', value: new Uint8Array(2 * MiB) }]).byteLength - 2 * MiB;
    const value = filled(DEFAULT_MAX_REQUEST_BODY_SIZE - overhead);
    const body = putBody([{ key: 'big', value }]);
    expect(body.byteLength).toBe(DEFAULT_MAX_REQUEST_BODY_SIZE);

    const stored = await send(`${server.url}/putObjects`, body);
    expect(stored.status).toBe(200);
    const read = await get(server, 'big');
    expect(read.status).toBe(200);
    expect(read.version).toBe(1n);
    expect(read.value?.byteLength).toBe(value.byteLength);
    expect(Buffer.compare(read.value!, value)).toBe(0);
    await expectServing(server, 'small');
  }, 900_000);
});

describe('values larger than PGlite can hold', () => {
  it('are refused at the default limit with a 413 naming it, before PGlite sees them', async () => {
    // An over-limit put used to go to PGlite, which then needed about five times the value in
    // its 2 GiB WebAssembly memory (and kept it): "out of memory" 500s that clients retry.
    const backend = await PgliteBackend.open();
    const server = await startVssServer({ port: 0, backend, auth: { kind: 'noop' }, maxRequestBodySize: PGLITE_MAX_VALUE_SIZE + MiB });
    try {
      const refused = await put(server, [{ key: 'huge', value: new Uint8Array(PGLITE_MAX_VALUE_SIZE + 1) }]);
      expect(refused.status).toBe(413);
      const error = errorOf(refused);
      expect(error.code).toBe(vss.ErrorCode.INVALID_REQUEST_EXCEPTION);
      expect(error.message).toContain(`${PGLITE_MAX_VALUE_SIZE + 1} bytes`);
      expect(error.message).toContain(`${PGLITE_MAX_VALUE_SIZE}-byte value limit`);
      expect((await get(server, 'huge')).status).toBe(404);
      await expectServing(server, 'after');
    } finally {
      await server.close();
      await backend.close();
    }
  }, 600_000);

  it('are refused by a configured maxValueSize, whole request and all, while values at the limit are stored', async () => {
    const limit = 64 * 1024;
    const backend = await PgliteBackend.open({ maxValueSize: limit });
    const server = await startVssServer({ port: 0, backend, auth: { kind: 'noop' } });
    try {
      const atLimit = filled(limit);
      expect((await put(server, [{ key: 'at-limit', value: atLimit }])).status).toBe(200);
      expect(Buffer.compare((await get(server, 'at-limit')).value!, atLimit)).toBe(0);

      const single = await put(server, [{ key: 'over', value: filled(limit + 1) }]);
      expect(single.status).toBe(413);
      expect(errorOf(single)).toEqual({
        code: vss.ErrorCode.INVALID_REQUEST_EXCEPTION,
        message: `A value of ${limit + 1} bytes exceeds the ${limit}-byte value limit of this server's pglite storage`,
      });
      // All or nothing: the small item of a request with one over-limit value is not written.
      const multi = await put(server, [
        { key: 'small-sibling', value: filled(10) },
        { key: 'over', value: filled(limit + 1) },
      ]);
      expect(multi.status).toBe(413);
      expect((await get(server, 'small-sibling')).status).toBe(404);
      expect((await get(server, 'over')).status).toBe(404);
      await expectServing(server, 'after');
    } finally {
      await server.close();
      await backend.close();
    }
  }, 120_000);

  it('a server started on the embedded database takes maxValueSize, and warns when its body limit admits more', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const server = await startVssServer({ port: 0, backend: { kind: 'pglite', maxValueSize: 1024 }, auth: { kind: 'noop' }, maxRequestBodySize: 4096, logger });
    try {
      const warning = lines.map((line) => JSON.parse(line) as { msg: string; maxValueSize?: number }).find((entry) => entry.maxValueSize !== undefined);
      expect(warning?.msg).toContain('the embedded database stores values up to 1024 bytes');
      expect((await put(server, [{ key: 'over', value: filled(2000) }])).status).toBe(413);
      expect((await put(server, [{ key: 'fits', value: filled(1024) }])).status).toBe(200);
    } finally {
      await server.close();
    }
    lines.length = 0;
    const quiet = await startVssServer({ port: 0, backend: { kind: 'pglite' }, auth: { kind: 'noop' }, logger });
    await quiet.close();
    expect(lines.filter((line) => line.includes('maxValueSize'))).toEqual([]);
  }, 120_000);

  it('take a maxValueSize that is a whole number of bytes', async () => {
    for (const maxValueSize of [-1, 1.5, Number.NaN]) {
      await expect(PgliteBackend.open({ maxValueSize })).rejects.toThrow(RangeError);
    }
  }, 60_000);
});
