/**
 * Requests protobufjs would encode as something other than what the caller meant are refused
 * before anything is sent, with the InvalidRequestError the server would give, naming the field.
 * TypeScript rules these out; plain JavaScript callers (and `as any`) meet them easily, since the
 * rest of the API takes versions as bigints.
 */
import Long from 'long';
import { describe, expect, it } from 'vitest';
import { errorProvesNotApplied, InvalidRequestError, NO_RETRY, VssClient } from '../../src/client/index.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { mockFetch } from './mock-vss.js';

const BASE = 'http://vss.test/vss';
/** The generated types say Long; protobufjs takes numbers and strings too, and JavaScript callers pass anything. */
const anyVersion = (version: unknown) => version as Long;
const ok = () => ({ body: vss.PutObjectResponse.encode({}).finish() });

function client() {
  const mock = mockFetch(ok);
  return { client: new VssClient(BASE, { fetch: mock.fetch, retryPolicy: NO_RETRY }), requests: mock.requests };
}

async function refusal(call: Promise<unknown>): Promise<InvalidRequestError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(InvalidRequestError);
  expect(errorProvesNotApplied(error)).toBe(true);
  return error as InvalidRequestError;
}

describe('VssClient refuses requests protobufjs would silently alter', () => {
  it('refuses a bigint version, which protobufjs would send as 0', async () => {
    const { client: c, requests } = client();
    const put = c.putObjects({ storeId: 's', transactionItems: [{ key: 'k', version: anyVersion(5n), value: new Uint8Array([1]) }] });
    expect((await refusal(put)).message).toBe(
      'Request sent to VSS Storage was invalid: putObjects.transactionItems[0].version must be a safe-integer number or a Long (keyValue() builds one from a bigint), got the bigint 5n',
    );
    const del = c.deleteObject({ storeId: 's', keyValue: { key: 'k', version: anyVersion(3n) } });
    expect((await refusal(del)).message).toContain('deleteObject.keyValue.version must be');
    const global = c.putObjects({ storeId: 's', globalVersion: anyVersion(1n), transactionItems: [keyValue('k', 0n)] });
    expect((await refusal(global)).message).toContain('putObjects.globalVersion must be');
    expect(requests).toHaveLength(0);
  });

  it('refuses a version that is not an exact integer, or a string that is not an int64', async () => {
    const { client: c, requests } = client();
    for (const [version, got] of [
      [1.5, 'the number 1.5'],
      [2 ** 53, 'the number 9007199254740992'],
      ['seven', 'a string that is not a decimal int64'],
      ['9223372036854775808', 'a string that is not a decimal int64'],
      [true, 'boolean'],
    ] as const) {
      const put = c.putObjects({ storeId: 's', deleteItems: [{ key: 'k', version: anyVersion(version) }] });
      expect((await refusal(put)).message, String(version)).toMatch(new RegExp(`deleteItems\\[0\\]\\.version must be .*, got ${got}$`));
    }
    expect(requests).toHaveLength(0);
  });

  it('refuses a value that is not a Uint8Array, which protobufjs would read as base64', async () => {
    const { client: c, requests } = client();
    const put = c.putObjects({ storeId: 's', transactionItems: [{ key: 'k', version: anyVersion(0), value: 'hello' as unknown as Uint8Array }] });
    expect((await refusal(put)).message).toMatch(/transactionItems\[0\]\.value must be a Uint8Array, got string$/);
    const array = c.putObjects({ storeId: 's', transactionItems: [{ key: 'k', version: anyVersion(0), value: [1, 2] as unknown as Uint8Array }] });
    expect((await refusal(array)).message).toMatch(/got Array$/);
    expect(requests).toHaveLength(0);
  });

  it('sends what protobufjs encodes faithfully: numbers, Longs, decimal strings, Buffers, absent fields', async () => {
    const { client: c, requests } = client();
    await c.putObjects({
      storeId: 's',
      globalVersion: Long.fromString('9223372036854775807'),
      transactionItems: [
        { key: 'a', version: anyVersion(7), value: new Uint8Array([1]) },
        { key: 'b', version: anyVersion('-1'), value: Buffer.from('xy') },
        keyValue('c', -1n, new Uint8Array([2])),
        { key: 'd' },
      ],
      deleteItems: [{ key: 'e', version: null, value: null }],
    });
    expect(requests).toHaveLength(1);
    const sent = vss.PutObjectRequest.decode(requests[0].body);
    expect(sent.globalVersion?.toString()).toBe('9223372036854775807');
    expect(sent.transactionItems.map((kv) => [kv.key, String(kv.version), Array.from(kv.value ?? [])])).toEqual([
      ['a', '7', [1]],
      ['b', '-1', [120, 121]],
      ['c', '-1', [2]],
      ['d', '0', []],
    ]);
  });
});
