import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { bytesToHex, hexToBytes, randomBytes } from '@noble/hashes/utils.js';
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  decryptStorable,
  encryptStorable,
  InvalidCryptoInputError,
  STORABLE_CIPHER_FORMAT,
  StorableDecryptionError,
} from '../../src/crypto/index.js';
import { INT64_MAX, INT64_MIN, vss } from '../../src/protocol/index.js';

const utf8 = (s: string) => new TextEncoder().encode(s);
const counting = (n: number) => Uint8Array.from({ length: n }, (_, i) => i % 256);
const DATA_KEY = counting(32);

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(StorableDecryptionError);
    return (error as StorableDecryptionError).reason;
  }
  throw new Error('expected a StorableDecryptionError');
}

describe('Storable: upstream and derived vectors', () => {
  it('decrypts the v0.3.1 storable (zero-prefixed nonce, empty AAD)', () => {
    const storable = hexToBytes(
      '0a1d3219e9fb45d742f56c401b7413e7ae07fd81e1433af2863ce88f01f86c12320a104368614368613230506f6c7931333035120c0000000000010203040506071a1087163502261e30ec7cf14b7970a24116',
    );
    const { value, version } = decryptStorable(storable, DATA_KEY);
    expect(new TextDecoder().decode(value)).toBe('backward_compat_test_data');
    expect(version).toBe(42n);
    // Rebuilding with the same nonce reproduces all 83 bytes.
    const nonce = hexToBytes('000000000001020304050607');
    expect(bytesToHex(encryptStorable(value, 42n, DATA_KEY, { randomBytes: () => nonce }))).toBe(bytesToHex(storable));
  });

  it('encrypts exactly like the current reference (12-byte nonce, AAD)', () => {
    const opts = { aad: utf8('A'), randomBytes: counting };
    expect(bytesToHex(encryptStorable(utf8('secret'), 8n, DATA_KEY, opts))).toBe(
      '0a0a83fd7b654a65c034a78b12320a104368614368613230506f6c7931333035120c000102030405060708090a0b1a109d490652b147dfea2ac2f4a761e881a2',
    );
    expect(bytesToHex(encryptStorable(utf8('secret_a'), 8n, DATA_KEY, opts))).toBe(
      '0a0c83f37b654a65c034e8e22ffb12320a104368614368613230506f6c7931333035120c000102030405060708090a0b1a1045c5e0b28b6a34e5e0b7bbd9fb3f1ddf',
    );
  });

  it('opens the derived vectors with AAD "A" and refuses them with AAD "B" (upstream encrypt_decrypt, key mismatch)', () => {
    for (const [hex, plaintext] of [
      ['0a0a83fd7b654a65c034a78b12320a104368614368613230506f6c7931333035120c000102030405060708090a0b1a109d490652b147dfea2ac2f4a761e881a2', 'secret'],
      ['0a0c83f37b654a65c034e8e22ffb12320a104368614368613230506f6c7931333035120c000102030405060708090a0b1a1045c5e0b28b6a34e5e0b7bbd9fb3f1ddf', 'secret_a'],
    ] as const) {
      const { value, version } = decryptStorable(hexToBytes(hex), DATA_KEY, utf8('A'));
      expect(new TextDecoder().decode(value)).toBe(plaintext);
      expect(version).toBe(8n);
      expect(reasonOf(() => decryptStorable(hexToBytes(hex), DATA_KEY, utf8('B')))).toBe('tag');
    }
  });

  it('builds the LDK Node schema-version storable byte for byte', () => {
    const schemaKey =
      'zAFWxEyRX5by7HK/cWKE1BNnGT3uYb0mo26LYuK7AvrIxdzgx0hugSW1+6pD#VTPFTAJaU/exWkbWSsfSGZP2KebniIRaXoZSRE0u0+RNMgLe4ygCFsy9cJE+8EioW06pDSl67QiwUiK0Pug';
    const dataKey = hexToBytes('06a3a00e784168944b91340ef9c420c749e76b2701637b9b80bb913ae754e999');
    const storable = encryptStorable(new Uint8Array([1, 0]), -1n, dataKey, {
      aad: utf8(schemaKey),
      randomBytes: (n) => new Uint8Array(n),
    });
    expect(bytesToHex(storable)).toBe(
      '0a0ff1035ce5e31f437475c51c0f4b18c312320a104368614368613230506f6c7931333035120c0000000000000000000000001a100351a1501f7890b0de9ce9e05726dbdd',
    );
    expect(decryptStorable(storable, dataKey, utf8(schemaKey))).toEqual({ value: new Uint8Array([1, 0]), version: -1n });
  });

  it('stores the reference metadata: cipher name, 12-byte nonce, 16-byte tag outside the data', () => {
    const value = utf8('hello');
    const message = vss.Storable.decode(encryptStorable(value, 1n, DATA_KEY));
    expect(message.encryptionMetadata?.cipherFormat).toBe(STORABLE_CIPHER_FORMAT);
    expect(message.encryptionMetadata?.nonce).toHaveLength(12);
    expect(message.encryptionMetadata?.tag).toHaveLength(16);
    // PlaintextBlob{value:"hello", version:1} is 9 bytes; the data carries no tag.
    expect(message.data).toHaveLength(9);
  });
});

