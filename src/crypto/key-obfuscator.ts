import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { base64nopad } from '@scure/base';
import { concatBytes } from '@noble/hashes/utils.js';
import { saltedHmac, utf8Bytes } from './kdf.js';
import { InvalidCryptoInputError, InvalidObfuscatedKeyError } from './errors.js';
import { quotedPrefix } from './text.js';
import { hasLoneSurrogate } from '../protocol/index.js';
import { isUint8Array } from '../protocol/bytes.js';

const TAG_LENGTH = 16;
const NONCE_LENGTH = 12;
/** Bytes an obfuscated key adds to its plaintext: tag1, wrapped nonce, tag2. */
const OVERHEAD = TAG_LENGTH + NONCE_LENGTH + TAG_LENGTH;
/**
 * Characters of a rejected obfuscated key quoted in an error. The input comes from the server,
 * which may list a key of megabytes: quoting it whole would put all of it in every message and
 * log line that reports the failure.
 */
const QUOTED_CHARS = 64;

/** With the `u` flag a surrogate class matches only a surrogate that is not half of a pair. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

// ignoreBOM: keep a leading U+FEFF like the reference's String::from_utf8. The default strips
// it, so a key starting with a BOM would deobfuscate to a different (nonexistent) key.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Deterministic, reversible key encryption, byte-identical to vss-client-ng's KeyObfuscator:
 * the same key always maps to the same string (so the server can look it up), while the
 * server learns nothing but its length. Output: base64 (standard alphabet, no padding) of
 * `ct ‖ tag1 ‖ wrapped_nonce ‖ tag2` (spec §A4).
 */
export class KeyObfuscator {
  readonly #obfuscationKey: Uint8Array;
  readonly #hashingKey: Uint8Array;

  constructor(obfuscationMasterKey: Uint8Array) {
    if (!isUint8Array(obfuscationMasterKey) || obfuscationMasterKey.length !== 32) {
      throw new InvalidCryptoInputError('obfuscation master key must be 32 bytes');
    }
    const prk = saltedHmac(obfuscationMasterKey, utf8Bytes('pseudo_random_key'));
    this.#obfuscationKey = saltedHmac(prk, utf8Bytes('obfuscation_key'));
    this.#hashingKey = saltedHmac(prk, concatBytes(this.#obfuscationKey, utf8Bytes('hashing_key')));
  }

  /**
   * Encrypts `key` deterministically; the result is safe to use as a VSS key. A string with a
   * lone surrogate (e.g. an emoji cut in half by `slice`) has no UTF-8 form: encoding would turn
   * it into U+FFFD, so distinct keys would share one stored object and never read back as
   * themselves. Such keys are refused instead.
   */
  obfuscate(key: string): string {
    if (typeof key !== 'string') throw new InvalidCryptoInputError(`key to obfuscate must be a string, got ${typeof key}`);
    if (hasLoneSurrogate(key)) {
      // The key is not quoted: hiding it is this class's purpose, and error messages end up in
      // logs and crash reports. Its length and the surrogate's position are enough to find it.
      const at = key.search(LONE_SURROGATE);
      throw new InvalidCryptoInputError(
        `key to obfuscate (${key.length} UTF-16 code units, not shown) contains a lone UTF-16 surrogate ` +
          `(U+${key.charCodeAt(at).toString(16).toUpperCase()} at index ${at}), which has no UTF-8 encoding`,
      );
    }
    const plaintext = utf8Bytes(key);
    const keyNonce = this.#syntheticNonce(plaintext);
    const sealedKey = chacha20poly1305(this.#obfuscationKey, keyNonce).encrypt(plaintext);
    // The nonce is wrapped under a second synthetic nonce derived from the ciphertext alone
    // (without its tag), exactly as the reference does.
    const ciphertext = sealedKey.subarray(0, plaintext.length);
    const sealedNonce = chacha20poly1305(this.#obfuscationKey, this.#syntheticNonce(ciphertext)).encrypt(keyNonce);
    return base64nopad.encode(concatBytes(sealedKey, sealedNonce));
  }

  /** Reverses `obfuscate`; any malformed or forged input throws `InvalidObfuscatedKeyError`. */
  deobfuscate(obfuscated: string): string {
    // Checked first: quoting a bigint (or a cyclic object) in the base64 error below would
    // itself throw a TypeError from JSON.stringify.
    if (typeof obfuscated !== 'string') {
      throw new InvalidObfuscatedKeyError('base64', `obfuscated key must be a string, got ${obfuscated === null ? 'null' : typeof obfuscated}`);
    }
    let bytes: Uint8Array;
    try {
      bytes = base64nopad.decode(obfuscated);
    } catch (cause) {
      throw new InvalidObfuscatedKeyError('base64', `obfuscated key is not unpadded standard base64: ${quotedPrefix(obfuscated, QUOTED_CHARS)}`, { cause });
    }
    if (bytes.length < OVERHEAD) {
      throw new InvalidObfuscatedKeyError('length', `obfuscated key decodes to ${bytes.length} bytes, at least ${OVERHEAD} expected`);
    }
    const ctEnd = bytes.length - OVERHEAD;
    const sealedKey = bytes.subarray(0, ctEnd + TAG_LENGTH);
    const sealedNonce = bytes.subarray(ctEnd + TAG_LENGTH);
    let keyNonce: Uint8Array;
    try {
      keyNonce = chacha20poly1305(this.#obfuscationKey, this.#syntheticNonce(bytes.subarray(0, ctEnd))).decrypt(sealedNonce);
    } catch (cause) {
      throw new InvalidObfuscatedKeyError('nonce-tag', 'obfuscated key: wrapped nonce failed authentication (wrong key or tampered)', { cause });
    }
    let plaintext: Uint8Array;
    try {
      plaintext = chacha20poly1305(this.#obfuscationKey, keyNonce).decrypt(sealedKey);
    } catch (cause) {
      throw new InvalidObfuscatedKeyError('key-tag', 'obfuscated key: ciphertext failed authentication (wrong key or tampered)', { cause });
    }
    try {
      return strictUtf8.decode(plaintext);
    } catch (cause) {
      throw new InvalidObfuscatedKeyError('utf8', 'obfuscated key decrypts to invalid UTF-8', { cause });
    }
  }

  /** 4 zero bytes then 8 bytes of HMAC(key = material, msg = hashing key): the reference layout. */
  #syntheticNonce(material: Uint8Array): Uint8Array {
    const nonce = new Uint8Array(NONCE_LENGTH);
    nonce.set(saltedHmac(this.#hashingKey, material).subarray(0, 8), 4);
    return nonce;
  }
}
