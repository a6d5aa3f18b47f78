/**
 * prost (the reference server's and client's decoder) reads every varint, tags and lengths
 * included, as up to 10 bytes: a non-minimal ("padded") encoding such as 8a 80 80 80 80 00 for 10
 * is the value it spells. A key above u32::MAX, a varint over 10 bytes and a tenth byte above 1
 * are refused; an int32 is the varint cut to 32 bits. strictReader must read the same.
 */
import { describe, expect, it } from 'vitest';
import { countTopLevelFields, int64ToBigInt, keyValue, strictReader, vss } from '../../src/protocol/index.js';

const bytes = (...parts: (number | readonly number[] | Uint8Array)[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((part) => (typeof part === 'number' ? [part] : [...part])));

/** `value` (below 128) as a varint of exactly `size` bytes. */
const padded = (value: number, size: number): number[] =>
  size === 1 ? [value] : [value | 0x80, ...new Array<number>(size - 2).fill(0x80), 0x00];

const utf8 = (text: string) => new TextEncoder().encode(text);

describe('strictReader reads padded varints as prost does', () => {
  it('reads a padded field tag of every length up to 10 bytes', () => {
    for (let size = 1; size <= 10; size++) {
      // store_id (field 1, length-delimited: key 0x0a) with a padded key, then key (0x12).
      const body = bytes(padded(0x0a, size), 1, utf8('s'), 0x12, 1, utf8('k'));
      const request = vss.GetObjectRequest.decode(strictReader(body));
      expect([size, request.storeId, request.key]).toEqual([size, 's', 'k']);
    }
  });

  it('reads a padded length of a string and of a bytes field, and does not eat the bytes after it', () => {
    for (let size = 1; size <= 10; size++) {
      const get = vss.GetObjectRequest.decode(strictReader(bytes(0x0a, padded(2, size), utf8('st'), 0x12, padded(1, size), utf8('k'))));
      expect([size, get.storeId, get.key]).toEqual([size, 'st', 'k']);
      // KeyValue: key, then value (field 3, bytes) with a padded length, then version.
      const kv = vss.KeyValue.decode(strictReader(bytes(0x0a, 1, utf8('k'), 0x1a, padded(3, size), [1, 2, 3], 0x10, 7)));
      expect([size, kv.key, [...(kv.value ?? [])], int64ToBigInt(kv.version)]).toEqual([size, 'k', [1, 2, 3], 7n]);
    }
  });

  it('reads a padded length of a nested message (a KeyValue in PutObjectRequest)', () => {
    const item = vss.KeyValue.encode(keyValue('k', 5n, Uint8Array.of(9))).finish();
    for (let size = 1; size <= 10; size++) {
      const body = bytes(0x0a, 1, utf8('s'), 0x1a, padded(item.length, size), item, 0x22, padded(item.length, size), item);
      const request = vss.PutObjectRequest.decode(strictReader(body));
      expect(request.storeId).toBe('s');
      expect(request.transactionItems.map((kv) => [kv.key, int64ToBigInt(kv.version), [...(kv.value ?? [])]])).toEqual([['k', 5n, [9]]]);
      expect(request.deleteItems.map((kv) => kv.key)).toEqual(['k']);
    }
  });

  it('reads a padded length of an unknown length-delimited field it skips', () => {
    for (let size = 1; size <= 10; size++) {
      // Field 15, wire type 2 (key 0x7a), three bytes, then key.
      const request = vss.GetObjectRequest.decode(strictReader(bytes(0x7a, padded(3, size), [0x12, 0x01, 0x78], 0x12, 1, utf8('k'))));
      expect([size, request.key]).toEqual([size, 'k']);
    }
  });

  it('reads int32 page_size as the varint cut to 32 bits: padded, a 10-byte -1, bits above 31 dropped', () => {
    const pageSize = (...varint: number[]) => vss.ListKeyVersionsRequest.decode(strictReader(bytes(0x18, varint, 0x0a, 1, utf8('s')))).pageSize;
    for (let size = 1; size <= 10; size++) expect([size, pageSize(...padded(5, size))]).toEqual([size, 5]);
    expect(pageSize(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)).toBe(-1);
    // -1 as a uint32 only (ff ff ff ff 0f), and 2^32 + 5 (prost's `as i32` gives 5).
    expect(pageSize(0xff, 0xff, 0xff, 0xff, 0x0f)).toBe(-1);
    expect(pageSize(0x85, 0x80, 0x80, 0x80, 0x10)).toBe(5);
    // ErrorResponse.error_code is an enum, read the same way.
    expect(vss.ErrorResponse.decode(strictReader(bytes(0x08, padded(4, 7)))).errorCode).toBe(vss.ErrorCode.NO_SUCH_KEY_EXCEPTION);
  });

  it('still refuses a varint of 11 bytes and a tenth byte above 1, in a tag, a length and a value', () => {
    const eleven = [0x8a, ...new Array<number>(9).fill(0x80), 0x00];
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(eleven, 1, 0x6b)))).toThrow('invalid varint encoding: longer than 10 bytes');
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x0a, 0x81, new Array<number>(9).fill(0x80), 0x00, 0x6b)))).toThrow(
      'invalid varint encoding: longer than 10 bytes',
    );
    expect(() => vss.ListKeyVersionsRequest.decode(strictReader(bytes(0x18, 0x85, new Array<number>(9).fill(0x80), 0x00)))).toThrow(
      'invalid varint encoding: longer than 10 bytes',
    );
    const tenthTwo = (first: number) => [first | 0x80, ...new Array<number>(8).fill(0x80), 0x02];
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(tenthTwo(0x0a), 1, 0x6b)))).toThrow('invalid varint encoding: more than 64 bits');
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x0a, tenthTwo(1), 0x6b)))).toThrow('invalid varint encoding: more than 64 bits');
    expect(() => vss.ListKeyVersionsRequest.decode(strictReader(bytes(0x18, tenthTwo(5))))).toThrow('invalid varint encoding: more than 64 bits');
  });

  it('refuses a field key above u32::MAX, even when its low 32 bits are a valid key', () => {
    // 2^32 + 0x0a in 5 bytes, and 2^35 + 0x0a in 6: as u32 both would be store_id.
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x8a, 0x80, 0x80, 0x80, 0x10, 1, 0x6b)))).toThrow(/invalid key value/);
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x8a, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 0x6b)))).toThrow(/invalid key value/);
    // The largest key, u32::MAX (field 2^29 - 1, wire type 7), is read, then refused for its wire type.
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0xff, 0xff, 0xff, 0xff, 0x0f)))).toThrow(/wire type 7/);
  });

  it('refuses a length beyond the end, however it is encoded, and a varint cut short by the end', () => {
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x0a, padded(2, 6), 0x6b)))).toThrow(RangeError);
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x6b)))).toThrow(RangeError);
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)))).toThrow(RangeError);
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x8a, 0x80, 0x80)))).toThrow(RangeError);
    expect(() => vss.GetObjectRequest.decode(strictReader(bytes(0x0a, 0x81, 0x80)))).toThrow(RangeError);
    // A nested message whose padded length runs past the end of its parent.
    const item = vss.KeyValue.encode(keyValue('k', 5n)).finish();
    expect(() => vss.PutObjectRequest.decode(strictReader(bytes(0x1a, padded(item.length + 1, 7), item)))).toThrow(RangeError);
  });
});

