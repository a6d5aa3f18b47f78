import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sigsAuthorizationValue } from '../crypto/index.js';
import { isUint8Array } from '../protocol/bytes.js';
import { checkHeaders, HeaderProviderError, withHeader, type VssHeaderProvider } from './headers.js';

export interface SigsAuthProviderOptions {
  /** Wall clock in milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

/**
 * Proves knowledge of a secp256k1 key to vss-server's signature authorizer: every attempt
 * gets `Authorization: <pubkey hex><sig hex><unix seconds>` with a fresh timestamp. The
 * server uses the public key as the user token, so the key decides whose data this is.
 */
export class SigsAuthProvider implements VssHeaderProvider {
  readonly #secretKey: Uint8Array;
  readonly #defaults: Readonly<Record<string, string>>;
  readonly #now: () => number;

  constructor(secretKey: Uint8Array, defaultHeaders: Record<string, string> = {}, options: SigsAuthProviderOptions = {}) {
    if (!isUint8Array(secretKey) || !secp256k1.utils.isValidSecretKey(secretKey)) {
      throw new HeaderProviderError('invalid-data', 'sigs-auth secret key is not a valid secp256k1 secret key');
    }
    checkHeaders(defaultHeaders, 'sigs-auth default headers');
    // A copy, so a caller that wipes its key buffer afterwards does not wipe ours. Not `slice()`:
    // on a Node Buffer (what many seed libraries return) it is a view of the same memory.
    this.#secretKey = new Uint8Array(secretKey);
    this.#defaults = { ...defaultHeaders };
    this.#now = options.now ?? Date.now;
  }

  async getHeaders(): Promise<Record<string, string>> {
    const seconds = Math.floor(this.#now() / 1000);
    return withHeader(this.#defaults, 'Authorization', sigsAuthorizationValue(this.#secretKey, seconds));
  }
}
