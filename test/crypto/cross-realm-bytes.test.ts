/**
 * Bytes from another JavaScript realm (a `node:vm` context standing in for jsdom, an iframe or
 * a vm sandbox) are bytes: the crypto layer takes them wherever it takes a Uint8Array and gives
 * the same results as for this realm's bytes. Everything else is still refused, with the same
 * messages as before.
 */
import { bytesToHex } from '@noble/hashes/utils.js';
import { describe, expect, it } from 'vitest';
import {
  decryptStorable,
  deriveVssKeys,
  encryptStorable,
  InvalidCryptoInputError,
  KeyObfuscator,
} from '../../src/crypto/index.js';
import { isUint8Array, ownRealmBytes } from '../../src/protocol/bytes.js';
import { foreignBytes, foreignValue } from '../helpers/foreign-realm.js';

const SEED = Uint8Array.from({ length: 64 }, (_, i) => i);
const KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
const NONCE = Uint8Array.from({ length: 12 }, (_, i) => i + 1);
const VALUE = new TextEncoder().encode('a channel monitor');
const AAD = new TextEncoder().encode('monitors#deadbeef_1');

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a throw');
}

describe('isUint8Array', () => {
  it('accepts Uint8Arrays of any realm, subclasses (Node Buffer) and views into a larger buffer', () => {
    expect(isUint8Array(new Uint8Array(2))).toBe(true);
    expect(isUint8Array(Buffer.from('ab'))).toBe(true);
    expect(isUint8Array(new Uint8Array(8).subarray(2, 5))).toBe(true);
    expect(isUint8Array(foreignBytes([1, 2]))).toBe(true);
    expect(isUint8Array(foreignValue('new Uint8Array(new ArrayBuffer(8), 2, 3)'))).toBe(true);
  });

  it('refuses other views, arrays, strings and lookalikes, of either realm', () => {
    const refused: unknown[] = [
      new Int8Array(2),
      new Uint8ClampedArray(2),
      new Uint16Array(2),
      new DataView(new ArrayBuffer(2)),
      new ArrayBuffer(2),
      [1, 2],
      'AQI=',
      2,
      null,
      undefined,
      { length: 2, 0: 1, 1: 2, constructor: Uint8Array, [Symbol.toStringTag]: 'Uint8Array' },
      // An Int8Array that claims to be a Uint8Array by its own tag is still an Int8Array.
      Object.defineProperty(new Int8Array(2), Symbol.toStringTag, { value: 'Uint8Array' }),
      Object.defineProperty(foreignValue<object>('new Int8Array(2)'), Symbol.toStringTag, { value: 'Uint8Array' }),
      foreignValue('new Int8Array(2)'),
      foreignValue('new Uint8ClampedArray(2)'),
      foreignValue('new DataView(new ArrayBuffer(2))'),
      foreignValue('[1, 2]'),
    ];
    for (const value of refused) expect(isUint8Array(value), Object.prototype.toString.call(value)).toBe(false);
  });

  it('ownRealmBytes views foreign bytes (same memory) as this realm\'s, and leaves ours and Buffers alone', () => {
    const foreign = foreignValue<Uint8Array>('new Uint8Array([9, 1, 2, 3, 9]).subarray(1, 4)');
    const own = ownRealmBytes(foreign);
    expect(own).toBeInstanceOf(Uint8Array);
    expect([...own]).toEqual([1, 2, 3]);
    own[0] = 7;
    expect(foreign[0]).toBe(7);
    const local = new Uint8Array(1);
    const buffer = Buffer.from('x');
    expect(ownRealmBytes(local)).toBe(local);
    expect(ownRealmBytes(buffer)).toBe(buffer);
  });
});

