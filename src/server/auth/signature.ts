/**
 * The reference's "proof of private key knowledge" authorizer. The `authorization` header is
 * hex(compressed secp256k1 pubkey, 33 bytes) ‖ hex(compact ECDSA signature, 64 bytes) ‖ decimal
 * UNIX seconds, and the signature covers SHA256(SIGNING_CONSTANT ‖ pubkey ‖ time-as-sent).
 * The user token is the pubkey hex exactly as sent.
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { boundedDecimal, detached } from '../text.js';
import { sha256 } from '@noble/hashes/sha2.js';
import type { IncomingHttpHeaders } from 'node:http';
import { AuthError } from '../errors.js';
import { authorizationHeader, type Authorizer } from './types.js';

/** 64 ASCII bytes mixed into every signed message, byte-identical to the reference. */
export const SIGNING_CONSTANT = new TextEncoder().encode(
  'VSS Signature Authorizer Signing Salt Constant..................',
);
const PUBKEY_HEX_LENGTH = 66;
const SIGNATURE_HEX_LENGTH = 128;
/** Accepted clock difference between client and server, in seconds (±24 h, like the reference). */
export const SIGNATURE_TIME_WINDOW_SECONDS = 86_400n;
const U64_MAX = (1n << 64n) - 1n;
const U64_MAX_DIGITS = U64_MAX.toString().length;
const HEX = /^[0-9a-fA-F]*$/;
const UNSIGNED_DECIMAL = /^\+?[0-9]+$/;
/**
 * The longest header the verified-header cache keeps: a `+` and the 20 digits of u64::MAX, with
 * room for a few leading zeros. The time may carry any number of them (the reference's parser
 * accepts them, so such headers stay valid), up to Node's 16 KB header limit; cached whole,
 * 10,000 of those would hold 160 MB or more. Longer headers are verified on every use.
 */
export const MAX_CACHED_HEADER_LENGTH = PUBKEY_HEX_LENGTH + SIGNATURE_HEX_LENGTH + 32;

/**
 * The value of a u64 in the reference's syntax (an optional `+`, then digits, leading zeros
 * allowed), or undefined; a header-sized run of digits is refused by its length, unconverted.
 */
function parseU64(text: string): bigint | undefined {
  if (!UNSIGNED_DECIMAL.test(text)) return undefined;
  const value = boundedDecimal(text, U64_MAX_DIGITS);
  return value === undefined || value > U64_MAX ? undefined : value;
}

/** Bytes the client signs (before hashing): constant ‖ pubkey ‖ ascii(time). */
export function signatureMessage(pubkey: Uint8Array, time: string): Uint8Array {
  const timeBytes = new TextEncoder().encode(time);
  const message = new Uint8Array(SIGNING_CONSTANT.length + pubkey.length + timeBytes.length);
  message.set(SIGNING_CONSTANT, 0);
  message.set(pubkey, SIGNING_CONSTANT.length);
  message.set(timeBytes, SIGNING_CONSTANT.length + pubkey.length);
  return message;
}

export interface SignatureAuthorizerOptions {
  /** Clock for tests; returns UNIX seconds. */
  now?: () => number;
  /** How many recently verified headers to remember (0 disables the cache). Default 10,000. */
  verifiedCacheSize?: number;
}

export class SignatureAuthorizer implements Authorizer {
  readonly kind = 'signature';
  private readonly now: () => number;
  private readonly cacheSize: number;
  /**
   * Headers whose signature already verified. ECDSA verification costs about a millisecond of
   * CPU, and a client signing with deterministic nonces sends the identical header for every
   * request within the same second. A header's validity depends only on its own bytes and the
   * time window, which is re-checked on every use.
   */
  private readonly verified = new Set<string>();

  constructor(options: SignatureAuthorizerOptions = {}) {
    this.now = options.now ?? (() => Math.floor(Date.now() / 1000));
    this.cacheSize = options.verifiedCacheSize ?? 10_000;
  }

  async authorize(headers: IncomingHttpHeaders): Promise<string> {
    const header = authorizationHeader(headers);
    if (header === undefined) throw new AuthError('Authorization header not found.');
    if (header.length <= PUBKEY_HEX_LENGTH + SIGNATURE_HEX_LENGTH) throw new AuthError('Authorization header has wrong length');
    // eslint-disable-next-line no-control-regex
    if (!/^[\x00-\x7f]*$/.test(header)) throw new AuthError('Authorization header has bogus chars');
    const pubkeyHex = header.slice(0, PUBKEY_HEX_LENGTH);
    const signatureHex = header.slice(PUBKEY_HEX_LENGTH, PUBKEY_HEX_LENGTH + SIGNATURE_HEX_LENGTH);
    const time = header.slice(PUBKEY_HEX_LENGTH + SIGNATURE_HEX_LENGTH);
    if (!HEX.test(pubkeyHex) || !HEX.test(signatureHex)) throw new AuthError('Authorization header is not hex');
    const sentAt = parseU64(time);
    if (sentAt === undefined) throw new AuthError('Time is not an integer');
    const now = BigInt(this.now());
    if (sentAt < now - SIGNATURE_TIME_WINDOW_SECONDS || sentAt > now + SIGNATURE_TIME_WINDOW_SECONDS) {
      throw new AuthError('Time is too far from now');
    }
    // A user token cut from a long header would keep the whole header alive for as long as
    // anything holds the token (V8 slices share their parent's memory): copy it out.
    const userToken = header.length > MAX_CACHED_HEADER_LENGTH ? detached(pubkeyHex) : pubkeyHex;
    if (header.length <= MAX_CACHED_HEADER_LENGTH && this.verified.has(header)) return userToken;
    const pubkey = Buffer.from(pubkeyHex, 'hex');
    try {
      secp256k1.Point.fromBytes(pubkey);
    } catch {
      throw new AuthError('Authorization header has bad pubkey');
    }
    const signature = Buffer.from(signatureHex, 'hex');
    try {
      secp256k1.Signature.fromBytes(signature, 'compact');
    } catch {
      throw new AuthError('Authorization header has bad sig');
    }
    const digest = sha256(signatureMessage(pubkey, time));
    let valid = false;
    try {
      // lowS: the reference (libsecp256k1) rejects high-S signatures.
      valid = secp256k1.verify(signature, digest, pubkey, { prehash: false, lowS: true, format: 'compact' });
    } catch {
      valid = false;
    }
    if (!valid) throw new AuthError('Signature was invalid');
    if (this.cacheSize > 0 && header.length <= MAX_CACHED_HEADER_LENGTH) {
      if (this.verified.size >= this.cacheSize) this.verified.delete(this.verified.keys().next().value as string);
      this.verified.add(header);
    }
    return userToken;
  }
}
