import { base64urlnopad } from '@scure/base';
import type { HDKey } from '@scure/bip32';
import { parseExtendedPrivateKey, signLnurl } from '../crypto/index.js';
import { checkHeaders, HeaderProviderError, withHeader, type VssHeaderProvider } from './headers.js';
import { checkTimeoutMs, fetchWithDeadline, readBodyCapped, type FetchFunction } from './http.js';

/** A cached token is refreshed this long before its `exp`. */
export const JWT_EXPIRY_MARGIN_MS = 60_000;
const LNURL_TIMEOUT_MS = 10_000;
const LNURL_BODY_CAP = 16 * 1024 * 1024;

export interface LnurlAuthJwtProviderOptions {
  fetch?: FetchFunction;
  /** Timeout of each of the two LNURL requests (default 10 s). */
  timeoutMs?: number;
  /** Wall clock in milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

interface CachedJwt {
  token: string;
  /** Milliseconds since the epoch, or undefined for a token without `exp` (never expires). */
  expiresAt: number | undefined;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Reads `exp` from an (unverified) JWT, as the reference does: 3 base64url parts, JSON payload. */
export function parseJwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) throw new HeaderProviderError('invalid-data', `invalid JWT token: expected 3 parts, got ${parts.length}`);
  let payload: unknown;
  try {
    const decoded = parts.map((part) => base64urlnopad.decode(part));
    payload = JSON.parse(strictUtf8.decode(decoded[1]));
  } catch (cause) {
    throw new HeaderProviderError('invalid-data', 'invalid JWT token: parts are not unpadded base64url or the payload is not JSON', { cause });
  }
  if (typeof payload !== 'object' || payload === null) throw new HeaderProviderError('invalid-data', 'invalid JWT token: payload is not a JSON object');
  const exp = (payload as { exp?: unknown }).exp;
  if (exp === undefined || exp === null) return undefined;
  if (typeof exp !== 'number' || !Number.isSafeInteger(exp) || exp < 0) {
    throw new HeaderProviderError('invalid-data', `invalid JWT token: exp must be a non-negative integer, got ${JSON.stringify(exp)}`);
  }
  return exp * 1000;
}

/**
 * LNURL-auth → JWT, compatible with the reference's LnurlAuthToJwtProvider: GET the
 * challenge URL, sign it with the LUD-05 linking key for its domain, GET the signed URL, and
 * send the returned JWT as `Authorization: Bearer <jwt>` until 60 s before its `exp`.
 *
 * Beyond the reference: concurrent callers share one in-flight fetch (single-flight), and a
 * token the server rejects with AUTH_EXCEPTION is dropped so the next attempt fetches anew.
 */
export class LnurlAuthJwtProvider implements VssHeaderProvider {
  readonly #parentKey: HDKey;
  readonly #url: string;
  readonly #defaults: Readonly<Record<string, string>>;
  readonly #fetch: FetchFunction;
  readonly #timeoutMs: number;
  readonly #now: () => number;
  #cached: CachedJwt | undefined;
  #inFlight: Promise<CachedJwt> | undefined;
  /** Number of LNURL round trips made so far (observability; tests). */
  fetchCount = 0;