describe('Storable: round trips', () => {
  it('round-trips values from 0 bytes to 1 MiB with random keys and AADs', () => {
    for (const size of [0, 1, 63, 64, 1024, 65_536, 1 << 20]) {
      const key = randomBytes(32);
      const aad = randomBytes(size % 97);
      const value = new Uint8Array(nodeRandomBytes(size));
      const decrypted = decryptStorable(encryptStorable(value, BigInt(size), key, { aad }), key, aad);
      expect(decrypted.version).toBe(BigInt(size));
      expect(bytesToHex(decrypted.value)).toBe(bytesToHex(value));
    }
  });

  it('encodes an empty value at version 0 as prost does: no data field at all', () => {
    const storable = encryptStorable(new Uint8Array(0), 0n, DATA_KEY, { randomBytes: counting });
    // PlaintextBlob{} is zero bytes, so the ciphertext is empty and the data field is omitted.
    expect(bytesToHex(storable).startsWith('12320a10' + bytesToHex(utf8(STORABLE_CIPHER_FORMAT)))).toBe(true);
    expect(storable).toHaveLength(52);
    expect(decryptStorable(storable, DATA_KEY)).toEqual({ value: new Uint8Array(0), version: 0n });
  });

  it('round-trips every int64 version', () => {
    for (const version of [INT64_MIN, -1n, 0n, 1n, 2n ** 53n + 1n, INT64_MAX]) {
      expect(decryptStorable(encryptStorable(utf8('v'), version, DATA_KEY), DATA_KEY).version).toBe(version);
    }
  });

  it('uses a fresh random nonce for every value', () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const meta = vss.Storable.decode(encryptStorable(utf8('same'), 0n, DATA_KEY)).encryptionMetadata;
      nonces.add(bytesToHex(meta!.nonce!));
    }
    expect(nonces.size).toBe(200);
  });

  it('refuses a value or AAD that is not bytes instead of storing or reporting something else', () => {
    // protobufjs takes a string for a bytes field as base64 and would store its decoding:
    // "aGVsbG8" would come back as "hello", with no error anywhere.
    expect(() => encryptStorable('aGVsbG8' as unknown as Uint8Array, 0n, DATA_KEY)).toThrow(InvalidCryptoInputError);
    expect(() => encryptStorable([1, 2] as unknown as Uint8Array, 0n, DATA_KEY)).toThrow(InvalidCryptoInputError);
    expect(() => encryptStorable(utf8('x'), 0n, DATA_KEY, { aad: 'k' as unknown as Uint8Array })).toThrow(InvalidCryptoInputError);
    // A mistyped AAD is a caller's bug, not a failed authentication (which reads as tampering).
    const sealed = encryptStorable(utf8('x'), 0n, DATA_KEY, { aad: utf8('k') });
    expect(() => decryptStorable(sealed, DATA_KEY, 'k' as unknown as Uint8Array)).toThrow(InvalidCryptoInputError);
  });

  it('rejects a data key that is not 32 bytes and a nonce source of the wrong size', () => {
    expect(() => encryptStorable(utf8('x'), 0n, counting(16))).toThrow(InvalidCryptoInputError);
    expect(() => encryptStorable(utf8('x'), 0n, DATA_KEY, { randomBytes: () => new Uint8Array(8) })).toThrow(InvalidCryptoInputError);
    expect(() => decryptStorable(new Uint8Array(), counting(33))).toThrow(InvalidCryptoInputError);
  });
});