describe('crypto takes bytes of another realm', () => {
  it('deriveVssKeys: the same keys from a foreign seed', () => {
    const ours = deriveVssKeys(SEED);
    const theirs = deriveVssKeys(foreignBytes(SEED));
    expect(bytesToHex(theirs.dataEncryptionKey)).toBe(bytesToHex(ours.dataEncryptionKey));
    expect(bytesToHex(theirs.obfuscationMasterKey)).toBe(bytesToHex(ours.obfuscationMasterKey));
    expect(bytesToHex(theirs.sigsAuthSecretKey)).toBe(bytesToHex(ours.sigsAuthSecretKey));
    expect(theirs.lnurlAuthParentKey.privateExtendedKey).toBe(ours.lnurlAuthParentKey.privateExtendedKey);
  });

  it('KeyObfuscator: a foreign master key obfuscates and deobfuscates as ours does', () => {
    const ours = new KeyObfuscator(KEY);
    const theirs = new KeyObfuscator(foreignBytes(KEY));
    const obfuscated = theirs.obfuscate('monitors#deadbeef_1');
    expect(obfuscated).toBe(ours.obfuscate('monitors#deadbeef_1'));
    expect(ours.deobfuscate(obfuscated)).toBe('monitors#deadbeef_1');
  });

  it('encryptStorable / decryptStorable: foreign value, key, AAD, nonce and storable', () => {
    const expected = encryptStorable(VALUE, 5n, KEY, { aad: AAD, randomBytes: () => NONCE });
    const sealed = encryptStorable(foreignBytes(VALUE), 5n, foreignBytes(KEY), {
      aad: foreignBytes(AAD),
      // As a jsdom environment's crypto.getRandomValues would return them.
      randomBytes: (n) => foreignBytes(NONCE.subarray(0, n)),
    });
    expect(bytesToHex(sealed)).toBe(bytesToHex(expected));
    const opened = decryptStorable(foreignBytes(sealed), foreignBytes(KEY), foreignBytes(AAD));
    expect(new TextDecoder().decode(opened.value)).toBe('a channel monitor');
    expect(opened.version).toBe(5n);
    // What it hands back is this realm's.
    expect(opened.value).toBeInstanceOf(Uint8Array);
    // An empty foreign value and the default AAD.
    expect(decryptStorable(encryptStorable(foreignBytes([]), 0n, KEY), KEY).value).toEqual(new Uint8Array(0));
  });
});

describe('crypto still refuses what is not bytes, with the same messages', () => {
  const notBytes: [string, () => unknown][] = [
    ['an Int8Array', () => new Int8Array(64)],
    ['a foreign Int8Array', () => foreignValue('new Int8Array(64)')],
    ['a Uint8ClampedArray', () => new Uint8ClampedArray(64)],
    ['a DataView', () => new DataView(new ArrayBuffer(64))],
  ];

  it('deriveVssKeys', () => {
    for (const [label, make] of notBytes) {
      const error = thrown(() => deriveVssKeys(make() as Uint8Array));
      expect(error, label).toBeInstanceOf(InvalidCryptoInputError);
      expect(error.message, label).toBe('the seed must be a Uint8Array of 64 bytes, got object');
    }
    expect(thrown(() => deriveVssKeys(Array.from(SEED) as unknown as Uint8Array)).message).toBe('the seed must be a Uint8Array of 64 bytes, got an array');
    expect(thrown(() => deriveVssKeys(bytesToHex(SEED).slice(0, 64) as unknown as Uint8Array)).message).toBe('the seed must be a Uint8Array of 64 bytes, got string');
    expect(thrown(() => deriveVssKeys(foreignBytes(SEED.subarray(0, 32)))).message).toBe('LDK Node seeds are 64 bytes, got 32');
  });

  it('KeyObfuscator', () => {
    const refused = [...notBytes.map(([, make]) => make()), Array.from(KEY), 'k'.repeat(32), foreignBytes(KEY.subarray(0, 31))];
    for (const value of refused) {
      const error = thrown(() => new KeyObfuscator(value as Uint8Array));
      expect(error).toBeInstanceOf(InvalidCryptoInputError);
      expect(error.message).toBe('obfuscation master key must be 32 bytes');
    }
  });

  it('encryptStorable / decryptStorable', () => {
    for (const [label, make] of [...notBytes, ['a number[]', () => Array.from(VALUE)] as const, ['a string', () => 'aGVsbG8'] as const]) {
      const value = make() as Uint8Array;
      const got = Array.isArray(value) ? 'object' : typeof value;
      expect(thrown(() => encryptStorable(value, 0n, KEY)).message, label).toBe(`value to encrypt must be a Uint8Array, got ${got}`);
      expect(thrown(() => encryptStorable(VALUE, 0n, KEY, { aad: value })).message, label).toBe(`aad must be a Uint8Array, got ${got}`);
      expect(thrown(() => decryptStorable(value, KEY)).message, label).toBe(`storable to decrypt must be a Uint8Array, got ${got}`);
      expect(thrown(() => decryptStorable(new Uint8Array(0), KEY, value)).message, label).toBe(`aad must be a Uint8Array, got ${got}`);
      expect(thrown(() => encryptStorable(VALUE, 0n, value)).message, label).toBe('data encryption key must be 32 bytes');
      expect(thrown(() => encryptStorable(VALUE, 0n, KEY, { randomBytes: () => value })).message, label).toBe('randomBytes must return 12 bytes');
    }
    expect(thrown(() => encryptStorable(VALUE, 0n, foreignBytes(KEY.subarray(1)))).message).toBe('data encryption key must be 32 bytes');
    expect(thrown(() => encryptStorable(VALUE, 0n, KEY, { randomBytes: () => foreignBytes(NONCE.subarray(1)) })).message).toBe('randomBytes must return 12 bytes');
    for (const error of [thrown(() => encryptStorable(new Int8Array(1) as unknown as Uint8Array, 0n, KEY))]) expect(error).toBeInstanceOf(InvalidCryptoInputError);
  });
});
