import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { describe, expect, it } from 'vitest';
import {
  decryptStorable,
  encryptStorable,
  InvalidCryptoInputError,
  STORABLE_CIPHER_FORMAT,
  StorableDecryptionError,
} from '../../src/crypto/index.js';
import { vss } from '../../src/protocol/index.js';

// A Storable comes back from an untrusted server. It is read as the reference client (prost)
// reads it: what prost refuses is refused here with a typed error naming the problem, and what
// prost accepts (unknown fields, repeated fields, non-minimal varints of up to 10 bytes) opens.

const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const DATA_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const NONCE = Uint8Array.from({ length: 12 }, (_, i) => 100 + i);
const AAD = utf8('store key');
const good = encryptStorable(utf8('channel state'), 5n, DATA_KEY, { aad: AAD, randomBytes: () => NONCE });
const goodMessage = vss.Storable.decode(good);
const metadataBytes = vss.EncryptionMetadata.encode(goodMessage.encryptionMetadata!).finish();
const dataField = [0x0a, goodMessage.data.length, ...goodMessage.data];
const metadataField = (bytes: ArrayLike<number>) => [0x12, bytes.length, ...Array.from(bytes)];

function decodeError(bytes: ArrayLike<number>, reason: 'decode' | 'blob' = 'decode', key = DATA_KEY, aad = AAD): StorableDecryptionError {
  try {
    decryptStorable(Uint8Array.from(bytes), key, aad);
  } catch (error) {
    expect(error).toBeInstanceOf(StorableDecryptionError);
    expect((error as StorableDecryptionError).reason).toBe(reason);
    return error as StorableDecryptionError;
  }
  throw new Error('expected a StorableDecryptionError');
}

/** An authentic Storable around arbitrary PlaintextBlob bytes. */
function sealedBlob(blob: Uint8Array): Uint8Array {
  const sealed = chacha20poly1305(DATA_KEY, NONCE, AAD).encrypt(blob);
  return vss.Storable.encode({
    data: sealed.subarray(0, blob.length),
    encryptionMetadata: { cipherFormat: STORABLE_CIPHER_FORMAT, nonce: NONCE, tag: sealed.subarray(blob.length) },
  }).finish();
}

