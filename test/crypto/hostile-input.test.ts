import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { base64nopad } from '@scure/base';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { describe, expect, it } from 'vitest';
import {
  decryptStorable,
  encryptStorable,
  InvalidObfuscatedKeyError,
  KeyObfuscator,
  StorableDecryptionError,
} from '../../src/crypto/index.js';
import { saltedHmac, utf8Bytes } from '../../src/crypto/kdf.js';
import { vss } from '../../src/protocol/index.js';

// A VSS server is untrusted: everything it returns (listed keys, stored values) may be hostile.
// These tests feed decryptStorable and KeyObfuscator.deobfuscate such data and require a typed
// error that says what was wrong, bounded in size and free of secrets.

const filled = (byte: number, n = 32) => new Uint8Array(n).fill(byte);
const DATA_KEY = filled(0x5a);
const MASTER = filled(42);

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error');
}

function storableError(fn: () => unknown): StorableDecryptionError {
  const error = thrown(fn);
  expect(error).toBeInstanceOf(StorableDecryptionError);
  return error as StorableDecryptionError;
}

function keyError(input: unknown, obfuscator = new KeyObfuscator(MASTER)): InvalidObfuscatedKeyError {
  const error = thrown(() => obfuscator.deobfuscate(input as string));
  expect(error).toBeInstanceOf(InvalidObfuscatedKeyError);
  return error as InvalidObfuscatedKeyError;
}

/** An authentic obfuscated key around arbitrary plaintext bytes, built with the reference schedule (spec §A4). */
function authenticObfuscated(plaintext: Uint8Array, master = MASTER): string {
  const prk = saltedHmac(master, utf8Bytes('pseudo_random_key'));
  const encKey = saltedHmac(prk, utf8Bytes('obfuscation_key'));
  const hashKey = saltedHmac(prk, new Uint8Array([...encKey, ...utf8Bytes('hashing_key')]));
  const nonceFor = (m: Uint8Array) => new Uint8Array([0, 0, 0, 0, ...saltedHmac(hashKey, m).subarray(0, 8)]);
  const n1 = nonceFor(plaintext);
  const sealed = chacha20poly1305(encKey, n1).encrypt(plaintext);
  const wrapped = chacha20poly1305(encKey, nonceFor(sealed.subarray(0, plaintext.length))).encrypt(n1);
  return base64nopad.encode(new Uint8Array([...sealed, ...wrapped]));
}

describe('decryptStorable on hostile server data', () => {
  const good = encryptStorable(utf8Bytes('channel state'), 3n, DATA_KEY, { aad: utf8Bytes('k') });
  const message = vss.Storable.decode(good);

  it('refuses a declared length far beyond the bytes, top-level or nested, as not a Storable', () => {
    // 0xffffffff as a varint: a decoder that trusted it would try to allocate 4 GiB.
    const huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
    expect(storableError(() => decryptStorable(new Uint8Array([0x0a, ...huge, 1, 2]), DATA_KEY)).reason).toBe('decode');
    expect(storableError(() => decryptStorable(new Uint8Array([0x12, ...huge, 0x12, 0x0c]), DATA_KEY)).reason).toBe('decode');
    // A nonce length inside the metadata that runs past the metadata's own end.
    expect(storableError(() => decryptStorable(new Uint8Array([0x12, 0x02, 0x12, 0x0c, ...new Uint8Array(12)]), DATA_KEY)).reason).toBe('decode');
  });

  it('names an unknown cipher_format when the value fails authentication', () => {
    const foreign = vss.Storable.encode({
      data: message.data,
      encryptionMetadata: { ...message.encryptionMetadata, cipherFormat: 'AES256GCM', tag: filled(1, 16) },
    }).finish();
    const error = storableError(() => decryptStorable(foreign, DATA_KEY, utf8Bytes('k')));
    expect(error.reason).toBe('tag');
    expect(error.message).toContain('"AES256GCM"');
    // A hostile format name is quoted in bounded form only.
    const long = vss.Storable.encode({
      data: message.data,
      encryptionMetadata: { ...message.encryptionMetadata, cipherFormat: 'X'.repeat(100_000), tag: filled(1, 16) },
    }).finish();
    expect(storableError(() => decryptStorable(long, DATA_KEY, utf8Bytes('k'))).message.length).toBeLessThan(300);
    // The reference name is not mentioned: there the failure is about the key, AAD or bytes.
    const tampered = vss.Storable.encode({ data: message.data, encryptionMetadata: { ...message.encryptionMetadata, tag: filled(1, 16) } }).finish();
    expect(storableError(() => decryptStorable(tampered, DATA_KEY, utf8Bytes('k'))).message).not.toContain('cipher_format');
  });

  it('opens a zero-length value and a v0.3.1 zero-prefixed nonce, and refuses either once tampered', () => {
    const empty = encryptStorable(new Uint8Array(0), 0n, DATA_KEY, { randomBytes: (n) => new Uint8Array(n) });
    expect(decryptStorable(empty, DATA_KEY)).toEqual({ value: new Uint8Array(0), version: 0n });
    const emptyMessage = vss.Storable.decode(empty);
    const emptyForged = vss.Storable.encode({ encryptionMetadata: { ...emptyMessage.encryptionMetadata, tag: filled(0, 16) } }).finish();
    expect(storableError(() => decryptStorable(emptyForged, DATA_KEY)).reason).toBe('tag');

    const v031 = hexToBytes(
      '0a1d3219e9fb45d742f56c401b7413e7ae07fd81e1433af2863ce88f01f86c12320a104368614368613230506f6c7931333035120c0000000000010203040506071a1087163502261e30ec7cf14b7970a24116',
    );
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    expect(new TextDecoder().decode(decryptStorable(v031, key).value)).toBe('backward_compat_test_data');
    // Every single-bit change is refused with a typed error, except in the cipher_format field,
    // which is neither authenticated nor checked (as in the reference) and still opens to the
    // original value. No change yields any other (or partial) plaintext.
    let opened = 0;
    for (let i = 0; i < v031.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const copy = v031.slice();
        copy[i] ^= 1 << bit;
        let result: ReturnType<typeof decryptStorable>;
        try {
          result = decryptStorable(copy, key);
        } catch (error) {
          expect(error).toBeInstanceOf(StorableDecryptionError);
          continue;
        }
        expect(i, `bit ${bit} of byte ${i} changed and still opened`).toBeGreaterThanOrEqual(33); // cipher_format tag..end
        expect(i).toBeLessThanOrEqual(50);
        expect(new TextDecoder().decode(result.value)).toBe('backward_compat_test_data');
        opened++;
      }
    }
    expect(opened).toBeGreaterThan(0);
  });

  it('hands out a value that does not alias the caller\'s storable bytes', () => {
    const input = good.slice();
    const { value } = decryptStorable(input, DATA_KEY, utf8Bytes('k'));
    input.fill(0);
    expect(new TextDecoder().decode(value)).toBe('channel state');
  });

  it('puts no key material in its error messages', () => {
    const keyHex = bytesToHex(DATA_KEY);
    for (const error of [
      storableError(() => decryptStorable(good, DATA_KEY)),
      storableError(() => decryptStorable(new Uint8Array([0xff]), DATA_KEY)),
      storableError(() => decryptStorable(new Uint8Array(0), DATA_KEY)),
    ]) {
      expect(error.message).not.toContain(keyHex);
      expect(String((error as { cause?: unknown }).cause ?? '')).not.toContain(keyHex);
    }
  });
});

