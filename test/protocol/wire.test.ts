import Long from 'long';
import { describe, expect, it } from 'vitest';
import {
  bigIntToInt64,
  countTopLevelFields,
  hasField,
  hasLoneSurrogate,
  int64ToBigInt,
  INT64_MAX,
  INT64_MIN,
  keyValue,
  keyValueSizeBound,
  strictReader,
  vss,
} from '../../src/protocol/index.js';

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
    expect(() => bigIntToInt64(INT64_MIN - 1n)).toThrow(RangeError);
    expect(() => int64ToBigInt(2 ** 60)).toThrow(RangeError);
    expect(() => int64ToBigInt(1.5)).toThrow(RangeError);
    expect(() => int64ToBigInt(Number.NaN)).toThrow(RangeError);
    expect(int64ToBigInt(-0)).toBe(0n);
    expect(int64ToBigInt(null)).toBe(0n);
    expect(int64ToBigInt(undefined)).toBe(0n);
  });

  it('reads an int64 by its 64 bits, whatever signedness the Long carries (always within the int64 range)', () => {
    // protobufjs writes a Long's bits whatever its `unsigned` flag: an unsigned Long of 2^64 - 1
    // goes on the wire as -1 (an unconditional write), so that is the int64 it stands for.
    expect(int64ToBigInt(Long.fromString('18446744073709551615', true))).toBe(-1n);
    expect(int64ToBigInt(Long.fromString('9223372036854775808', true))).toBe(INT64_MIN);
    expect(int64ToBigInt(Long.fromString('9223372036854775807', true))).toBe(INT64_MAX);
    expect(int64ToBigInt(Long.UZERO)).toBe(0n);
    // What the encoder makes of the same Long agrees.
    const unsigned = Long.fromString('18446744073709551614', true);
    const decoded = vss.KeyValue.decode(vss.KeyValue.encode({ key: 'k', version: unsigned }).finish());
    expect(int64ToBigInt(decoded.version)).toBe(-2n);
    expect(int64ToBigInt(unsigned)).toBe(-2n);
  });
});

/** Top-level tag bytes of an encoded message, in order (every tag here fits in one byte). */
function tagsOf(bytes: Uint8Array): number[] {
  const tags: number[] = [];
  let pos = 0;
  const varint = () => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const b = bytes[pos++];
      value |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return value;
    }
  };
  while (pos < bytes.length) {
    const tag = Number(varint());
    tags.push(tag);
    if ((tag & 7) === 0) varint();
    else if ((tag & 7) === 2) {
      const length = Number(varint());
      pos += length;
    }
    else throw new Error(`unexpected wire type in tag ${tag}`);
  }
  return tags;
}

