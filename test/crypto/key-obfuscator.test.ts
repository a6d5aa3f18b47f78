import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { base64nopad } from '@scure/base';
import { describe, expect, it } from 'vitest';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hexToBytes } from '@noble/hashes/utils.js';
import { deriveVssKeys, InvalidCryptoInputError, InvalidObfuscatedKeyError, KeyObfuscator } from '../../src/crypto/index.js';
import { saltedHmac, utf8Bytes } from '../../src/crypto/kdf.js';

const filled = (byte: number, n = 32) => new Uint8Array(n).fill(byte);

// Every character class the reference's randomized test draws from, plus multi-byte UTF-8.
const ODD_CHARSET = 'abcXYZ019_!@#,;:% *$^&()[]{}.\t\n\r/+=\\"\'~`é€😀';

function randomKey(maxLen: number): string {
  const chars = Array.from(ODD_CHARSET);
  const len = randomBytes(2).reduce((a, b) => a * 256 + b, 0) % (maxLen + 1);
  let out = '';
  for (const b of randomBytes(len)) out += chars[b % chars.length];
  return out;
}

describe('KeyObfuscator: upstream vectors', () => {
  it('obfuscates deterministically to the reference string', () => {
    const obfuscator = new KeyObfuscator(filled(42));
    const expected = 'cMoet5WTvl0nYds+VW7JPCtXUq24DtMG2dR9apAi/T5jy8eNIEyDrUAJBS4geeUuX+XGXPqlizIByOip2g';
    expect(obfuscator.obfuscate('a_semi_secret_key')).toBe(expected);
    expect(obfuscator.obfuscate('a_semi_secret_key')).toBe(expected);
    expect(obfuscator.deobfuscate(expected)).toBe('a_semi_secret_key');
  });

  it('reads keys written by vss-client v0.3.1 and still writes the same bytes', () => {
    const obfuscator = new KeyObfuscator(filled(0xab));
    const v031 = 'nxrixRQPGawY+a9JFLThii0RgeADtEdSjh2YDgpZhBKOuw6GKr5UAIIwsQCathJlZsmuSku+RGB1/JuxFUMQGoAwa+M8tg';
    expect(obfuscator.deobfuscate(v031)).toBe('my_storage_key_v031_compat');
    expect(obfuscator.obfuscate('my_storage_key_v031_compat')).toBe(v031);
  });

  it('has the reference output length ceil(4(len+44)/3)', () => {
    const obfuscator = new KeyObfuscator(filled(1));
    expect(obfuscator.obfuscate('')).toHaveLength(59);
    expect(obfuscator.obfuscate('#')).toHaveLength(60);
    for (const len of [2, 3, 17, 120, 380]) {
      expect(obfuscator.obfuscate('k'.repeat(len))).toHaveLength(Math.ceil((4 * (len + 44)) / 3));
    }
  });
});

/**
 * The reference obfuscation written out from the spec (§A4) given its two derived keys, so the
 * spec's intermediate values are checked against what KeyObfuscator derives internally.
 */
function obfuscateWith(obfuscationKey: Uint8Array, hashingKey: Uint8Array, key: string): string {
  const nonce = (material: Uint8Array) => new Uint8Array([0, 0, 0, 0, ...hmac(sha256, material, hashingKey).subarray(0, 8)]);
  const pt = utf8Bytes(key);
  const n1 = nonce(pt);
  const sealed = chacha20poly1305(obfuscationKey, n1).encrypt(pt);
  const wrapped = chacha20poly1305(obfuscationKey, nonce(sealed.subarray(0, pt.length))).encrypt(n1);
  return base64nopad.encode(new Uint8Array([...sealed, ...wrapped]));
}

