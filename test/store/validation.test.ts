import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { checkKey, checkNamespace, checkValue, InvalidKeyError, InvalidValueError, StoreError, KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN } from '../../src/store/index.js';

describe('LDK key and namespace rules', () => {
  it('accepts the LDK alphabet up to 120 characters, and the root namespace', () => {
    expect(() => checkKey('', '', 'manager')).not.toThrow();
    expect(() => checkKey('monitors', '', 'deadbeef_1')).not.toThrow();
    expect(() => checkKey('monitor_updates', 'abc-DEF_123', '42')).not.toThrow();
    expect(() => checkKey('A'.repeat(120), 'B'.repeat(120), 'C'.repeat(120))).not.toThrow();
    expect(() => checkNamespace('', '')).not.toThrow();
  });

  it.each([
    ['an empty key', ['p', 's', '']],
    ['a secondary namespace under an empty primary', ['', 's', 'k']],
    ['a 121-character key', ['p', '', 'k'.repeat(121)]],
    ['a 121-character primary namespace', ['p'.repeat(121), '', 'k']],
    ['a 121-character secondary namespace', ['p', 's'.repeat(121), 'k']],
    ['a # in the key', ['p', '', 'a#b']],
    ['a # in a namespace', ['p#q', '', 'k']],
    ['a slash', ['p', '', 'a/b']],
    ['a space', ['p', '', 'a b']],
    ['non-ASCII letters', ['p', '', 'é']],
  ])('rejects %s with InvalidKeyError', (_name, [p, s, k]) => {
    expect(() => checkKey(p, s, k)).toThrow(InvalidKeyError);
  });

  it('applies the empty-primary rule to namespaces alone', () => {
    expect(() => checkNamespace('', 'x')).toThrow(InvalidKeyError);
    expect(() => checkNamespace('x', 'y#')).toThrow(InvalidKeyError);
  });

  it('uses exactly LDK\'s alphabet and length limit, for every component', () => {
    expect(KVSTORE_NAMESPACE_KEY_ALPHABET).toBe('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-');
    expect(KVSTORE_NAMESPACE_KEY_MAX_LEN).toBe(120);
    for (let code = 0; code < 256; code++) {
      const c = String.fromCharCode(code);
      const allowed = KVSTORE_NAMESPACE_KEY_ALPHABET.includes(c);
      for (const address of [[`p${c}`, '', 'k'], ['p', `s${c}`, 'k'], ['p', 's', `k${c}`]]) {
        if (allowed) expect(() => checkKey(address[0], address[1], address[2]), `char ${code}`).not.toThrow();
        else expect(() => checkKey(address[0], address[1], address[2]), `char ${code}`).toThrow(InvalidKeyError);
      }
    }
  });

  it('rejects a trailing newline, look-alike letters and astral characters (no regex end-of-line slack)', () => {
    for (const key of ['key\n', 'key\r\n', '\nkey', 'kеy' /* Cyrillic е */, 'k😀', 'ｋey' /* fullwidth */]) {
      expect(() => checkKey('p', '', key), JSON.stringify(key)).toThrow(InvalidKeyError);
      expect(() => checkNamespace(key, ''), JSON.stringify(key)).toThrow(InvalidKeyError);
    }
  });

  it('rejects non-string components with InvalidKeyError instead of a TypeError', () => {
    expect(() => checkKey('p', '', 42 as unknown as string)).toThrow(InvalidKeyError);
    expect(() => checkNamespace(undefined as unknown as string, '')).toThrow(InvalidKeyError);
  });
});

describe('value rule', () => {
  it('accepts Uint8Arrays: plain, a Node Buffer, a view into a larger buffer, one from another realm', () => {
    const foreign = runInNewContext('new Uint8Array([1, 2])') as unknown;
    for (const ok of [new Uint8Array(), Uint8Array.of(1), Buffer.from('x'), new Uint8Array(new ArrayBuffer(8), 2, 3), foreign]) {
      expect(() => checkValue(ok, 'ns', '', 'k')).not.toThrow();
    }
  });

  it.each([
    ['a string', 'abc', /got a string/],
    ['an array of numbers', [1, 2, 3], /got an array/],
    ['a number', 7, /got a number/],
    ['null', null, /got null/],
    ['undefined', undefined, /got undefined/],
    ['another typed array', new Uint16Array(2), /got a Uint16Array/],
    ['a clamped byte array', new Uint8ClampedArray(2), /got a Uint8ClampedArray/],
    ['an ArrayBuffer', new ArrayBuffer(2), /got an ArrayBuffer/],
    ['a DataView', new DataView(new ArrayBuffer(2)), /got a DataView/],
    ['a plain object', { length: 1, 0: 1 }, /got an object/],
  ])('rejects %s with InvalidValueError (a StoreError) naming the key', (_name, value, got) => {
    let err: unknown;
    try {
      checkValue(value, 'ns', '', 'k');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidValueError);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as Error).message).toMatch(/the value for \["ns","","k"\] must be a Uint8Array/);
    expect((err as Error).message).toMatch(got);
  });
});
