import { describe, expect, it } from 'vitest';
import { checkKey, checkNamespace, InvalidKeyError } from '../../src/store/index.js';

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
});
