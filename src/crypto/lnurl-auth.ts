import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import type { HDKey } from '@scure/bip32';
import { utf8Bytes } from './kdf.js';
import { InvalidCryptoInputError } from './errors.js';

/** Non-hardened child of the parent key whose private key seeds the LUD-05 path. */
export const LNURL_HASHING_DERIVATION_INDEX = 0;

/** The parts of an LNURL-auth challenge URL that the signature depends on. */
export interface LnurlChallenge {
  /** The URL, trimmed, with its fragment (if any) split off. */
  base: string;
  fragment: string;
  /** The host as written (no port, no userinfo, case preserved), the LUD-05 domain. */
  domain: string;
  /** The 32-byte challenge. */
  k1: Uint8Array;
}

function invalid(message: string, cause?: unknown): InvalidCryptoInputError {
  return new InvalidCryptoInputError(`invalid lnurl: ${message}`, cause === undefined ? undefined : { cause });
}

/**
 * Parses a plain-URL LNURL-auth challenge the way the reference's URL type does: the domain
 * is the host exactly as written (not lower-cased, unlike WHATWG `URL`), and `k1` is the first
 * query parameter of that name. Hand-parsed because the domain's bytes feed the key path.
 */
export function parseLnurlChallenge(url: string): LnurlChallenge {
  const trimmed = url.trim();
  if (!/^[\x00-\x7f]*$/.test(trimmed)) throw invalid('URL must be ASCII');
  const schemeEnd = trimmed.indexOf('://');
  if (schemeEnd <= 0) throw invalid('URL has no scheme');
  const hashAt = trimmed.indexOf('#');
  const base = hashAt === -1 ? trimmed : trimmed.slice(0, hashAt);
  const fragment = hashAt === -1 ? '' : trimmed.slice(hashAt);
  const afterScheme = base.slice(schemeEnd + 3);
  const authorityEnd = afterScheme.search(/[/?]/);
  const authority = authorityEnd === -1 ? afterScheme : afterScheme.slice(0, authorityEnd);
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const domain = hostPort.startsWith('[') ? hostPort.slice(0, hostPort.indexOf(']') + 1) : hostPort.split(':')[0];
  if (!domain) throw invalid('URL has no host');
  const queryAt = base.indexOf('?', schemeEnd + 3);
  const query = queryAt === -1 ? '' : base.slice(queryAt + 1);
  let k1Hex: string | undefined;
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const name = eq === -1 ? pair : pair.slice(0, eq);
    if (name !== 'k1') continue;
    try {
      k1Hex = decodeURIComponent(eq === -1 ? '' : pair.slice(eq + 1));
    } catch (cause) {
      throw invalid('k1 is not valid percent-encoding', cause);
    }
    break;
  }
  if (k1Hex === undefined) throw invalid('no k1 parameter');
  if (!/^[0-9a-fA-F]{64}$/.test(k1Hex)) throw invalid('k1 must be 32 bytes of hex');
  return { base, fragment, domain, k1: hexToBytes(k1Hex.toLowerCase()) };
}

/**
 * LUD-05: the first 16 bytes of HMAC-SHA256(key = hashing private key, msg = domain), read
 * as four big-endian u32 values. Each is a raw BIP32 index (≥ 2^31 means hardened).
 */
export function lnurlLinkingPath(hashingPrivateKey: Uint8Array, domain: string): [number, number, number, number] {
  const h = hmac(sha256, hashingPrivateKey, utf8Bytes(domain));
  const view = new DataView(h.buffer, h.byteOffset, h.byteLength);
  return [view.getUint32(0), view.getUint32(4), view.getUint32(8), view.getUint32(12)];
}

/** The LUD-05 linking key for `domain` under `parentKey` (ldk-node passes m/877'/138'). */
export function lnurlLinkingKey(parentKey: HDKey, domain: string): HDKey {
  const hashingKey = parentKey.deriveChild(LNURL_HASHING_DERIVATION_INDEX).privateKey;
  if (!hashingKey) throw new InvalidCryptoInputError('LNURL parent key must be a private key');
  let linking = parentKey;
  for (const index of lnurlLinkingPath(hashingKey, domain)) linking = linking.deriveChild(index);
  return linking;
}

/**
 * Signs an LNURL-auth challenge URL and returns it with `sig` (DER, hex) and `key`
 * (compressed linking pubkey, hex) appended before any fragment. `k1` is signed raw,
 * as the 32-byte digest, without hashing it again.
 */
export function signLnurl(parentKey: HDKey, challengeUrl: string): string {
  const challenge = parseLnurlChallenge(challengeUrl);
  const linking = lnurlLinkingKey(parentKey, challenge.domain);
  const privateKey = linking.privateKey;
  if (!privateKey) throw new InvalidCryptoInputError('LNURL linking key has no private key');
  const signature = secp256k1.sign(challenge.k1, privateKey, { prehash: false, lowS: true, format: 'der' });
  const publicKey = secp256k1.getPublicKey(privateKey, true);
  return `${challenge.base}&sig=${bytesToHex(signature)}&key=${bytesToHex(publicKey)}${challenge.fragment}`;
}