describe('countTopLevelFields reads padded tags and lengths as the strict decode does', () => {
  it('counts items behind padded tags and lengths, exactly as many as the decode materialises', () => {
    const item = vss.KeyValue.encode(keyValue('k', 0n)).finish();
    const parts: number[] = [0x0a, ...padded(1, 8), 0x73];
    for (let i = 0; i < 6; i++) parts.push(...padded(0x1a, 1 + (i % 10)), ...padded(item.length, 10 - (i % 10)), ...item);
    const body = Uint8Array.from(parts);
    const decoded = vss.PutObjectRequest.decode(strictReader(body));
    expect(decoded.transactionItems).toHaveLength(6);
    expect(countTopLevelFields(body, [3, 4], 100)).toBe(6);
    expect(countTopLevelFields(body, [3, 4], 2)).toBe(3);
  });

  it('does not count a key above u32::MAX whose low 32 bits name an item field, and reports it as malformed', () => {
    const item = vss.KeyValue.encode(keyValue('k', 0n)).finish();
    const body = bytes(0x9a, 0x80, 0x80, 0x80, 0x10, item.length, item);
    expect(() => vss.PutObjectRequest.decode(strictReader(body))).toThrow(/invalid key value/);
    expect(countTopLevelFields(body, [3, 4], 100)).toBeUndefined();
  });
});
