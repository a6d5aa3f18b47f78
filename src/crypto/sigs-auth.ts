import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, concatBytes } from '@noble/hashes/utils.js';
import { utf8Bytes } from './kdf.js';
import { InvalidCryptoInputError } from './errors.js';

/** The 64-byte salt the reference signature authorizer prefixes to every preimage. */
export const SIGS_AUTH_SIGNING_CONSTANT: Uint8Array = utf8Bytes(
  'VSS Signature Authorizer Signing Salt Constant' + '.'.repeat(18),
);

/** The preimage whose SHA-256 is signed: constant ‖ compressed pubkey ‖ decimal seconds. */
export function sigsAuthPreimage(publicKey: Uint8Array, unixSeconds: number): Uint8Array {
  return concatBytes(SIGS_AUTH_SIGNING_CONSTANT, publicKey, utf8Bytes(String(unixSeconds)));
}

/**
 * The `Authorization` value of the reference's SigsAuthProvider (no scheme prefix):
 * hex(pubkey33) ‖ hex(compact sig64) ‖ decimal Unix seconds.
 */
export function sigsAuthorizationValue(secretKey: Uint8Array, unixSeconds: number): string {
  if (!Number.isSafeInteger(unixSeconds) || unixSeconds < 0) {
    throw new InvalidCryptoInputError(`unix seconds must be a non-negative integer, got ${unixSeconds}`);
  }
  let publicKey: Uint8Array;
  try {
    publicKey = secp256k1.getPublicKey(secretKey, true);
  } catch (cause) {
    throw new InvalidCryptoInputError('sigs-auth secret key is not a valid secp256k1 secret key', { cause });
  }
  const digest = sha256(sigsAuthPreimage(publicKey, unixSeconds));
  // The digest is already hashed: sign it as-is (RFC 6979, low-S), compact r ‖ s.
  const signature = secp256k1.sign(digest, secretKey, { prehash: false, lowS: true, format: 'compact' });
  return bytesToHex(publicKey) + bytesToHex(signature) + String(unixSeconds);
}