describe('field numbers and types match the reference proto (vss-server spec §1.3)', () => {
  const kv = keyValue('k', 5n, new Uint8Array([1]));
  const version = bigIntToInt64(7n);

  it.each([
    ['GetObjectRequest', vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish(), [0x0a, 0x12]],
    ['GetObjectResponse', vss.GetObjectResponse.encode({ value: kv }).finish(), [0x12]],
    [
      'PutObjectRequest',
      vss.PutObjectRequest.encode({ storeId: 's', globalVersion: version, transactionItems: [kv], deleteItems: [kv] }).finish(),
      [0x0a, 0x10, 0x1a, 0x22],
    ],
    ['DeleteObjectRequest', vss.DeleteObjectRequest.encode({ storeId: 's', keyValue: kv }).finish(), [0x0a, 0x12]],
    [
      'ListKeyVersionsRequest',
      vss.ListKeyVersionsRequest.encode({ storeId: 's', keyPrefix: 'p', pageSize: 3, pageToken: 't' }).finish(),
      [0x0a, 0x12, 0x18, 0x22],
    ],
    [
      'ListKeyVersionsResponse',
      vss.ListKeyVersionsResponse.encode({ keyVersions: [kv], nextPageToken: 't', globalVersion: version }).finish(),
      [0x0a, 0x12, 0x18],
    ],
    ['ErrorResponse', vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.CONFLICT_EXCEPTION, message: 'm' }).finish(), [0x08, 0x12]],
    ['KeyValue', vss.KeyValue.encode(kv).finish(), [0x0a, 0x10, 0x1a]],
    ['Storable', vss.Storable.encode({ data: new Uint8Array([1]), encryptionMetadata: { cipherFormat: 'c' } }).finish(), [0x0a, 0x12]],
    [
      'EncryptionMetadata',
      vss.EncryptionMetadata.encode({ cipherFormat: 'c', nonce: new Uint8Array([1]), tag: new Uint8Array([2]) }).finish(),
      [0x0a, 0x12, 0x1a],
    ],
    ['PlaintextBlob', vss.PlaintextBlob.encode({ value: new Uint8Array([1]), version }).finish(), [0x0a, 0x10]],
  ] as const)('%s', (_name, encoded, tags) => {
    expect(tagsOf(encoded)).toEqual(tags);
  });

  it('numbers ErrorCode as the reference', () => {
    expect({ ...vss.ErrorCode }).toMatchObject({
      UNKNOWN: 0,
      CONFLICT_EXCEPTION: 1,
      INVALID_REQUEST_EXCEPTION: 2,
      INTERNAL_SERVER_EXCEPTION: 3,
      NO_SUCH_KEY_EXCEPTION: 4,
      AUTH_EXCEPTION: 5,
    });
  });

  it('encodes a negative page_size as a 10-byte two\'s-complement varint, not zigzag', () => {
    expect(hex(vss.ListKeyVersionsRequest.encode({ pageSize: -1 }).finish())).toBe('18ffffffffffffffffff01');
    expect(hex(vss.ListKeyVersionsRequest.encode({ pageSize: -2 }).finish())).toBe('18feffffffffffffffff01');
    expect(vss.ListKeyVersionsRequest.decode(Buffer.from('18feffffffffffffffff01', 'hex')).pageSize).toBe(-2);
    // A present zero stays on the wire: 0 asks for no keys (only the global version), absent lets the server choose.
    expect(hex(vss.ListKeyVersionsRequest.encode({ pageSize: 0 }).finish())).toBe('1800');
  });

  it('omits non-optional fields at their default value, as prost does', () => {
    expect(hex(vss.KeyValue.encode(keyValue('', 0n)).finish())).toBe('');
    expect(hex(vss.GetObjectRequest.encode({ storeId: '', key: '' }).finish())).toBe('');
    expect(hex(vss.KeyValue.encode(keyValue('k', INT64_MIN)).finish())).toBe('0a016b1080808080808080808001');
    expect(hex(vss.KeyValue.encode(keyValue('k', INT64_MAX)).finish())).toBe('0a016b10ffffffffffffffff7f');
  });

  it('refuses a known field sent with the wrong wire type, as prost does', () => {
    // global_version (field 2, varint) sent length-delimited must not be skipped as unknown.
    expect(() => vss.PutObjectRequest.decode(Buffer.from('0a0173120130', 'hex'))).toThrow(/wire type/);
    expect(() => vss.KeyValue.decode(Buffer.from('0a016b1201ff', 'hex'))).toThrow(/wire type/);
  });
});

