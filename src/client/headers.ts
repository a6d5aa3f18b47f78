/**
 * Header providers: where a request's credentials come from. The client asks its provider
 * once per HTTP attempt, so signatures and tokens are always fresh for that attempt.
 */

/** Supplies the headers of one HTTP attempt. */
export interface VssHeaderProvider {
  /** `requestBody` is the serialized protobuf request (available for request signing). */
  getHeaders(requestBody: Uint8Array): Promise<Record<string, string>>;
  /**
   * Called when the server rejected the headers of an attempt with AUTH_EXCEPTION, so a
   * caching provider can drop exactly that credential before the next attempt.
   */
  onAuthError?(rejectedHeaders: Readonly<Record<string, string>>): void;
}

/** Why a provider could not produce headers (mirrors the reference's VssHeaderProviderError). */
export type HeaderProviderFailure = 'invalid-data' | 'request' | 'authorization' | 'internal';

export class HeaderProviderError extends Error {
  constructor(
    readonly reason: HeaderProviderFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Always the same headers (e.g. an API key, or nothing). */
export class FixedHeaders implements VssHeaderProvider {
  readonly #headers: Readonly<Record<string, string>>;
  constructor(headers: Record<string, string> = {}) {
    this.#headers = Object.freeze({ ...headers });
  }
  async getHeaders(): Promise<Record<string, string>> {
    return { ...this.#headers };
  }
}

/**
 * Returns `defaults` plus `name: value`, replacing any entry of `defaults` whose name equals
 * `name` case-insensitively (HTTP header names are case-insensitive; two spellings of
 * Authorization must not both be sent).
 */
export function withHeader(defaults: Readonly<Record<string, string>>, name: string, value: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(defaults)) if (k.toLowerCase() !== lower) out[k] = v;
  out[name] = value;
  return out;
}