  /** `parentKey`: an HDKey or an extended private key string (ldk-node passes m/877'/138'). */
  constructor(parentKey: HDKey | string, url: string, defaultHeaders: Record<string, string> = {}, options: LnurlAuthJwtProviderOptions = {}) {
    this.#parentKey = typeof parentKey === 'string' ? parseExtendedPrivateKey(parentKey) : parentKey;
    if (!this.#parentKey.privateKey) throw new HeaderProviderError('invalid-data', 'LNURL parent key must be a private key');
    checkHeaders(defaultHeaders, 'LNURL-auth default headers');
    this.#url = url;
    this.#defaults = { ...defaultHeaders };
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#timeoutMs = checkTimeoutMs('LNURL timeoutMs', options.timeoutMs ?? LNURL_TIMEOUT_MS);
    this.#now = options.now ?? Date.now;
  }

  async getHeaders(): Promise<Record<string, string>> {
    const jwt = await this.#token();
    return withHeader(this.#defaults, 'Authorization', `Bearer ${jwt.token}`);
  }

  onAuthError(rejectedHeaders: Readonly<Record<string, string>>): void {
    const cached = this.#cached;
    // Only drop the token that was actually rejected; a newer one may already be cached.
    if (cached && Object.values(rejectedHeaders).includes(`Bearer ${cached.token}`)) this.#cached = undefined;
  }

  /** Drops the cached token; the next call fetches a new one. */
  invalidate(): void {
    this.#cached = undefined;
  }

  async #token(): Promise<CachedJwt> {
    const cached = this.#cached;
    if (cached && (cached.expiresAt === undefined || this.#now() + JWT_EXPIRY_MARGIN_MS <= cached.expiresAt)) return cached;
    if (!this.#inFlight) {
      this.#inFlight = this.#fetchToken().finally(() => {
        this.#inFlight = undefined;
      });
    }
    return this.#inFlight;
  }

  async #fetchToken(): Promise<CachedJwt> {
    this.fetchCount += 1;
    const first = await this.#get(this.#url);
    const challenge = strictText(first.body, `LNURL response is not valid UTF-8${replyContext(first.status)}`);
    let signedUrl: string;
    try {
      signedUrl = signLnurl(this.#parentKey, challenge);
    } catch (cause) {
      // The crypto layer's messages already start with "invalid lnurl: ".
      const detail = String((cause as Error)?.message ?? cause).replace(/^invalid lnurl: /, '');
      throw new HeaderProviderError('invalid-data', `invalid lnurl: ${detail}${replyContext(first.status, challenge)}`, { cause });
    }
    // The LUD-05 parser takes the host as written, so it accepts URLs fetch refuses (a space in
    // the host, say). fetch's error would quote the signed URL, a credential until k1 expires;
    // checking with the same WHATWG parser first keeps it out of the message.
    // (`new URL`, not `URL.canParse`, which older browsers and React Native lack.)
    try {
      new URL(signedUrl);
    } catch {
      throw new HeaderProviderError('invalid-data', `invalid lnurl: the challenge is not a URL that can be requested${replyContext(first.status)}`);
    }
    const second = await this.#get(signedUrl);
    const body = strictText(second.body, `LNURL Auth response is not valid UTF-8${replyContext(second.status)}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch (cause) {
      throw new HeaderProviderError('invalid-data', `Failed to parse LNURL Auth response as JSON${replyContext(second.status)}`, { cause });
    }
    const { token, reason } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as { token?: unknown; reason?: unknown };
    if (typeof token === 'string') {
      // Fetched tokens are used even if already expired (once), as the reference does.
      const jwt = { token, expiresAt: parseJwtExpiry(token) };
      this.#cached = jwt;
      return jwt;
    }
    if (typeof reason === 'string') throw new HeaderProviderError('authorization', `LNURL Auth failed, reason is: ${reason}`);
    throw new HeaderProviderError('invalid-data', `LNURL Auth response did not contain a token nor an error${replyContext(second.status)}`);
  }

  /**
   * GET with the default headers. The status does not decide the outcome (the body does, like
   * the reference), but it is returned so errors can name it.
   */
  async #get(url: string): Promise<{ status: number; body: Uint8Array }> {
    try {
      return await fetchWithDeadline(this.#fetch, url, { method: 'GET', headers: { ...this.#defaults } }, this.#timeoutMs, async (response) => ({
        status: response.status,
        body: await readBodyCapped(response, LNURL_BODY_CAP),
      }));
    } catch (cause) {
      throw new HeaderProviderError('request', `error performing LNURL request: ${(cause as Error).message}`, { cause });
    }
  }
}

/**
 * What an unusable LNURL reply said, for the error message: its status when not 2xx, and the
 * `reason` of an LUD-style `{"status":"ERROR","reason":…}` body. A 503 from a proxy or a
 * refusal to hand out a challenge otherwise reads as a mere "invalid lnurl".
 */
function replyContext(status: number, body?: string): string {
  const parts: string[] = [];
  if (status < 200 || status > 299) parts.push(`HTTP ${status}`);
  if (body !== undefined) {
    try {
      const reason = (JSON.parse(body) as { reason?: unknown } | null)?.reason;
      if (typeof reason === 'string') parts.push(`reason: ${reason}`);
    } catch {
      // Not JSON: nothing more to report.
    }
  }
  return parts.length === 0 ? '' : ` (the LNURL server answered ${parts.join(', ')})`;
}

function strictText(bytes: Uint8Array, message: string): string {
  try {
    return strictUtf8.decode(bytes);
  } catch (cause) {
    throw new HeaderProviderError('invalid-data', message, { cause });
  }
}