describe('decryptStorable reads the envelope as prost does', () => {
  it('refuses a varint longer than 10 bytes or wider than 64 bits, in the Storable or its metadata, naming it', () => {
    const tooLong = [0x28, ...new Array(10).fill(0x80), 0x00]; // unknown field 5, an 11-byte varint
    const tooWide = [0x28, ...new Array(9).fill(0xff), 0x7f]; // 10 bytes, the last carrying bits past 63
    for (const varint of [tooLong, tooWide]) {
      const top = decodeError([...good, ...varint]);
      expect(top.message).toMatch(/^value is not a serialized Storable: invalid varint encoding: (longer than 10 bytes|more than 64 bits) \(stopped at byte \d+ of \d+\)$/);
      const nested = decodeError([...dataField, ...metadataField([...metadataBytes, ...varint])]);
      expect(nested.message).toMatch(/invalid varint encoding/);
    }
  });

  it('refuses the same inside the ciphertext: an authentic PlaintextBlob whose version varint overflows', () => {
    // version field (2, varint) holding ten bytes whose last carries bit 64 and up: prost refuses
    // it, a lenient reader drops those bits and reports some other version.
    const blob = Uint8Array.from([0x0a, 0x01, 0x41, 0x10, ...new Array(9).fill(0xff), 0x03]);
    const error = decodeError(sealedBlob(blob), 'blob');
    expect(error.message).toMatch(/^decrypted Storable is not a PlaintextBlob: invalid varint encoding: more than 64 bits \(stopped at byte 4 of 14\)$/);
  });

  it('names every other malformation prost refuses', () => {
    const cases: [string, number[], RegExp][] = [
      ['data cut short', [0x0a, 0x20, 1, 2, 3], /index out of range/],
      ['a varint cut short', [...good, 0x28, 0x80], /index out of range/],
      ['data sent as a varint', [0x08, 0x01, ...metadataField(metadataBytes)], /invalid wire type 0 for field 1/],
      ['metadata sent as fixed32', [...dataField, 0x15, 1, 2, 3, 4], /invalid wire type 5 for field 2/],
      ['field number 0', [...good, 0x00, 0x01], /field number 0/],
      ['an end-group without its start', [...good, 0x2c], /invalid wire type 4/],
      ['wire type 6', [...good, 0x2e], /invalid wire type 6/],
      ['wire type 7', [...good, 0x2f], /invalid wire type 7/],
      ['a group closed by another field', [...good, 0x2b, 0x34], /end group/],
      ['cipher_format that is not UTF-8', [...dataField, ...metadataField([0x0a, 0x02, 0xc3, 0x28, ...metadataBytes])], /utf-?8/i],
      ['metadata longer than the Storable', [...dataField, 0x12, 0x7f, ...metadataBytes], /index out of range/],
    ];
    for (const [what, bytes, finding] of cases) {
      const error = decodeError(bytes);
      expect(error.message, what).toMatch(finding);
      expect(error.message, what).toMatch(/\(stopped at byte \d+ of \d+\)$/);
    }
  });

  it('still opens what prost accepts: unknown fields, groups, maximal and non-minimal varints, repeated fields', () => {
    const open = (bytes: ArrayLike<number>) => text(decryptStorable(Uint8Array.from(bytes), DATA_KEY, AAD).value);
    // An unknown varint of exactly 10 bytes whose last byte carries bit 63 only.
    expect(open([...good, 0x28, ...new Array(9).fill(0xff), 0x01])).toBe('channel state');
    // A zero written in 10 bytes (non-minimal, as prost allows), and an unknown group.
    expect(open([...good, 0x28, ...new Array(9).fill(0x80), 0x00, 0x33, 0x38, 0x01, 0x34])).toBe('channel state');
    // A repeated data field: the last one counts. Repeated metadata merges field by field.
    expect(open([0x0a, 0x03, 1, 2, 3, ...good])).toBe('channel state');
    const [nonceOnly, rest] = [vss.EncryptionMetadata.encode({ nonce: NONCE }).finish(), vss.EncryptionMetadata.encode({ ...goodMessage.encryptionMetadata!, nonce: undefined }).finish()];
    expect(open([...dataField, ...metadataField(rest), ...metadataField(nonceOnly)])).toBe('channel state');
    // An authentic blob with a non-minimal version varint (prost reads 5 from it).
    const blob = Uint8Array.from([0x0a, 0x01, 0x41, 0x10, 0x85, 0x80, 0x80, 0x00]);
    expect(decryptStorable(sealedBlob(blob), DATA_KEY, AAD)).toEqual({ value: utf8('A'), version: 5n });
  });

  it('still opens the reference client\'s storables (spec vectors)', () => {
    const v031 = hexToBytes(
      '0a1d3219e9fb45d742f56c401b7413e7ae07fd81e1433af2863ce88f01f86c12320a104368614368613230506f6c7931333035120c0000000000010203040506071a1087163502261e30ec7cf14b7970a24116',
    );
    expect(decryptStorable(v031, DATA_KEY)).toEqual({ value: utf8('backward_compat_test_data'), version: 42n });
    const current = hexToBytes(
      '0a0a83fd7b654a65c034a78b12320a104368614368613230506f6c7931333035120c000102030405060708090a0b1a109d490652b147dfea2ac2f4a761e881a2',
    );
    expect(decryptStorable(current, DATA_KEY, utf8('A'))).toEqual({ value: utf8('secret'), version: 8n });
    const schemaKey =
      'zAFWxEyRX5by7HK/cWKE1BNnGT3uYb0mo26LYuK7AvrIxdzgx0hugSW1+6pD#VTPFTAJaU/exWkbWSsfSGZP2KebniIRaXoZSRE0u0+RNMgLe4ygCFsy9cJE+8EioW06pDSl67QiwUiK0Pug';
    const schema = hexToBytes(
      '0a0ff1035ce5e31f437475c51c0f4b18c312320a104368614368613230506f6c7931333035120c0000000000000000000000001a100351a1501f7890b0de9ce9e05726dbdd',
    );
    const schemaDataKey = hexToBytes('06a3a00e784168944b91340ef9c420c749e76b2701637b9b80bb913ae754e999');
    expect(decryptStorable(schema, schemaDataKey, utf8(schemaKey))).toEqual({ value: new Uint8Array([1, 0]), version: -1n });
    // Negative versions are 10-byte varints: the whole int64 range still round-trips.
    for (const version of [-1n, -(1n << 63n), (1n << 63n) - 1n]) {
      expect(decryptStorable(encryptStorable(utf8('v'), version, DATA_KEY), DATA_KEY).version).toBe(version);
    }
  });

  it('refuses a storable that is not bytes as a caller mistake, not as a hostile value', () => {
    for (const notBytes of ['0a0a83fd', null, [10, 1, 2], new ArrayBuffer(8)]) {
      expect(() => decryptStorable(notBytes as unknown as Uint8Array, DATA_KEY), String(notBytes)).toThrow(InvalidCryptoInputError);
    }
  });
});

describe('encryptStorable refuses a version it cannot seal as given', () => {
  it('refuses a version outside int64 or not a bigint with a typed error, rather than a RangeError or a truncated version', () => {
    for (const [version, shown] of [
      [1n << 63n, '9223372036854775808'],
      [-(1n << 63n) - 1n, '-9223372036854775809'],
      [1.5, 'the number 1.5'],
      [7, 'the number 7'],
      ['7', 'string'],
      [null, 'null'],
    ] as const) {
      const seal = () => encryptStorable(utf8('v'), version as unknown as bigint, DATA_KEY);
      expect(seal, String(version)).toThrow(InvalidCryptoInputError);
      expect(seal, String(version)).toThrow(`version to seal must be a bigint from -2^63 to 2^63-1, got ${shown}`);
    }
  });
});
