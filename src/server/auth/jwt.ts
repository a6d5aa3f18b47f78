/**
 * JWT authorizer with the reference's claim rules: `Authorization: Bearer <jwt>`, RS256 only,
 * `sub` (string) is the user token, `exp` is required (non-negative integer, 60 s leeway),
 * any `aud` is rejected, `nbf`/`iat` are not checked. The public key comes from a PEM
 * (SPKI or PKCS#1, RSA ≥ 2048 bits, or an X.509 certificate, used only within its validity
 * period) or a JWKS file. Tokens are decoded as strictly as the
 * reference decodes them (canonical base64url, `sub`/`exp`/`aud` at most once, `exp` written as
 * an integer), so every token has one spelling and one meaning.
 */
import { compactVerify, createLocalJWKSet, errors, type JSONWebKeySet, type JWK } from 'jose';
import { createPublicKey, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
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
  /**
   * RSA public key, `-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`, or an X.509
   * certificate (`-----BEGIN CERTIFICATE-----`): tokens are then accepted only within the
   * certificate's validity period, and construction fails outside it.
   */
  publicKeyPem?: string;
  /** A JSON Web Key Set (parsed); the token's `kid` selects the key, else every RSA key is tried. */
  jwks?: JSONWebKeySet;
  /** Clock for tests; returns UNIX seconds. */
  now?: () => number;
}

/** Current UNIX time in seconds. */
const unixNow = () => Math.floor(Date.now() / 1000);

/** The validity period (notBefore..notAfter, both included) of the certificate a key came from, in ms. */
interface CertificateValidity {
  notBeforeMs: number;
  notAfterMs: number;
}

/** Why a certificate cannot be used at `nowSeconds`, or undefined when it is within its validity period. */
function validityProblem({ notBeforeMs, notAfterMs }: CertificateValidity, nowSeconds: number): string | undefined {
  const nowMs = nowSeconds * 1000;
  const period = `valid from ${new Date(notBeforeMs).toISOString()} to ${new Date(notAfterMs).toISOString()}`;
  if (nowMs > notAfterMs) return `the X.509 certificate has expired (${period})`;
  if (nowMs < notBeforeMs) return `the X.509 certificate is not valid yet (${period})`;
  return undefined;
}

/** A certificate time as ms since the epoch (Node 20 only has the OpenSSL text form, in GMT). */
function certificateTimeMs(cert: X509Certificate, field: 'validFrom' | 'validTo'): number {
  const date = (cert as { validFromDate?: Date; validToDate?: Date })[`${field}Date`];
  const ms = date instanceof Date ? date.getTime() : Date.parse(cert[field]);
  if (!Number.isFinite(ms)) throw new JwtKeyError(`cannot read the X.509 certificate's ${field} time "${cert[field]}"`);
  return ms;
}

/**
 * The key of an RSA public key PEM or X.509 certificate PEM, with the certificate's validity
 * period; refuses a certificate that is not valid at `nowSeconds`.
 */