describe('KeyObfuscator.deobfuscate on hostile server data', () => {
  const obfuscator = new KeyObfuscator(MASTER);

  it('refuses a non-string with a typed error rather than a TypeError from quoting it', () => {
    for (const input of [1n, Symbol('k'), null, undefined, 5, ['a']]) {
      const error = keyError(input);
      expect(error.reason).toBe('base64');
      expect(error.message).toMatch(/must be a string, got (bigint|symbol|null|undefined|number|object)/);
    }
  });

  it('quotes a huge malformed key in bounded form, with its length', () => {
    const huge = 'A'.repeat(1_000_000) + '!';
    const error = keyError(huge);
    expect(error.reason).toBe('base64');
    expect(error.message.length).toBeLessThan(300);
    expect(error.message).toContain('1000001 characters');
    // Short inputs are still quoted whole, so the failing key can be recognised.
    expect(keyError('not base64!').message).toContain('"not base64!"');
  });

  it('refuses base64 the reference refuses: padding, whitespace, impossible length, stray trailing bits', () => {
    const good = obfuscator.obfuscate('hello'); // 49 bytes: 66 characters, 4 trailing zero bits
    expect(keyError(obfuscator.obfuscate('hell') + '=').reason).toBe('base64');
    expect(keyError(obfuscator.obfuscate('hel') + '==').reason).toBe('base64');
    expect(keyError(`${good.slice(0, 10)}\n${good.slice(10)}`).reason).toBe('base64');
    expect(keyError(` ${good}`).reason).toBe('base64');
    expect(keyError(obfuscator.obfuscate('hell') + 'A').reason).toBe('base64'); // length % 4 == 1
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const last = alphabet.indexOf(good[good.length - 1]);
    expect(keyError(good.slice(0, -1) + alphabet[last ^ 1]).reason).toBe('base64');
  });

  it('refuses a valid-length blob with a wrong tag, and a long forged one', () => {
    expect(keyError(base64nopad.encode(new Uint8Array(44))).reason).toBe('nonce-tag');
    expect(keyError(base64nopad.encode(filled(7, 3_000_000))).reason).toBe('nonce-tag');
    expect(keyError(authenticObfuscated(utf8Bytes('k'), filled(43))).reason).toBe('nonce-tag');
  });

  it('refuses authentic plaintext that is not UTF-8: encoded surrogates, overlong forms, truncated sequences', () => {
    for (const bytes of [
      [0xed, 0xa0, 0x80], // U+D800 encoded as UTF-8 (CESU style)
      [0xed, 0xbf, 0xbf], // U+DFFF
      [0xc0, 0xaf], // overlong '/'
      [0xe0, 0x80, 0xaf], // overlong '/', 3 bytes
      [0xf4, 0x90, 0x80, 0x80], // beyond U+10FFFF
      [0x61, 0xe2, 0x82], // truncated at the end
    ]) {
      const error = keyError(authenticObfuscated(new Uint8Array(bytes)));
      expect(error.reason).toBe('utf8');
    }
    // Control: the helper builds keys that do open.
    expect(obfuscator.deobfuscate(authenticObfuscated(utf8Bytes('\uFEFFok')))).toBe('\uFEFFok');
  });

  it('does not keep the master key by reference: wiping it afterwards changes nothing', () => {
    const master = filled(42);
    const held = new KeyObfuscator(master);
    const before = held.obfuscate('monitors#');
    master.fill(0);
    expect(held.obfuscate('monitors#')).toBe(before);
    expect(held.deobfuscate(before)).toBe('monitors#');
  });

  it('puts neither the master key nor a forged plaintext in its messages', () => {
    const plaintext = new Uint8Array([0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0xff]); // "secret" + invalid byte
    const error = keyError(authenticObfuscated(plaintext));
    expect(error.message).not.toContain('secret');
    expect(error.message).not.toContain(bytesToHex(MASTER));
  });
});
