import type { IncomingHttpHeaders } from 'node:http';

/**
 * Turns a request's headers into the user token that isolates its data. Exactly one
 * authorizer is active per server, as in the reference.
 */
export interface Authorizer {
  /** 'noop', 'jwt' or 'signature'. */
  readonly kind: string;
  /** Resolves to the user token, or rejects with AuthError (answered as 401). */
  authorize(headers: IncomingHttpHeaders): Promise<string>;
}

/** The single `authorization` header value, or undefined when absent. */
export function authorizationHeader(headers: IncomingHttpHeaders): string | undefined {
  const value = headers.authorization;
  return typeof value === 'string' ? value : undefined;
}

/**
 * Whether a request carries the `authorization` header more than once. Node keeps the first of
 * repeated values and the reference effectively the last, so a proxy that adds its own
 * credential would select different users on the two servers: such a request is ambiguous and
 * refused. Scans `rawHeaders` (name, value, name, value …) without allocating; called only when
 * the header is present at all.
 */
export function hasRepeatedAuthorization(rawHeaders: readonly string[]): boolean {
  let seen = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    // Header names are case-insensitive; the length test skips every other name cheaply.
    if (name.length !== 13 || (name !== 'authorization' && name !== 'Authorization' && name.toLowerCase() !== 'authorization')) continue;
    if (seen) return true;
    seen = true;
  }
  return false;
}
