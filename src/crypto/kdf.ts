import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';

/**
 * The reference client's "hkdf": a single HMAC-SHA256 whose KEY is the salt and whose
 * MESSAGE is the input keying material. It is not RFC 5869 HKDF; the argument order is
 * the easy thing to get wrong, hence one named helper used everywhere.
 */
export function saltedHmac(ikm: Uint8Array, salt: Uint8Array): Uint8Array {
  return hmac(sha256, salt, ikm);
}

const utf8 = new TextEncoder();

/** UTF-8 bytes of a string (a web-standard API, available in browsers and React Native). */
export function utf8Bytes(s: string): Uint8Array {
  return utf8.encode(s);
}
