import type { Authorizer } from './types.js';

/** The user token every request gets from the noop authorizer (same as the reference). */
export const NOOP_USER_TOKEN = 'unauth-user';

/**
 * Accepts every request as the single user `unauth-user`: all clients share one keyspace and
 * are told apart only by store_id. For local development and tests only.
 */
export class NoopAuthorizer implements Authorizer {
  readonly kind = 'noop';
  async authorize(): Promise<string> {
    return NOOP_USER_TOKEN;
  }
}