describe('Storable: bad input gives typed errors, never plaintext', () => {
  const aad = utf8('store key');
  const good = encryptStorable(utf8('the channel state'), 7n, DATA_KEY, { aad });
  const goodMessage = vss.Storable.decode(good);
  const rebuild = (edit: (m: vss.IStorable) => void) => {
    const copy: vss.IStorable = {
      data: goodMessage.data,
      encryptionMetadata: { ...goodMessage.encryptionMetadata },
    };
    edit(copy);
    return vss.Storable.encode(copy).finish();
  };

  it('rejects a wrong key and a wrong AAD (including the V0 empty AAD)', () => {
    expect(reasonOf(() => decryptStorable(good, counting(32).reverse(), aad))).toBe('tag');
    expect(reasonOf(() => decryptStorable(good, DATA_KEY, utf8('other key')))).toBe('tag');
    expect(reasonOf(() => decryptStorable(good, DATA_KEY))).toBe('tag');
    const withB = encryptStorable(utf8('secret'), 8n, DATA_KEY, { aad: utf8('B') });
    expect(reasonOf(() => decryptStorable(withB, DATA_KEY, utf8('A')))).toBe('tag');
  });

  it('rejects tampered ciphertext, nonce and tag', () => {
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.data = goodMessage.data.map((b, i) => (i === 0 ? b ^ 1 : b)))), DATA_KEY, aad))).toBe('tag');
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.encryptionMetadata!.nonce = new Uint8Array(12))), DATA_KEY, aad))).toBe('tag');
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.encryptionMetadata!.tag = new Uint8Array(16))), DATA_KEY, aad))).toBe('tag');
  });

  it('rejects missing metadata and wrong nonce or tag sizes', () => {
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.encryptionMetadata = null)), DATA_KEY, aad))).toBe('metadata');
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.encryptionMetadata!.nonce = new Uint8Array(8))), DATA_KEY, aad))).toBe('metadata');
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.encryptionMetadata!.tag = new Uint8Array(15))), DATA_KEY, aad))).toBe('metadata');
    expect(reasonOf(() => decryptStorable(rebuild((m) => (m.encryptionMetadata!.tag = null)), DATA_KEY, aad))).toBe('metadata');
    expect(reasonOf(() => decryptStorable(new Uint8Array(0), DATA_KEY))).toBe('metadata');
  });

  it('rejects truncated storables', () => {
    for (let cut = 1; cut < good.length; cut++) {
      const reason = reasonOf(() => decryptStorable(good.subarray(0, good.length - cut), DATA_KEY, aad));
      expect(['decode', 'metadata', 'tag']).toContain(reason);
    }
  });

  it('rejects bytes that are not a protobuf Storable at all', () => {
    expect(reasonOf(() => decryptStorable(utf8('{"json":true}'), DATA_KEY))).toBe('decode');
  });

  it('rejects authentic ciphertext whose plaintext is not a PlaintextBlob', () => {
    const nonce = randomBytes(12);
    const sealed = chacha20poly1305(DATA_KEY, nonce).encrypt(new Uint8Array([0xff, 0xff, 0xff]));
    const storable = vss.Storable.encode({
      data: sealed.subarray(0, 3),
      encryptionMetadata: { cipherFormat: STORABLE_CIPHER_FORMAT, nonce, tag: sealed.subarray(3) },
    }).finish();
    expect(reasonOf(() => decryptStorable(storable, DATA_KEY))).toBe('blob');
  });

  it('ignores unknown fields in the Storable and its metadata, like prost', () => {
    const extra = (bytes: Uint8Array) => new Uint8Array([...bytes, 0x22, 0x02, 0xbe, 0xef, 0x28, 0x07]);
    const meta = vss.EncryptionMetadata.encode(goodMessage.encryptionMetadata!).finish();
    const withExtras = new Uint8Array([
      ...extra(vss.Storable.encode({ data: goodMessage.data }).finish()),
      0x12, meta.length + 6, ...extra(meta),
    ]);
    expect(new TextDecoder().decode(decryptStorable(withExtras, DATA_KEY, aad).value)).toBe('the channel state');
  });

  it('ignores cipher_format on read, like the reference', () => {
    const renamed = rebuild((m) => (m.encryptionMetadata!.cipherFormat = 'something else'));
    expect(new TextDecoder().decode(decryptStorable(renamed, DATA_KEY, aad).value)).toBe('the channel state');
  });
});
