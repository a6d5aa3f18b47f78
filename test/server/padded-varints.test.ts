/**
 * The server decodes request bodies as the reference server (prost) does: a field key or length
 * in a non-minimal ("padded") varint is read as the value it spells, not refused or misread.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { int64ToBigInt, keyValue, vss } from '../../src/protocol/index.js';
import { MemoryBackend, startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { errorOf, send, str, text } from './helpers.js';

describe('padded varints in a request body', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ auth: { kind: 'noop' }, backend: new MemoryBackend() });
  });
  afterAll(async () => {
    await server.close();
  });

  it('answers a GetObjectRequest whose key and lengths are padded with the object it names', async () => {
    const put = await send(`${server.url}/putObjects`, vss.PutObjectRequest.encode({ storeId: 'st', transactionItems: [keyValue('k1', 0n, text('v1'))] }).finish());
    expect(put.status).toBe(200);
    // store_id: key 0x0a as 6 bytes, length 2 as 7; key: key 0x12 as 10 bytes, length 2 as 3.
    const body = Uint8Array.from([
      0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, ...text('st'),
      0x92, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x82, 0x80, 0x00, ...text('k1'),
    ]);
    const response = await send(`${server.url}/getObject`, body);
    expect(response.status, response.body.toString('hex')).toBe(200);
    const value = vss.GetObjectResponse.decode(response.body).value;
    expect([value?.key, int64ToBigInt(value?.version), str(value?.value)]).toEqual(['k1', 1n, 'v1']);

    // A key above u32::MAX whose low 32 bits are store_id's is refused, as prost refuses it.
    const refused = await send(`${server.url}/getObject`, Uint8Array.from([0x8a, 0x80, 0x80, 0x80, 0x10, 0x02, ...text('st'), 0x12, 0x02, ...text('k1')]));
    expect(refused.status).toBe(400);
    expect(errorOf(refused)).toEqual({ code: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: expect.stringMatching(/invalid key value/) as unknown as string });
  });
});