describe('KeyObfuscator: spec intermediate keys', () => {
  const keys = ['a_semi_secret_key', '', '#', 'monitors#', 'vss_schema_version', 'é😀'];

  it('derives obfuscation_k and hashing_k of the spec for master [42; 32] (§A4)', () => {
    const obfuscator = new KeyObfuscator(filled(42));
    const obfuscationK = hexToBytes('15c02a6e680d0ae2c5668eb802226a8d9414352ba49f807b6c1048e62e615af6');
    const hashingK = hexToBytes('30f19911ae9c3e16661be18f72fd02f3e327201fe6f2bb73c792212faff801ef');
    expect(obfuscateWith(obfuscationK, hashingK, 'a_semi_secret_key')).toBe(
      'cMoet5WTvl0nYds+VW7JPCtXUq24DtMG2dR9apAi/T5jy8eNIEyDrUAJBS4geeUuX+XGXPqlizIByOip2g',
    );
    for (const key of keys) expect(obfuscator.obfuscate(key), key).toBe(obfuscateWith(obfuscationK, hashingK, key));
  });

  it('derives obfuscation_k and hashing_k of the spec for seed 0x00..0x3f (§B3)', () => {
    const seed = Uint8Array.from({ length: 64 }, (_, i) => i);
    const obfuscator = new KeyObfuscator(deriveVssKeys(seed).obfuscationMasterKey);
    const obfuscationK = hexToBytes('bc6b591c3c3b34953d7055cce1369120c3d4f27d3e826af873eb0aa820df8a9f');
    const hashingK = hexToBytes('902230e8384e2e5aa3fd80bf20d8e2ff01c3a0b982b394c777423cf47acf2e24');
    expect(obfuscateWith(obfuscationK, hashingK, 'manager')).toBe('Vl6GlKf1fo6OxqCoqWahsOd/66y9GcMpNBEnlmtlr3+aw553TsZrSGYw2wdFsLbkbFIW');
    for (const key of keys) expect(obfuscator.obfuscate(key), key).toBe(obfuscateWith(obfuscationK, hashingK, key));
  });
});

describe('KeyObfuscator: round trips', () => {
  it('round-trips random keys with every odd character under random master keys', () => {
    for (let round = 0; round < 300; round++) {
      const obfuscator = new KeyObfuscator(randomBytes(32));
      const key = randomKey(127);
      const obfuscated = obfuscator.obfuscate(key);
      expect(obfuscated, `key ${JSON.stringify(key)}`).toMatch(/^[A-Za-z0-9+/]*$/);
      expect(obfuscator.deobfuscate(obfuscated), `key ${JSON.stringify(key)}`).toBe(key);
    }
  });

  it('round-trips the empty key and long keys', () => {
    const obfuscator = new KeyObfuscator(randomBytes(32));
    for (const key of ['', 'x'.repeat(120), randomKey(10_000), '#'.repeat(5000)]) {
      expect(obfuscator.deobfuscate(obfuscator.obfuscate(key))).toBe(key);
    }
  });

  it('keeps a leading U+FEFF: a key starting with a byte-order mark reads back as itself', () => {
    // The reference returns the decrypted UTF-8 bytes verbatim (String::from_utf8). A decoder
    // that swallows a leading BOM would list "\uFEFFk" as "k", a key that does not exist.
    const obfuscator = new KeyObfuscator(filled(42));
    for (const key of ['\uFEFFmanager', '\uFEFF', '\uFEFF\uFEFFx', 'a\uFEFF']) {
      expect(obfuscator.deobfuscate(obfuscator.obfuscate(key)), JSON.stringify(key)).toBe(key);
    }
    expect(new KeyObfuscator(filled(1)).obfuscate('\uFEFFk')).not.toBe(new KeyObfuscator(filled(1)).obfuscate('k'));
  });

  it('maps different keys to different strings and different masters to different strings', () => {
    const a = new KeyObfuscator(filled(1));
    const b = new KeyObfuscator(filled(2));
    expect(a.obfuscate('k1')).not.toBe(a.obfuscate('k2'));
    expect(a.obfuscate('k1')).not.toBe(b.obfuscate('k1'));
  });

  it('refuses a key with a lone surrogate rather than merging it with other keys', () => {
    const obfuscator = new KeyObfuscator(filled(42));
    const halfEmoji = '😀'.slice(0, 1); // what `label.slice(0, n)` leaves when it cuts an emoji
    for (const key of [`label${halfEmoji}`, `label${'😁'.slice(0, 1)}`, '\uDC00', 'a\uDFFFb']) {
      expect(() => obfuscator.obfuscate(key), JSON.stringify(key)).toThrow(InvalidCryptoInputError);
    }
    // Whole pairs and U+FFFD itself are ordinary keys that round-trip.
    for (const key of ['😀', 'label\uFFFD', 'a😀b']) expect(obfuscator.deobfuscate(obfuscator.obfuscate(key))).toBe(key);
  });

  it('rejects a master key that is not 32 bytes', () => {
    expect(() => new KeyObfuscator(filled(1, 31))).toThrow(/32 bytes/);
  });
});

