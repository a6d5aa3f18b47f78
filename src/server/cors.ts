/**
 * CORS for browser wallets: only origins on the allow-list get CORS headers, and preflight
 * requests are answered without touching authentication or storage.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PROTOCOL_VERSION_HEADER } from '../protocol/index.js';

export interface CorsOptions {
  /** Exact origins (`https://wallet.example`), or `*` for any origin. */
  origins: readonly string[];
  /** Preflight cache lifetime in seconds. */
  maxAgeSeconds?: number;
}

export class CorsPolicy {
  private readonly anyOrigin: boolean;
  private readonly origins: Set<string>;

  constructor(private readonly options: CorsOptions) {
    this.anyOrigin = options.origins.includes('*');
    this.origins = new Set(options.origins.map((origin) => origin.replace(/\/+$/, '')));
  }

  /**
   * Adds CORS headers for an allowed origin. Returns true when the request was a preflight
   * and has been answered.
   */
  apply(req: IncomingMessage, res: ServerResponse): boolean {
    const origin = req.headers.origin;
    res.appendHeader('Vary', 'Origin');
    if (typeof origin !== 'string' || !(this.anyOrigin || this.origins.has(origin))) return false;
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
    if (req.method !== 'OPTIONS' || req.headers['access-control-request-method'] === undefined) return false;
    res.setHeader('Access-Control-Allow-Methods', 'POST, GET, OPTIONS');
    // The client sends whatever headers its provider adds (an API key for a gateway, a custom
    // auth scheme), so an allowed origin may send any header it asks for, not just these two.
    res.setHeader('Access-Control-Allow-Headers', allowedHeaders(req.headers['access-control-request-headers']));
    res.appendHeader('Vary', 'Access-Control-Request-Headers');
    res.setHeader('Access-Control-Max-Age', String(this.options.maxAgeSeconds ?? 600));
    res.statusCode = 204;
    res.end();
    return true;
  }

  /**
   * CORS headers for an answer to a request Node could not parse (400, 431, 408), whose Origin
   * is unknown: only a policy open to any origin can allow it (`*`: VSS requests carry no
   * cookies, so a browser accepts it). Otherwise none, and the browser reports a network error.
   */
  headersForUnknownOrigin(): Record<string, string> {
    return this.anyOrigin ? { 'access-control-allow-origin': '*', 'access-control-expose-headers': EXPOSED_HEADERS } : {};
  }
}

const EXPOSED_HEADERS = `${PROTOCOL_VERSION_HEADER}, retry-after`;

const BASE_ALLOWED_HEADERS = ['authorization', 'content-type'];
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The preflight's requested header names (well-formed ones) plus the two the protocol uses. */
function allowedHeaders(requested: string | undefined): string {
  const names = new Set(BASE_ALLOWED_HEADERS);
  for (const name of (requested ?? '').split(',')) {
    const trimmed = name.trim().toLowerCase();
    if (HEADER_NAME.test(trimmed)) names.add(trimmed);
  }
  return [...names].join(', ');
}

/** Schemes of browser-extension pages, whose origins URL cannot serialize (see parseCorsOrigins). */
const EXTENSION_SCHEMES = new Set(['chrome-extension:', 'moz-extension:', 'safari-web-extension:']);

/** Parses VSS_CORS_ORIGINS: a comma-separated list of origins, or `*`. */
export function parseCorsOrigins(text: string): string[] {
  const origins = text
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin.length > 0);
  if (origins.length === 0) throw new RangeError('no origins given');
  return origins.map((origin) => {
    if (origin === '*') return origin;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      throw new RangeError(`"${origin}" is not an origin such as https://wallet.example`);
    }
    const plain = url.search === '' && url.hash === '' && url.username === '' && url.password === '';
    if (EXTENSION_SCHEMES.has(url.protocol) && plain && url.host !== '' && url.port === '' && (url.pathname === '' || url.pathname === '/')) {
      // A browser-extension wallet: its pages send `Origin: chrome-extension://<id>`, which URL
      // serializes as an opaque origin ("null"), so it is kept in the form the browser sends.
      return `${url.protocol}//${url.host}`;
    }
    const bare = url.origin !== 'null' && url.pathname === '/' && plain;
    if (!bare) throw new RangeError(`"${origin}" is not a bare origin (scheme://host[:port])`);
    // Browsers send the serialized form (lowercase host, no default port), which is what matches.
    return url.origin;
  });
}
