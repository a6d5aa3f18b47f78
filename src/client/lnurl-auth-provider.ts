import { base64urlnopad } from '@scure/base';
import type { HDKey } from '@scure/bip32';
import { parseExtendedPrivateKey, parseLnurlChallenge, signLnurl } from '../crypto/index.js';
import { checkHeaders, HeaderProviderError, withHeader, type VssHeaderProvider } from './headers.js';
import { checkTimeoutMs, discardBody, fetchWithDeadline, readBodyCapped, urlForMessages, type FetchFunction, type FetchResponse } from './http.js';
import { shownServerText } from './text.js';

/** A cached token is refreshed this long before its `exp`. */
export const JWT_EXPIRY_MARGIN_MS = 60_000;
const LNURL_TIMEOUT_MS = 10_000;
const LNURL_BODY_CAP = 16 * 1024 * 1024;
/** Redirects followed per LNURL request (a login endpoint moved on its server, or to https). */
const LNURL_MAX_REDIRECTS = 5;
/** The statuses fetch follows when they carry a Location. */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** The longest server-supplied text (an LNURL `reason`, a JWT `exp`) an error message quotes. */
const QUOTED_TEXT_MAX = 200;

export interface LnurlAuthJwtProviderOptions {
  fetch?: FetchFunction;
  /** Timeout of each of the two LNURL requests, its redirects included (default 10 s). */
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
    throw new HeaderProviderError('invalid-data', `invalid JWT token: exp must be a non-negative integer, got ${shownServerText(JSON.stringify(exp), QUOTED_TEXT_MAX)}`);
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
 * Redirects are followed only within one origin (or from http to https on the same host), a
 * challenge is signed only when fetch would send it to the host its key is derived for, and
 * server-supplied text in error messages is shortened and stripped of control characters.
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
    checkLnurlUrl(url, options.fetch === undefined);
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
    let routed: URL;
    try {
      routed = new URL(signedUrl);
    } catch {
      throw new HeaderProviderError('invalid-data', `invalid lnurl: the challenge is not a URL that can be requested${replyContext(first.status)}`);
    }
    // fetch refuses a URL with a user name or password, and its error quotes the whole URL.
    if (routed.username !== '' || routed.password !== '') {
      throw new HeaderProviderError('invalid-data', `invalid lnurl: the challenge URL holds a user name or password, which fetch refuses${replyContext(first.status)}`);
    }
    if (routed.protocol !== 'https:' && routed.protocol !== 'http:') {
      throw new HeaderProviderError('invalid-data', `invalid lnurl: the challenge URL's scheme is ${shownServerText(routed.protocol, QUOTED_TEXT_MAX)}, not https or http${replyContext(first.status)}`);
    }
    // The linking key is derived for the host as LUD-05 reads the challenge; fetch contacts the
    // host as WHATWG reads it. They can differ: "https://evil.example\@good.example/…" is
    // good.example to the first and evil.example to the second (a backslash is a slash to
    // WHATWG), which would hand evil.example a login signed for good.example.
    const { domain } = parseLnurlChallenge(challenge);
    if (!isContactedHost(domain, routed)) {
      throw new HeaderProviderError(
        'invalid-data',
        `invalid lnurl: the challenge would be signed for the host ${shownServerText(domain, QUOTED_TEXT_MAX)} but sent to ${routed.hostname}${replyContext(first.status)}`,
      );
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
    if (typeof reason === 'string') throw new HeaderProviderError('authorization', `LNURL Auth failed, reason is: ${shownServerText(reason, QUOTED_TEXT_MAX)}`);
    throw new HeaderProviderError('invalid-data', `LNURL Auth response did not contain a token nor an error${replyContext(second.status)}`);
  }

  /**
   * GET with the default headers, following redirects only within the requested URL's origin
   * or from http to https on its host (see mayFollow): the signed URL (k1, sig, key) is a login
   * credential and the default headers may hold an API key, and fetch's own redirect handling
   * hands both to whatever origin a Location names (it strips only Authorization and cookies).
   * Each hop is judged against the URL it came from, so after an upgrade to https a redirect
   * back to http is a downgrade. One deadline covers the request and its redirects.
   * The status does not decide the outcome (the body does, like the reference), but it is
   * returned so errors can name it.
   */
  async #get(url: string): Promise<{ status: number; body: Uint8Array }> {
    const deadline = Date.now() + this.#timeoutMs;
    let current = url;
    for (let redirects = 0; ; redirects += 1) {
      const timeoutMs = redirects === 0 ? this.#timeoutMs : Math.max(1, deadline - Date.now());
      let reply: { status: number; body: Uint8Array } | { location: string };
      try {
        reply = await fetchWithDeadline(this.#fetch, current, { method: 'GET', headers: { ...this.#defaults }, redirect: 'manual' }, timeoutMs, async (response) => {
          const location = followableRedirect(current, response);
          if (location !== undefined) {
            await discardBody(response);
            return { location };
          }
          return { status: response.status, body: await readBodyCapped(response, LNURL_BODY_CAP) };
        });
      } catch (cause) {
        if (cause instanceof HeaderProviderError) throw cause;
        throw new HeaderProviderError('request', `error performing LNURL request: ${(cause as Error).message}`, { cause });
      }
      if (!('location' in reply)) return reply;
      if (redirects === LNURL_MAX_REDIRECTS) {
        throw new HeaderProviderError('request', `error performing LNURL request: ${urlForMessages(url)} was redirected more than ${LNURL_MAX_REDIRECTS} times`);
      }
      current = reply.location;
    }
  }
}

