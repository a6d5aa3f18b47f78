/**
 * Replies are decoded as the reference client (prost) and our server decode: a varint longer
 * than 10 bytes or carrying bits past 63 is refused as undecodable, not cut down to some other
 * number (a key's version, the store's global version).
 */
import { describe, expect, it } from 'vitest';
import { NO_RETRY, VssClient, VssClientError } from '../../src/client/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { mockFetch } from './mock-vss.js';

const BASE = 'http://vss.test/vss';
const listing = () => vss.ListKeyVersionsResponse.encode({ keyVersions: [keyValue('k', 4n)] }).finish();

async function listWith(body: Uint8Array, status = 200) {
  const { fetch } = mockFetch(() => ({ status, body }));
  return new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).listKeyVersions({ storeId: 's' }).then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

describe('VssClient decodes replies strictly', () => {
  it('refuses a global_version whose varint is wider than 64 bits (a lenient reader reports -1)', async () => {
    const body = Uint8Array.from([...listing(), 0x18, ...new Array(9).fill(0xff), 0x7f]);
    const outcome = await listWith(body);
    expect('error' in outcome && outcome.error).toBeInstanceOf(VssClientError);
    const error = (outcome as { error: VssClientError }).error;
    expect(error.reason).toBe('decode');
    expect(error.message).toMatch(/undecodable 200 response .*invalid varint encoding: more than 64 bits/);
  });

  it('refuses an unknown field whose varint runs past 10 bytes, in a reply and in an error reply', async () => {
    const tooLong = [0x28, ...new Array(10).fill(0x80), 0x00];
    const ok = await listWith(Uint8Array.from([...listing(), ...tooLong]));
    expect((ok as { error: VssClientError }).error?.reason).toBe('decode');
    const errorBody = vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.CONFLICT_EXCEPTION, message: 'no' }).finish();
    const failed = await listWith(Uint8Array.from([...errorBody, ...tooLong]), 409);
    expect((failed as { error: VssClientError }).error).toBeInstanceOf(VssClientError);
    expect((failed as { error: VssClientError }).error.message).toMatch(/Unable to decode ErrorResponse .*longer than 10 bytes/);
  });

  it('still reads every valid reply, negative and maximal versions included', async () => {
    const body = vss.ListKeyVersionsResponse.encode({
      keyVersions: [keyValue('a', -1n), keyValue('b', (1n << 63n) - 1n), keyValue('c', -(1n << 63n))],
      globalVersion: keyValue('g', 9n).version,
    }).finish();
    const outcome = await listWith(body);
    const value = (outcome as { value: vss.ListKeyVersionsResponse }).value;
    expect(value.keyVersions.map((kv) => [kv.key, String(kv.version)])).toEqual([
      ['a', '-1'],
      ['b', '9223372036854775807'],
      ['c', '-9223372036854775808'],
    ]);
    expect(value.globalVersion?.toString()).toBe('9');
  });
});
