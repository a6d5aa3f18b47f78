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
    res.setHeader('Access-Control-Expose-Headers', `${PROTOCOL_VERSION_HEADER}, retry-after`);
    if (req.method !== 'OPTIONS' || req.headers['access-control-request-method'] === undefined) return false;
    res.setHeader('Access-Control-Allow-Methods', 'POST, GET, OPTIONS');
    res.setHeader('Access-Control-Allow-Headers', 'authorization, content-type');
    res.setHeader('Access-Control-Max-Age', String(this.options.maxAgeSeconds ?? 600));
    res.statusCode = 204;
    res.end();
    return true;
  }
}

/** Parses VSS_CORS_ORIGINS: a comma-separated list of origins, or `*`. */
export function parseCorsOrigins(text: string): string[] {
  const origins = text
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin.length > 0);
  for (const origin of origins) {
    if (origin === '*') continue;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      throw new RangeError(`"${origin}" is not an origin such as https://wallet.example`);
    }
    if (url.origin !== origin.replace(/\/+$/, '')) throw new RangeError(`"${origin}" is not a bare origin (scheme://host[:port])`);
  }
  if (origins.length === 0) throw new RangeError('no origins given');
  return origins;
}
