import { describe, expect, it } from 'vitest';
import { bigIntToInt64, hasField, int64ToBigInt, INT64_MAX, INT64_MIN, keyValue, vss } from '../../src/protocol/index.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('wire encoding matches the reference bytes', () => {
  it('encodes the reference PutObjects ping body', () => {
    const body = vss.PutObjectRequest.encode({
      storeId: 'storeId',
      transactionItems: [keyValue('k1', -1n, new TextEncoder().encode('k1v1'))],
    }).finish();
    expect(hex(body).toUpperCase()).toBe('0A0773746F726549641A150A026B3110FFFFFFFFFFFFFFFFFF011A046B317631');
  });

  it('encodes the reference GetObject bodies', () => {
    expect(hex(vss.GetObjectRequest.encode({ storeId: 'storeId', key: 'k1' }).finish()).toUpperCase()).toBe(
      '0A0773746F7265496412026B31',
    );
    expect(hex(vss.GetObjectRequest.encode({ storeId: 'store', key: 'k1' }).finish())).toBe('0a0573746f726512026b31');
  });

  it('keeps presence of optional fields set to their zero value', () => {
    const encoded = vss.ListKeyVersionsResponse.encode({ nextPageToken: '', globalVersion: bigIntToInt64(0n) }).finish();
    expect(hex(encoded)).toBe('12001800');
    const decoded = vss.ListKeyVersionsResponse.decode(encoded);
    expect(hasField(decoded, 'nextPageToken')).toBe(true);
    expect(hasField(decoded, 'globalVersion')).toBe(true);
    const absent = vss.ListKeyVersionsResponse.decode(new Uint8Array(0));
    expect(hasField(absent, 'nextPageToken')).toBe(false);
    expect(hasField(absent, 'globalVersion')).toBe(false);
  });

  it('distinguishes an absent global_version from 0 in PutObjectRequest', () => {
    expect(hex(vss.PutObjectRequest.encode({ storeId: 's' }).finish())).toBe('0a0173');
    expect(hex(vss.PutObjectRequest.encode({ storeId: 's', globalVersion: bigIntToInt64(0n) }).finish())).toBe('0a01731000');
  });

  it('round-trips the int64 extremes exactly', () => {
    for (const v of [INT64_MAX, INT64_MIN, -1n, 0n, 1n, (1n << 53n) + 1n]) {
      const kv = vss.KeyValue.decode(vss.KeyValue.encode(keyValue('k', v)).finish());
      expect(int64ToBigInt(kv.version)).toBe(v);
    }
    expect(() => bigIntToInt64(INT64_MAX + 1n)).toThrow(RangeError);
    expect(() => int64ToBigInt(2 ** 60)).toThrow(RangeError);
  });
});