describe('countTopLevelFields', () => {
  const put = (items: number, deletes: number) =>
    vss.PutObjectRequest.encode({
      storeId: 's',
      globalVersion: bigIntToInt64(7n),
      transactionItems: Array.from({ length: items }, (_, i) => keyValue(`k${i}`, 0n, new Uint8Array([i]))),
      deleteItems: Array.from({ length: deletes }, (_, i) => keyValue(`d${i}`, 1n)),
    }).finish();

  it('counts the given top-level fields only (not fields of nested messages)', () => {
    // Every KeyValue holds its own fields 1 to 3; only the request's fields 3 and 4 count.
    expect(countTopLevelFields(put(5, 2), [3, 4], 100)).toBe(7);
    expect(countTopLevelFields(put(5, 2), [4], 100)).toBe(2);
    expect(countTopLevelFields(put(0, 0), [3, 4], 100)).toBe(0);
    expect(countTopLevelFields(new Uint8Array(0), [3, 4], 100)).toBe(0);
  });

  it('stops one past the limit, and reports malformed bytes as undefined', () => {
    expect(countTopLevelFields(put(10, 0), [3, 4], 3)).toBe(4);
    const body = put(2, 0);
    expect(countTopLevelFields(body.subarray(0, body.length - 1), [3, 4], 100)).toBeUndefined();
    expect(countTopLevelFields(Uint8Array.from([0x1a, 0x7f]), [3], 100)).toBeUndefined();
  });
});

describe('strictReader', () => {
  const body = (h: string) => Buffer.from(h, 'hex');

  it('refuses a varint with bits above 63, which protobufjs alone reads as a different int64', () => {
    // version = ten bytes whose last carries bit 70: the low 64 bits are -1 (an unconditional write).
    const junk = '0a016b10ffffffffffffffffff7f';
    expect(int64ToBigInt(vss.KeyValue.decode(body(junk)).version)).toBe(-1n);
    expect(() => vss.KeyValue.decode(strictReader(body(junk)))).toThrow('invalid varint encoding: more than 64 bits');
    // The same for page_size (an int32 read as a 64-bit varint) and the nested items of a put.
    expect(() => vss.ListKeyVersionsRequest.decode(strictReader(body('18ffffffffffffffffff03')))).toThrow(/more than 64 bits/);
    expect(() => vss.PutObjectRequest.decode(strictReader(body('1a0e0a016b10ffffffffffffffffff7f')))).toThrow(/more than 64 bits/);
  });

  it('refuses varints longer than 10 bytes, unknown fields included', () => {
    expect(() => vss.GetObjectRequest.decode(body('788180808080808080808000'))).not.toThrow();
    expect(() => vss.GetObjectRequest.decode(strictReader(body('788180808080808080808000')))).toThrow('invalid varint encoding: longer than 10 bytes');
    expect(() => vss.ListKeyVersionsRequest.decode(strictReader(body('188180808080808080808000')))).toThrow(/longer than 10 bytes/);
  });

  it('reads every valid varint as protobufjs does: extremes, 10-byte padding, values cut by the end', () => {
    for (const v of [INT64_MAX, INT64_MIN, -1n, 0n, 1n]) {
      expect(int64ToBigInt(vss.KeyValue.decode(strictReader(vss.KeyValue.encode(keyValue('k', v)).finish())).version)).toBe(v);
    }
    expect(int64ToBigInt(vss.KeyValue.decode(strictReader(body('10818080808080808080' + '00'))).version)).toBe(1n);
    expect(vss.ListKeyVersionsRequest.decode(strictReader(body('18feffffffffffffffff01'))).pageSize).toBe(-2);
    // Unknown fields of every wire type are still skipped, and truncation is still a RangeError.
    expect(vss.GetObjectRequest.decode(strictReader(body('0a016b78017901000000000000007a01007d000000007b7c'))).storeId).toBe('k');
    expect(() => vss.KeyValue.decode(strictReader(body('10ffff')))).toThrow(RangeError);
  });
});

