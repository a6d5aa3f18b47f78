/**
 * JWT authorizer with the reference's claim rules: `Authorization: Bearer <jwt>`, RS256 only,
 * `sub` (string) is the user token, `exp` is required (non-negative integer, 60 s leeway),
 * any `aud` is rejected, `nbf`/`iat` are not checked. The public key comes from a PEM
 * (SPKI or PKCS#1, RSA ≥ 2048 bits) or a JWKS file.
 */
import { compactVerify, createLocalJWKSet, errors, type JSONWebKeySet, type JWK } from 'jose';
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { AuthError } from '../errors.js';
import { authorizationHeader, type Authorizer } from './types.js';

export const JWT_EXPIRY_LEEWAY_SECONDS = 60;
const MIN_RSA_BITS = 2048;
const BEARER_PREFIX = 'Bearer ';

/** Thrown at startup when the configured key cannot be used. */
export class JwtKeyError extends Error {
  override readonly name = 'JwtKeyError';
}

type KeySource = KeyObject | ReturnType<typeof createLocalJWKSet>;

export interface JwtAuthorizerOptions {
  /** RSA public key, `-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`. */
  publicKeyPem?: string;
  /** A JSON Web Key Set (parsed); the token's `kid` selects the key, else every RSA key is tried. */
  jwks?: JSONWebKeySet;
  /** Clock for tests; returns UNIX seconds. */
  now?: () => number;
}

/** Parses an RSA public key PEM, tolerating the indentation config files tend to add. */
export function parseRsaPublicKeyPem(pem: string): KeyObject {
  const normalized = pem
    .trim()
    .split(/\r?\n/)
    .map((line) => line.trim())
    .join('\n');
  let key: KeyObject;
  try {
    key = createPublicKey(normalized);
  } catch (error) {
    throw new JwtKeyError(`not a valid public key PEM (${(error as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new JwtKeyError(`key type ${key.asymmetricKeyType} is not RSA`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw new JwtKeyError(`RSA key has ${bits} bits, at least ${MIN_RSA_BITS} are required`);
  return key;
}

function isJsonObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Whether a JWKS entry can verify RS256 tokens (other entries are allowed but never match). */
function isRs256VerificationKey(jwk: JWK): boolean {
  if (jwk.kty !== 'RSA' || (jwk.alg !== undefined && jwk.alg !== 'RS256') || (jwk.use !== undefined && jwk.use !== 'sig')) return false;
  // jose skips entries whose key_ops lack "verify" and refuses private entries (member `d`) when
  // a token is checked; createPublicKey below would happily derive a public key from one.
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return false;
  if (jwk.d !== undefined) return false;
  try {
    const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    return key.type === 'public' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= MIN_RSA_BITS;
  } catch {
    return false;
  }
}

export class JwtAuthorizer implements Authorizer {
  readonly kind = 'jwt';
  private readonly key: KeySource;
  private readonly now: () => number;

  constructor(options: JwtAuthorizerOptions) {
    if (options.publicKeyPem !== undefined) this.key = parseRsaPublicKeyPem(options.publicKeyPem);
    else if (options.jwks !== undefined) {
      // It comes straight from JSON.parse of a file: check its shape so a typo is named as such.
      if (!isJsonObject(options.jwks) || !Array.isArray(options.jwks.keys) || !options.jwks.keys.every(isJsonObject)) {
        throw new JwtKeyError('JWKS must be an object with a "keys" array of JSON objects');
      }
      if (options.jwks.keys.length === 0) throw new JwtKeyError('JWKS has no keys');
      // Without one, the server would start and then refuse every token; fail at startup as a PEM does.
      if (!options.jwks.keys.some(isRs256VerificationKey)) {
        throw new JwtKeyError(`JWKS has no RSA public key of at least ${MIN_RSA_BITS} bits usable for RS256 signatures`);
      }
      this.key = createLocalJWKSet(options.jwks);
    } else throw new JwtKeyError('a public key PEM or a JWKS is required');
    this.now = options.now ?? (() => Math.floor(Date.now() / 1000));
  }

  async authorize(headers: IncomingHttpHeaders): Promise<string> {
    const header = authorizationHeader(headers);
    if (header === undefined) throw new AuthError('Authorization header not found.');
    if (!header.startsWith(BEARER_PREFIX)) throw new AuthError('Invalid token format.');
    const token = header.slice(BEARER_PREFIX.length);
    if (token.split('.').length !== 3) throw new AuthError('Token does not have three parts');
    let payload: Uint8Array;
    try {
      payload = await this.verify(token);
    } catch {
      throw new AuthError('RSA verification failed');
    }
    let claims: unknown;
    try {
      claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
    } catch {
      throw new AuthError('Claims json decode failed');
    }
    if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw new AuthError('Claims json decode failed');
    const { sub, exp, aud } = claims as Record<string, unknown>;
    if (typeof sub !== 'string') throw new AuthError('Claims json decode failed');
    if (typeof exp !== 'number' || !Number.isInteger(exp) || exp < 0 || exp > 2 ** 64) {
      throw new AuthError('Claims json decode failed');
    }
    if (aud !== undefined && aud !== null) {
      throw new AuthError("Audience is set, but we don't know what audience we should expect");
    }
    if (this.now() > exp + JWT_EXPIRY_LEEWAY_SECONDS) throw new AuthError('The token is expired');
    return sub;
  }

  /** The verified payload; rejects (with any error) when no configured key verifies the token. */
  private async verify(token: string): Promise<Uint8Array> {
    if (typeof this.key !== 'function') return (await compactVerify(token, this.key, { algorithms: ['RS256'] })).payload;
    try {
      return (await compactVerify(token, this.key, { algorithms: ['RS256'] })).payload;
    } catch (error) {
      // A token without `kid` matches every RSA key of the set (a rotation publishes two); jose
      // then refuses to guess and hands back the candidates, which are tried in turn.
      if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw error;
      for await (const key of error) {
        try {
          return (await compactVerify(token, key, { algorithms: ['RS256'] })).payload;
        } catch {
          // Try the next candidate.
        }
      }
      throw error;
    }
  }
}
