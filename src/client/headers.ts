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

/** An HTTP token (RFC 9110 §5.6.2): what fetch and node:http accept as a header name. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What node:http accepts in a value (fetch accepts a superset): no CR, LF or other controls but tab, nothing above U+00FF. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Refuses headers that fetch or node:http would refuse to send. Such a header otherwise fails
 * every attempt as a "network" error that is retried for minutes and marks a write ambiguous,
 * although nothing was sent. Values are never quoted in the message: they may be credentials.
 */
export function checkHeaders(headers: unknown, what: string): asserts headers is Record<string, string> {
  if (typeof headers !== 'object' || headers === null) {
    throw new HeaderProviderError('invalid-data', `${what}: expected an object of header names to values, got ${headers === null ? 'null' : typeof headers}`);
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!HEADER_NAME.test(name)) throw new HeaderProviderError('invalid-data', `${what}: ${JSON.stringify(name)} is not a valid HTTP header name`);
    if (typeof value !== 'string') throw new HeaderProviderError('invalid-data', `${what}: the value of header ${name} is ${value === null ? 'null' : typeof value}, not a string`);
    if (!HEADER_VALUE.test(value)) {
      throw new HeaderProviderError('invalid-data', `${what}: the value of header ${name} holds a line break, another control character or a character above U+00FF`);
    }
  }
}

/** Always the same headers (e.g. an API key, or nothing). */
export class FixedHeaders implements VssHeaderProvider {
  readonly #headers: Readonly<Record<string, string>>;
  constructor(headers: Record<string, string> = {}) {
    checkHeaders(headers, 'fixed headers');
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