describe('string fields are strict UTF-8, as prost reads them', () => {
  const body = (h: string) => Buffer.from(h, 'hex');
  const invalid = {
    'a lone continuation byte': 'ff',
    'an overlong encoding': 'c0af',
    'a UTF-8-encoded surrogate': 'eda080',
    'a sequence cut short': 'e282',
  };

  it.each(Object.entries(invalid))('refuses %s in every string field, nested ones included', (_what, bytes) => {
    const len = (bytes.length / 2).toString(16).padStart(2, '0');
    const field = (tag: string) => `${tag}${len}${bytes}`;
    // Through strictReader (the server and client path) and through a plain decode, Buffer or not.
    for (const reader of [(b: Uint8Array) => strictReader(b), (b: Uint8Array) => b, (b: Uint8Array) => new Uint8Array(b)]) {
      expect(() => vss.GetObjectRequest.decode(reader(body(field('0a'))))).toThrow(/utf-8/i);
      expect(() => vss.GetObjectRequest.decode(reader(body(field('12'))))).toThrow(/utf-8/i);
      expect(() => vss.ListKeyVersionsRequest.decode(reader(body(field('12'))))).toThrow(/utf-8/i);
      expect(() => vss.ListKeyVersionsRequest.decode(reader(body(field('22'))))).toThrow(/utf-8/i);
      expect(() => vss.ErrorResponse.decode(reader(body(field('12'))))).toThrow(/utf-8/i);
      // KeyValue.key inside PutObjectRequest.transaction_items.
      const item = `0a${len}${bytes}`;
      const itemLen = (item.length / 2).toString(16).padStart(2, '0');
      expect(() => vss.PutObjectRequest.decode(reader(body(`1a${itemLen}${item}`)))).toThrow(/utf-8/i);
    }
  });

  it('refuses invalid UTF-8 past the first 64 bytes of a string (where protobufjs switches decoders)', () => {
    const key = '61'.repeat(100) + 'ff';
    expect(() => vss.GetObjectRequest.decode(strictReader(body(`1265${key}`)))).toThrow(/utf-8/i);
  });

  it('keeps a leading byte order mark and every valid code point as sent', () => {
    expect(vss.GetObjectRequest.decode(strictReader(body('0a04efbbbf6b'))).storeId).toBe('\uFEFFk');
    const text = 'a\u00e9\u20ac\u{1F600}\u{10FFFF}';
    const encoded = vss.GetObjectRequest.encode({ key: text }).finish();
    expect(vss.GetObjectRequest.decode(strictReader(encoded)).key).toBe(text);
  });
});

describe('hasLoneSurrogate', () => {
  it('finds a surrogate without its partner, anywhere, and nothing in paired or plain text', () => {
    for (const text of ['', 'abc', '\u{1F600}', 'a\u{1F600}b\u{10FFFF}', '\uFFFD', '\uE000']) expect(hasLoneSurrogate(text), JSON.stringify(text)).toBe(false);
    for (const text of ['\uD83D', '\uDE00', 'a\uD83Db', '\uDE00\uD83D', '\uD83D\uD83D\uDE00', '\u{1F600}\uDFFF']) {
      expect(hasLoneSurrogate(text), JSON.stringify(text)).toBe(true);
    }
  });
});

describe('keyValueSizeBound', () => {
  it('bounds the encoded GetObjectResponse of a KeyValue, for every kind of key and the int64 extremes', () => {
    const keys = ['', 'k', 'x'.repeat(600), '\u00e9'.repeat(600), '\u20ac'.repeat(600), '\u{1F600}'.repeat(300), '\uD800'.repeat(600)];
    for (const key of keys) {
      for (const version of [0n, -1n, INT64_MIN, INT64_MAX]) {
        for (const size of [0, 1, 127, 128, 16_384, 2_097_152]) {
          const value = keyValue(key, version, new Uint8Array(size));
          const encoded = vss.GetObjectResponse.encode({ value }).finish();
          expect(encoded.length, `${key.length} units, ${version}, ${size} bytes`).toBeLessThanOrEqual(keyValueSizeBound(value));
        }
      }
    }
    expect(keyValueSizeBound(null)).toBeGreaterThanOrEqual(vss.GetObjectResponse.encode({ value: keyValue('', INT64_MIN) }).finish().length);
  });
});
