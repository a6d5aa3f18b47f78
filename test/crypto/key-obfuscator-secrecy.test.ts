import { describe, expect, it } from 'vitest';
import { InvalidCryptoInputError, KeyObfuscator } from '../../src/crypto/index.js';

// The plaintext key is what KeyObfuscator hides: a refusal must not put it in a message (logs,
// crash reports), but must still say what is wrong and where.

function refusal(obfuscator: KeyObfuscator, key: string): InvalidCryptoInputError {
  try {
    obfuscator.obfuscate(key);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidCryptoInputError);
    return error as InvalidCryptoInputError;
  }
  throw new Error('expected an InvalidCryptoInputError');
}

describe('KeyObfuscator.obfuscate refuses a lone surrogate without quoting the key', () => {
  const obfuscator = new KeyObfuscator(new Uint8Array(32).fill(42));

  it('names the surrogate and its position, not the key', () => {
    const key = `payments/alice-savings-${'😀'.slice(0, 1)}`;
    const error = refusal(obfuscator, key);
    expect(error.message).toBe(
      'key to obfuscate (24 UTF-16 code units, not shown) contains a lone UTF-16 surrogate (U+D83D at index 23), which has no UTF-8 encoding',
    );
    expect(error.message).not.toContain('alice');
    // A low surrogate first, and one between characters.
    expect(refusal(obfuscator, '\uDC00').message).toContain('(U+DC00 at index 0)');
    expect(refusal(obfuscator, 'a😀b\uDFFFc').message).toContain('(U+DFFF at index 4)');
  });

  it('keeps the message short whatever the key\'s size', () => {
    const error = refusal(obfuscator, `${'secret'.repeat(200_000)}\uD800`);
    expect(error.message.length).toBeLessThan(200);
    expect(error.message).not.toContain('secret');
    expect(error.message).toContain('(U+D800 at index 1200000)');
  });
});
