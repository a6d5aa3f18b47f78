/**
 * Typed errors of the crypto layer. Each failure names its reason so callers (and the store
 * layer) can tell tampering or a wrong key apart from malformed input without parsing text.
 */

/** Base class of every crypto-layer error. */
export class CryptoError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Why an obfuscated key could not be turned back into its plaintext. */
export type ObfuscatedKeyFailure = 'base64' | 'length' | 'nonce-tag' | 'key-tag' | 'utf8';

/** `KeyObfuscator.deobfuscate` rejected its input. */
export class InvalidObfuscatedKeyError extends CryptoError {
  constructor(
    readonly reason: ObfuscatedKeyFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Why a serialized Storable could not be decrypted. */
export type StorableFailure = 'decode' | 'metadata' | 'tag' | 'blob';

/**
 * `decryptStorable` rejected its input: `decode` (not a Storable), `metadata` (missing
 * metadata, wrong nonce or tag size), `tag` (wrong key, wrong AAD or tampered bytes),
 * `blob` (authentic ciphertext whose plaintext is not a PlaintextBlob).
 */
export class StorableDecryptionError extends CryptoError {
  constructor(
    readonly reason: StorableFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Input to a signing or derivation function is unusable (bad URL, bad key, bad seed). */
export class InvalidCryptoInputError extends CryptoError {}