function readRsaPublicKeyPem(pem: string, nowSeconds: number): { key: KeyObject; validity?: CertificateValidity } {
  const normalized = pem
    .trim()
    .split(/\r?\n/)
    .map((line) => line.trim())
    .join('\n');
  // Node would also take a private key and quietly derive its public half; the reference refuses
  // one. A private key here means the token issuer's signing key, which can mint a token for any
  // user, was copied onto the VSS host, which never needs it: refuse it by name.
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(normalized)?.[1];
  if (label?.includes('PRIVATE KEY')) {
    throw new JwtKeyError(
      `the PEM is a private key (${label}); configure the token issuer's public key instead (\`openssl pkey -in key.pem -pubout\`): the server never needs the signing key`,
    );
  }
  let key: KeyObject;
  let validity: CertificateValidity | undefined;
  try {
    if (label === 'CERTIFICATE') {
      // A certificate says until when its key may be trusted: its key is used only within that
      // period (createPublicKey would take the key and ignore the dates).
      const cert = new X509Certificate(normalized);
      validity = { notBeforeMs: certificateTimeMs(cert, 'validFrom'), notAfterMs: certificateTimeMs(cert, 'validTo') };
      key = cert.publicKey;
    } else {
      key = createPublicKey(normalized);
    }
  } catch (error) {
    if (error instanceof JwtKeyError) throw error;
    throw new JwtKeyError(`not a valid ${label === 'CERTIFICATE' ? 'X.509 certificate' : 'public key'} PEM (${(error as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new JwtKeyError(`key type ${key.asymmetricKeyType} is not RSA`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw new JwtKeyError(`RSA key has ${bits} bits, at least ${MIN_RSA_BITS} are required`);
  const problem = validity && validityProblem(validity, nowSeconds);
  if (problem !== undefined) {
    throw new JwtKeyError(`${problem}; configure a certificate valid now, or the token issuer's public key`);
  }
  return { key, validity };
}

/**
 * Parses an RSA public key PEM (SPKI or PKCS#1) or an X.509 certificate PEM holding one,
 * tolerating the indentation config files tend to add. A certificate outside its validity
 * period at `now()` (UNIX seconds) is refused.
 */
export function parseRsaPublicKeyPem(pem: string, now: () => number = unixNow): KeyObject {
  return readRsaPublicKeyPem(pem, now()).key;
}

/** The three dot-separated parts, or undefined; stops at a fourth part instead of splitting it all. */
function threeParts(token: string): [string, string, string] | undefined {
  const first = token.indexOf('.');
  const second = first < 0 ? -1 : token.indexOf('.', first + 1);
  if (second < 0 || token.indexOf('.', second + 1) >= 0) return undefined;
  return [token.slice(0, first), token.slice(first + 1, second), token.slice(second + 1)];
}

const BASE64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const BASE64URL_TEXT = /^[A-Za-z0-9_-]*$/;

/**
 * Whether `part` is base64url as an encoder writes it: only the 64 letters, no padding, no
 * impossible length, and the unused bits of the last letter zero (so no two spellings decode to
 * the same bytes).
 */
function isCanonicalBase64url(part: string): boolean {
  if (!BASE64URL_TEXT.test(part)) return false;
  const tail = part.length % 4;
  if (tail === 0) return true;
  if (tail === 1) return false;
  // 2 letters carry 1 byte (4 unused bits), 3 letters carry 2 bytes (2 unused bits).
  const last = BASE64URL_ALPHABET.indexOf(part[part.length - 1]);
  return (last & (tail === 2 ? 0x0f : 0x03)) === 0;
}

/** The claims the server reads; the reference decodes exactly these into a struct. */
interface Claims {
  sub: string;
  exp: number;
  aud: unknown;
}

const READ_CLAIMS = new Set(['sub', 'exp', 'aud']);
const U64_MAX_DIGITS = '18446744073709551615';
const UNSIGNED_INTEGER = /^(?:0|[1-9][0-9]*)$/;

/**
 * Decodes the claims as the reference's typed JSON decoding does, or returns undefined:
 * - a read claim given twice is refused (JSON.parse keeps the last `sub`, a parser the token's
 *   issuer or a gateway used may keep the first: they would disagree on the user);
 * - `exp` must be written as an unsigned integer within u64, so `5.0`, `1e10` and `2^64`, which
 *   JSON.parse turns into integral numbers, are refused like fractions and strings;
 * - the bytes must be UTF-8 without a byte order mark.
 */
function parseClaims(bytes: Uint8Array): Claims | undefined {
  let parsed: unknown;
  let members: Map<string, string> | undefined;
  try {
    // ignoreBOM keeps a leading U+FEFF in the text, where JSON.parse refuses it, as serde does.
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    parsed = JSON.parse(text);
    // Inside the try: whatever the scan meets, a bad token is a 401, never a 500.
    if (isJsonObject(parsed)) members = topLevelMembers(text);
  } catch {
    return undefined;
  }
  if (members === undefined) return undefined;
  const { sub, aud } = parsed as Record<string, unknown>;
  const expText = members.get('exp');
  if (typeof sub !== 'string' || expText === undefined || !UNSIGNED_INTEGER.test(expText)) return undefined;
  if (expText.length > U64_MAX_DIGITS.length || (expText.length === U64_MAX_DIGITS.length && expText > U64_MAX_DIGITS)) return undefined;
  // Beyond 2^53 the number is rounded, which only matters for dates far past any clock.
  return { sub, exp: Number(expText), aud };
}

/**
 * The source text of each read claim of a JSON object that JSON.parse has already accepted, or
 * undefined when one appears twice (member names compared after unescaping, so `"\u0073ub"` is
 * `sub`). One pass over the text; nested values are skipped, not parsed.
 */
function topLevelMembers(text: string): Map<string, string> | undefined {
  const members = new Map<string, string>();
  let i = skipSpace(text, text.indexOf('{') + 1);
  while (text[i] === '"') {
    const nameEnd = stringEnd(text, i);
    const raw = text.slice(i, nameEnd);
    const name = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
    const valueStart = skipSpace(text, skipSpace(text, nameEnd) + 1);
    const valueEnd = jsonValueEnd(text, valueStart);
    if (READ_CLAIMS.has(name)) {
      if (members.has(name)) return undefined;
      members.set(name, text.slice(valueStart, valueEnd));
    }
    i = skipSpace(text, valueEnd);
    if (text[i] === ',') i = skipSpace(text, i + 1);
  }
  return members;
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  return i;
}

/** The index just past the string literal starting at `start` (a `"`). */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
  return i + 1;
}