/**
 * Refuses, at construction, an LNURL-auth URL no request could be sent to (no http(s) scheme,
 * unparsable, or with a user name or password, which the built-in fetch refuses). Found only at
 * the first request, such a mistake is a header-provider failure, which the VSS client retries
 * for its whole retry budget (minutes by default) before reporting it.
 */
function checkLnurlUrl(url: unknown, builtInTransport: boolean): asserts url is string {
  // Not quoted when it may hold a password ("user:password@host/auth" without its scheme).
  const shown = typeof url !== 'string' ? (url === null ? 'null' : typeof url) : url.includes('@') ? 'a string with an @ (not shown: it may hold a password)' : shownServerText(JSON.stringify(url), QUOTED_TEXT_MAX);
  const parsed = typeof url === 'string' && /^https?:\/\//i.test(url) ? parsedUrl(url, url) : undefined;
  if (parsed === undefined) throw new HeaderProviderError('invalid-data', `LNURL-auth URL must be an http(s) URL, got ${shown}`);
  if (builtInTransport && (parsed.username !== '' || parsed.password !== '')) {
    throw new HeaderProviderError(
      'invalid-data',
      `LNURL-auth URL ${urlForMessages(parsed.href)} holds a user name or password (not shown), which fetch refuses to send: pass credentials as a default header instead`,
    );
  }
}

/**
 * For a redirect that mayFollow allows from `requested`, the URL to follow; for any other reply
 * that is not a redirect, undefined. Refuses any other redirect, one whose target a browser hides
 * (an opaque redirect), and a reply that a fetch ignoring `redirect: 'manual'` reached elsewhere
 * (too late for the credential, but it is not used).
 */
function followableRedirect(requested: string, response: FetchResponse): string | undefined {
  const from = new URL(requested);
  const allowed = (target: URL | undefined): target is URL => target !== undefined && mayFollow(from, target);
  const location = REDIRECT_STATUSES.has(response.status) ? response.headers.get('location') : null;
  if (location !== null) {
    const target = parsedUrl(location, requested);
    // Not to a URL with userinfo either: fetch refuses it with an error quoting the whole URL.
    if (allowed(target) && target.username === '' && target.password === '') return target.href;
    throw refusedRedirect(requested, 'answered with a redirect', target);
  }
  if (response.type === 'opaqueredirect') throw refusedRedirect(requested, 'answered with a redirect', undefined);
  if (response.redirected === true || (typeof response.url === 'string' && response.url !== '')) {
    // The fetch followed by itself: its reply is used if it ended where a redirect may lead.
    const final = response.url ? parsedUrl(response.url, requested) : undefined;
    if (!allowed(final)) throw refusedRedirect(requested, 'was redirected by the fetch implementation', final);
  }
  return undefined;
}

/**
 * Whether an LNURL request for `from` may follow a redirect to `to`: the same origin, or the same
 * host (as WHATWG normalises it: case, IPv4 and IPv6 forms) moving from http to https, on any
 * port since the default ports differ. That upgrade is the usual "always TLS" server setup: the
 * credentials go, now encrypted, to the host that just received them in clear text (and, for the
 * signed URL, that the linking key was derived for). Anything else (another host or subdomain,
 * https to http) is refused.
 */
function mayFollow(from: URL, to: URL): boolean {
  // An opaque origin ('null': data:, a custom scheme) equals nothing, not even itself.
  if (from.origin === 'null') return false;
  if (to.origin === from.origin) return true;
  return from.protocol === 'http:' && to.protocol === 'https:' && to.hostname === from.hostname;
}

function refusedRedirect(requested: string, what: string, target: URL | undefined): HeaderProviderError {
  const where = target === undefined ? 'an address the runtime does not reveal' : urlForMessages(target.href);
  return new HeaderProviderError(
    'request',
    `error performing LNURL request: ${urlForMessages(requested)} ${what} to ${where}; LNURL requests follow redirects only within ` +
      'one origin or from http to https on the same host (the signed login URL and the default headers are credentials): ' +
      "configure the LNURL server's final address",
  );
}

/**
 * Whether `url` (as fetch parses it) is sent to the LUD-05 `domain`: the same host once
 * normalized as WHATWG does (case, IPv4 and IPv6 forms), and nothing in `domain` but host characters.
 */
function isContactedHost(domain: string, url: URL): boolean {
  if (!/^[A-Za-z0-9._-]+$|^\[[0-9A-Fa-f:.]+\]$/.test(domain)) return false;
  return parsedUrl(`${url.protocol}//${domain}/`, url.href)?.hostname === url.hostname;
}

/** `text` resolved against `base`, or undefined when it is not a URL. */
function parsedUrl(text: string, base: string): URL | undefined {
  try {
    return new URL(text, base);
  } catch {
    return undefined;
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
      if (typeof reason === 'string') parts.push(`reason: ${shownServerText(reason, QUOTED_TEXT_MAX)}`);
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