describe('KeyObfuscator: bad input gives typed errors', () => {
  const obfuscator = new KeyObfuscator(filled(42));
  const good = obfuscator.obfuscate('a_semi_secret_key');

  function reasonOf(input: string, using = obfuscator): string {
    try {
      using.deobfuscate(input);
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidObfuscatedKeyError);
      return (error as InvalidObfuscatedKeyError).reason;
    }
    throw new Error(`deobfuscate(${JSON.stringify(input)}) unexpectedly succeeded`);
  }

  it('rejects malformed base64', () => {
    expect(reasonOf('not base64!')).toBe('base64');
    expect(reasonOf(good + '=')).toBe('base64');
    expect(reasonOf(good.replace(/\+/g, '-'))).toBe('base64'); // url-safe alphabet is not accepted
  });

  it('rejects inputs shorter than the 44-byte overhead', () => {
    expect(reasonOf('')).toBe('length');
    expect(reasonOf(base64nopad.encode(new Uint8Array(43)))).toBe('length');
  });

  it('rejects a tampered ciphertext, tag, wrapped nonce and a wrong master key', () => {
    const bytes = base64nopad.decode(good);
    const flip = (index: number) => {
      const copy = bytes.slice();
      copy[index] ^= 1;
      return base64nopad.encode(copy);
    };
    const ctLen = bytes.length - 44;
    // The wrapped nonce is bound to the ciphertext, so a changed ciphertext fails there first.
    expect(reasonOf(flip(0))).toBe('nonce-tag');
    expect(reasonOf(flip(ctLen))).toBe('key-tag'); // tag1
    expect(reasonOf(flip(ctLen + 16))).toBe('nonce-tag'); // wrapped nonce
    expect(reasonOf(flip(bytes.length - 1))).toBe('nonce-tag'); // tag2
    expect(reasonOf(good, new KeyObfuscator(filled(43)))).toBe('nonce-tag');
    expect(reasonOf(base64nopad.encode(new Uint8Array(60)))).toBe('nonce-tag');
  });

  it('rejects an authentic key whose plaintext is not UTF-8', () => {
    // Build the reference layout by hand around invalid UTF-8, with the same key schedule.
    const master = filled(42);
    const prk = saltedHmac(master, utf8Bytes('pseudo_random_key'));
    const encKey = saltedHmac(prk, utf8Bytes('obfuscation_key'));
    const hashKey = saltedHmac(prk, new Uint8Array([...encKey, ...utf8Bytes('hashing_key')]));
    const nonceFor = (m: Uint8Array) => new Uint8Array([0, 0, 0, 0, ...saltedHmac(hashKey, m).subarray(0, 8)]);
    const plaintext = new Uint8Array([0xff, 0xfe, 0x80]);
    const n1 = nonceFor(plaintext);
    const sealed = chacha20poly1305(encKey, n1).encrypt(plaintext);
    const wrapped = chacha20poly1305(encKey, nonceFor(sealed.subarray(0, 3))).encrypt(n1);
    expect(reasonOf(base64nopad.encode(new Uint8Array([...sealed, ...wrapped])))).toBe('utf8');
  });
});
