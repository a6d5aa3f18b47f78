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