/** The index just past the JSON value starting at `start`. */
function jsonValueEnd(text: string, start: number): number {
  const first = text[start];
  if (first === '"') return stringEnd(text, start);
  if (first !== '{' && first !== '[') {
    let i = start;
    while (i < text.length && !',}] \t\n\r'.includes(text[i])) i++;
    return i;
  }
  let depth = 0;
  let i = start;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      i = stringEnd(text, i);
      continue;
    }
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return i + 1;
    }
    i++;
  }
  return i;
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
  /** Set when the key came from an X.509 certificate. */
  private readonly certificateValidity?: CertificateValidity;

  /** When the certificate the key came from expires (tokens are refused after it); undefined for a bare key or a JWKS. */
  get certificateExpiresAt(): Date | undefined {
    return this.certificateValidity && new Date(this.certificateValidity.notAfterMs);
  }

  constructor(options: JwtAuthorizerOptions) {
    this.now = options.now ?? unixNow;
    if (options.publicKeyPem !== undefined) {
      const { key, validity } = readRsaPublicKeyPem(options.publicKeyPem, this.now());
      this.key = key;
      this.certificateValidity = validity;
    } else if (options.jwks !== undefined) {
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
  }

  async authorize(headers: IncomingHttpHeaders): Promise<string> {
    const header = authorizationHeader(headers);
    if (header === undefined) throw new AuthError('Authorization header not found.');
    if (!header.startsWith(BEARER_PREFIX)) throw new AuthError('Invalid token format.');
    const token = header.slice(BEARER_PREFIX.length);
    const parts = threeParts(token);
    if (parts === undefined) throw new AuthError('Token does not have three parts');
    const [headerPart, claimsPart, signaturePart] = parts;
    // jose decodes leniently (padding, whitespace, unused trailing bits: atob's rules), so one
    // signed token would have many spellings that all verify, and a denylist or log keyed by the
    // token string would miss them. The reference's decoder accepts only the canonical form.
    if (!isCanonicalBase64url(headerPart)) throw new AuthError('Header base64 decode failed');
    if (!isCanonicalBase64url(signaturePart)) throw new AuthError('Signature base64 decode failed');
    // A server that started while its certificate was valid must not go on trusting the key
    // after the certificate expires (a restart would refuse it).
    if (this.certificateValidity && validityProblem(this.certificateValidity, this.now()) !== undefined) {
      throw new AuthError("The server's JWT verification certificate is not valid at this time");
    }
    try {
      await this.verify(token);
    } catch {
      throw new AuthError('RSA verification failed');
    }
    // The claims are decoded from the signed text here rather than taken from jose: jose honours
    // a `"b64": false` header and would hand back the part unencoded, which the reference refuses.
    if (!isCanonicalBase64url(claimsPart)) throw new AuthError('Claims base64 decode failed');
    const claims = parseClaims(Buffer.from(claimsPart, 'base64url'));
    if (claims === undefined) throw new AuthError('Claims json decode failed');
    const { sub, exp, aud } = claims;
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
