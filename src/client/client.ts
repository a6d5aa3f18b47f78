import type protobuf from 'protobufjs/minimal.js';
import {
  hasLoneSurrogate,
  INT64_MAX,
  INT64_MIN,
  keyValueSizeBound,
  presizedWriter,
  PROTOCOL_VERSION,
  PROTOCOL_VERSION_HEADER,
  strictReader,
  VSS_PATHS,
  vss,
  type VssOperation,
} from '../protocol/index.js';
import { isUint8Array } from '../protocol/bytes.js';
import {
  AuthError,
  errorFromResponse,
  errorProvesNotApplied,
  InternalServerError,
  InvalidRequestError,
  VersionMismatchError,
  VssClientError,
  VssError,
} from './errors.js';
import { checkHeaders, FixedHeaders, HeaderProviderError, type VssHeaderProvider } from './headers.js';
import {
  checkTimeoutMs,
  describeBody,
  discardBody,
  fetchWithDeadline,
  parseRetryAfter,
  readBodyCapped,
  urlForMessages,
  type FetchFunction,
  type FetchResponse,
} from './http.js';
import { defaultRetryPolicy, retry, timerSleep, type RetryPolicy, type Sleep } from './retry.js';

/** Per-attempt timeout when none is configured (the reference's 10 s). */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Largest response body accepted (the reference's 1 GiB). */
export const MAX_RESPONSE_BYTES = 1024 * 1024 * 1024;

export interface VssClientOptions {
  /** Credentials per attempt; default: no headers. */
  headerProvider?: VssHeaderProvider;
  /** Default: `defaultRetryPolicy()` (LDK Node's schedule, permanent errors not retried). */
  retryPolicy?: RetryPolicy;
  /** Deadline of one HTTP attempt, covering connect, send and the whole response (default 10 s). */
  timeoutMs?: number;
  /**
   * The fetch implementation. Default: `globalThis.fetch`, which in Node (undici) keeps
   * connections alive and reuses them per origin; browsers and React Native do the same.
   */
  fetch?: FetchFunction;
  /** How retries wait; inject to drive retries from fake timers or count delays in tests. */
  sleep?: Sleep;
  /**
   * Accept replies without the `vss-protocol-version` header (servers older than
   * vss-server 0.1.0-alpha.0). A header with another value is still rejected.
   */
  allowMissingProtocolVersion?: boolean;
  /** Observability hook, called before each retry sleep. */
  onRetry?: (info: { operation: VssOperation; attemptsMade: number; delayMs: number; error: unknown }) => void;
}

/** Per-call options. */
export interface VssCallOptions {
  /** Aborts the call (and any pending retry sleep): rejects with VssClientError('aborted'). */
  signal?: AbortSignal;
  /** Overrides the client's retry policy for this call. */
  retryPolicy?: RetryPolicy;
}

/** Upper bound of a PutObjectRequest's encoded size (store id, global version, every item); undefined for other operations. */
function putSizeBound(operation: VssOperation, request: unknown): number | undefined {
  if (operation !== 'putObjects') return undefined;
  const put = request as vss.PutObjectRequest.$Properties;
  let bound = 1 + 5 + 3 * (put.storeId?.length ?? 0) + (1 + 10);
  for (const item of put.transactionItems ?? []) bound += keyValueSizeBound(item);
  for (const item of put.deleteItems ?? []) bound += keyValueSizeBound(item);
  return bound;
}

interface MessageType<Req, Res> {
  encode(message: Req, writer?: protobuf.Writer): { finish(shared?: boolean): Uint8Array };
  decode(reader: protobuf.Reader | Uint8Array): Res;
}

/**
 * Client for a VSS server, wire-compatible with vss-client-ng: protobuf bodies POSTed to
 * `<baseUrl>/<operation>` (the base URL is used verbatim, as the reference does), retried
 * per the retry policy, with fresh headers from the header provider on every attempt.
 */
/**
 * Refuses a base URL no request could be sent to. With the built-in transports a user name or
 * password in it is refused here, by name and without quoting it: they refuse such a URL on every
 * request (a network error, retried for the whole budget) with an error that quotes the whole
 * URL, password included. A caller's own fetch may know what to do with one.
 */
function checkBaseUrl(baseUrl: unknown, builtInTransport: boolean): asserts baseUrl is string {
  // Quoted only when it cannot hold a password ("user:password@host/vss" without its scheme).
  const shown = (value: unknown) => (typeof value === 'string' && value.includes('@') ? 'a string with an @ (not shown: it may hold a password)' : JSON.stringify(value));
  let parsed: URL | undefined;
  try {
    parsed = typeof baseUrl === 'string' && /^https?:\/\//i.test(baseUrl) ? new URL(baseUrl) : undefined;
  } catch {
    parsed = undefined;
  }
  if (parsed === undefined) throw new TypeError(`VSS base URL must be an http(s) URL, got ${shown(baseUrl)}`);
  if (builtInTransport && (parsed.username !== '' || parsed.password !== '')) {
    throw new TypeError(
      `VSS base URL ${urlForMessages(parsed.href)} holds a user name or password (not shown), which fetch refuses to send: pass credentials as a header instead (an Authorization header through the header provider)`,
    );
  }
}

export class VssClient {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly #headerProvider: VssHeaderProvider;
  readonly #retryPolicy: RetryPolicy;
  readonly #fetch: FetchFunction;
  readonly #sleep: Sleep;
  readonly #allowMissingProtocolVersion: boolean;
  readonly #onRetry: VssClientOptions['onRetry'];

  constructor(baseUrl: string, options: VssClientOptions = {}) {
    checkBaseUrl(baseUrl, options.fetch === undefined);
    const timeoutMs = checkTimeoutMs('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    this.baseUrl = baseUrl;
    this.timeoutMs = timeoutMs;
    this.#headerProvider = options.headerProvider ?? new FixedHeaders();
    this.#retryPolicy = options.retryPolicy ?? defaultRetryPolicy();
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#sleep = options.sleep ?? timerSleep;
    this.#allowMissingProtocolVersion = options.allowMissingProtocolVersion ?? false;
    this.#onRetry = options.onRetry;
  }

  /**
   * Reads one key. Rejects with NoSuchKeyError if it does not exist. A 2xx reply without a
   * value is an API violation (InternalServerError, retried like the reference does).
   */
  async getObject(request: vss.GetObjectRequest.$Properties, options?: VssCallOptions): Promise<vss.GetObjectResponse> {
    return this.#call('getObject', vss.GetObjectRequest, vss.GetObjectResponse, request, options, (response) => {
      if (!response.value) {
        throw new InternalServerError('VSS Server API Violation, expected value in GetObjectResponse but found none');
      }
    });
  }

  /**
   * Writes and deletes atomically. With conditional versions, a ConflictError whose
   * `afterAmbiguousAttempt` is true may be caused by this call's own earlier attempt having
   * committed: read the keys back to decide.
   */
  async putObjects(request: vss.PutObjectRequest.$Properties, options?: VssCallOptions): Promise<vss.PutObjectResponse> {
    return this.#call('putObjects', vss.PutObjectRequest, vss.PutObjectResponse, request, options);
  }

  /** Deletes one key (idempotent on the server: deleting a missing key succeeds). */
  async deleteObject(request: vss.DeleteObjectRequest.$Properties, options?: VssCallOptions): Promise<vss.DeleteObjectResponse> {
    return this.#call('deleteObject', vss.DeleteObjectRequest, vss.DeleteObjectResponse, request, options);
  }

  /** One page of key versions; follow `nextPageToken` until it is absent or empty. */
  async listKeyVersions(request: vss.ListKeyVersionsRequest.$Properties, options?: VssCallOptions): Promise<vss.ListKeyVersionsResponse> {
    return this.#call('listKeyVersions', vss.ListKeyVersionsRequest, vss.ListKeyVersionsResponse, request, options);
  }

  async #call<Req, Res>(
    operation: VssOperation,
    requestType: MessageType<Req, unknown>,
    responseType: MessageType<unknown, Res>,
    request: Req,
    options: VssCallOptions = {},
    check?: (response: Res) => void,
  ): Promise<Res> {
    refuseUnencodable(request, operation);
    const bound = putSizeBound(operation, request);
    // A PutObjects carries values: written into one buffer of its bound, it is not grown, doubled
    // for the nested length prefixes and copied again (four value-sized buffers at once).
    const body = bound === undefined ? requestType.encode(request).finish() : requestType.encode(request, presizedWriter(bound)).finish(true);
    const url = `${this.baseUrl}${VSS_PATHS[operation]}`;
    const isWrite = operation === 'putObjects' || operation === 'deleteObject';
    let outcomeUnknown = false;
    const attempt = async (): Promise<Res> => {
      try {
        const response = await this.#attempt(url, body, responseType, options.signal);
        check?.(response);
        return response;
      } catch (error) {
        if (error instanceof VssError && isWrite) error.afterAmbiguousAttempt = outcomeUnknown;
        if (!errorProvesNotApplied(error)) outcomeUnknown = true;
        throw error;
      }
    };
    try {
      return await retry(attempt, options.retryPolicy ?? this.#retryPolicy, {
        sleep: this.#sleep,
        signal: options.signal,
        onRetry: this.#onRetry && ((info) => this.#onRetry?.({ operation, ...info })),
      });
    } catch (error) {
      // An attempt's error, or a RetryHookError (a caller's policy, onRetry or sleep threw; it
      // keeps the attempt's error and its afterAmbiguousAttempt).
      if (error instanceof VssError) throw error;
      // Attempts throw VssError only: this is an aborted retry sleep, or a policy's delay that
      // is not a delay (RangeError, the attempt's error as its cause).
      if (!options.signal?.aborted) throw error;
      const aborted = new VssClientError('aborted', `${operation} aborted by the caller`, { cause: error });
      aborted.afterAmbiguousAttempt = isWrite && outcomeUnknown;
      throw aborted;
    }
  }

  async #attempt<Res>(url: string, body: Uint8Array, responseType: MessageType<unknown, Res>, signal: AbortSignal | undefined): Promise<Res> {
    const aborted = () => new VssClientError('aborted', `request to ${urlForMessages(url)} aborted by the caller`, { cause: signal?.reason });
    if (signal?.aborted) throw aborted();
    let providerHeaders: Record<string, string>;
    try {
      // Promise.resolve: a provider that answers synchronously must behave the same with a signal.
      // Bounded by the attempt's timeout: a hung token service must fail the attempt (retried,
      // nothing sent) rather than hang the call forever.
      providerHeaders = await untilSettled(Promise.resolve(this.#headerProvider.getHeaders(body)), signal, this.timeoutMs);
      // Checked here, not left to fetch: fetch's refusal would read as a network failure after
      // which a write's outcome is unknown, although nothing was sent.
      checkHeaders(providerHeaders, 'the header provider returned unusable headers');
    } catch (cause) {
      if (cause === ABORTED) throw aborted();
      throw new AuthError((cause as Error)?.message ?? String(cause), { cause, fromHeaderProvider: true });
    }
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...providerHeaders };
    try {
      return await fetchWithDeadline(
        this.#fetch,
        url,
        // Never follow redirects: fetch turns a POST answered with 301/302/303 into a GET without
        // its body, which a VSS server takes for an empty request (a put of nothing succeeds, a
        // listing comes back empty), so a write would be reported done that never happened.
        { method: 'POST', headers, body: body as BodyInit, redirect: 'manual' },
        this.timeoutMs,
        (response) => this.#interpret(url, response, responseType),
        signal,
      );
    } catch (error) {
      if (error instanceof AuthError && !error.fromHeaderProvider) this.#headerProvider.onAuthError?.(providerHeaders);
      throw error;
    }
  }

  async #interpret<Res>(url: string, response: FetchResponse, responseType: MessageType<unknown, Res>): Promise<Res> {
    // A redirect is refused before the version gate: a proxy's 301 never carries the protocol
    // header, and "moved" is what the user needs to hear, not "wrong protocol".
    await refuseRedirect(url, response);
    // A rate-limited (429) or unavailable (503, any 5xx) reply may say when to come back: the
    // retry loop must not spend its budget on attempts the server has announced it will refuse.
    // Read for whatever error this reply becomes, a proxy's page without the protocol header too.
    const retryAfterMs =
      response.status === 429 || response.status >= 500
        ? parseRetryAfter(response.headers.get('retry-after'), response.headers.get('date'), Date.now())
        : undefined;
    if (retryAfterMs === undefined) return this.#interpretReply(response, responseType);
    try {
      return await this.#interpretReply(response, responseType);
    } catch (error) {
      if (error instanceof VssError) error.retryAfterMs = retryAfterMs;
      throw error;
    }
  }

  async #interpretReply<Res>(response: FetchResponse, responseType: MessageType<unknown, Res>): Promise<Res> {
    // The version gate comes first and applies to error replies too (spec §A1 step 5).
    const served = response.headers.get(PROTOCOL_VERSION_HEADER);
    if (!servesProtocolVersion(served) && !(served === null && this.#allowMissingProtocolVersion)) {
      await discardBody(response);
      // The content-type tells a captive portal's or a proxy's HTML page from an old VSS server.
      throw new VersionMismatchError(served ?? undefined, { status: response.status, contentType: response.headers.get('content-type') ?? undefined });
    }
    const bytes = await readBodyCapped(response, MAX_RESPONSE_BYTES);
    // Computed only on failure: it quotes the body, which a decode error alone does not show.
    const body = () => describeBody(response.headers.get('content-type'), bytes);
    // Replies are read as the reference (prost) and our server read them: a varint longer than
    // 10 bytes or wider than 64 bits is refused, not cut to another value (a version, say).
    if (response.status >= 200 && response.status <= 299) {
      try {
        return responseType.decode(strictReader(bytes));
      } catch (cause) {
        throw new VssClientError('decode', `undecodable ${response.status} response (${body()}): ${(cause as Error).message}`, { status: response.status, cause });
      }
    }
    let errorResponse: vss.ErrorResponse;
    try {
      errorResponse = vss.ErrorResponse.decode(strictReader(bytes));
    } catch (cause) {
      throw new VssClientError(
        'decode',
        `Unable to decode ErrorResponse from server, HttpStatusCode: ${response.status}, DecodeErr: ${(cause as Error).message} (${body()})`,
        { status: response.status, cause },
      );
    }
    throw errorFromResponse(errorResponse, response.status, body);
  }
}

/**
 * Whether the protocol header names our version. A repeated header reaches us joined as
 * "0, 0" (fetch and node:http both join repeats): a reverse proxy that adds the header while
 * the server behind it sends it too. The reference keeps one value and accepts that; so do
 * we, as long as every value is ours.
 */
function servesProtocolVersion(served: string | null): boolean {
  if (served === PROTOCOL_VERSION) return true;
  return served !== null && served.split(',').every((value) => value.trim() === PROTOCOL_VERSION);
}

/**
 * Throws VssClientError('redirect') for a redirect reply (3xx, or a browser's opaque redirect),
 * and for a response that a fetch reached by following a redirect anyway (one that ignores
 * `redirect: 'manual'`, such as an XMLHttpRequest-based fetch, which may not set `redirected`
 * but reports the final `url`): its method and body may not be the ones sent, so it proves nothing.
 */
async function refuseRedirect(url: string, response: FetchResponse): Promise<void> {
  const isRedirect = (response.status >= 300 && response.status <= 399) || response.type === 'opaqueredirect';
  if (!isRedirect && response.redirected !== true && !movedElsewhere(url, response.url)) return;
  await discardBody(response);
  let target: string | undefined;
  try {
    const location = isRedirect ? response.headers.get('location') : response.url;
    if (location) target = urlForMessages(new URL(location, url).href);
  } catch {
    // An unparsable Location: the status alone is reported.
  }
  const what = isRedirect
    ? `answered with a redirect (${response.status === 0 ? 'opaque' : `HTTP ${response.status}`}${target ? ` to ${target}` : ''})`
    : `was redirected by the fetch implementation${target ? ` to ${target}` : ''}`;
  throw new VssClientError(
    'redirect',
    `${urlForMessages(url)} ${what}; VSS requests do not follow redirects (a redirected POST can arrive without its body): set the base URL to the server's final address`,
    { status: response.status },
  );
}

/** Whether a response's final URL names another resource than the one requested (fragments aside). */
function movedElsewhere(requested: string, final: string | undefined): boolean {
  if (typeof final !== 'string' || final === '') return false;
  try {
    const a = new URL(requested);
    const b = new URL(final);
    a.hash = '';
    b.hash = '';
    return a.href !== b.href;
  } catch {
    // Not comparable: do not call a reply redirected on a guess.
    return false;
  }
}

const ABORTED = Symbol('aborted');

/**
 * `work`, or a rejection with ABORTED as soon as `signal` aborts, or with a HeaderProviderError
 * once `timeoutMs` passes. The work itself goes on: a header provider's login may be shared with
 * other calls, so one caller's abort or deadline must not cancel it.
 */
function untilSettled<T>(work: Promise<T>, signal: AbortSignal | undefined, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(ABORTED);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      reject(new HeaderProviderError('request', `the header provider did not supply headers within ${timeoutMs} ms (the request was not sent)`));
    }, timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    const settle = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    work.then(
      (value) => {
        settle();
        resolve(value);
      },
      (error: unknown) => {
        settle();
        reject(error);
      },
    );
  });
}

/** Fields of the VSS requests that protobufjs encodes as int64, and as bytes. */
const INT64_FIELDS = new Set(['version', 'globalVersion']);
const BYTES_FIELDS = new Set(['value']);
const DECIMAL_INT64 = /^-?\d{1,19}$/;

/**
 * Refuses, with the same InvalidRequestError the server gives and before anything is sent, a
 * request protobufjs would encode as something else than the caller meant:
 * - a string (store id, key, prefix, page token) with a lone UTF-16 surrogate, which has no UTF-8
 *   form: protobufjs would send a short one as invalid UTF-8 (the server answers 400) but a long
 *   one as U+FFFD, so two distinct keys would silently share one stored object;
 * - an int64 (`version`, `globalVersion`) given as a bigint, which protobufjs writes as 0 (a
 *   conditional write of a new key), or as a number that is not a safe integer (1.5 goes out as 1);
 * - a bytes `value` that is not a Uint8Array: protobufjs reads a string as base64 and stores its
 *   decoding, so "hello" would be stored as three other bytes. A Uint8Array of another realm (a
 *   jsdom or vm environment) is bytes: protobufjs copies it like any other.
 * The types rule these out in TypeScript; plain JavaScript callers get them wrong easily, since
 * the rest of the API (keyValue(), the store) takes versions as bigints.
 */
function refuseUnencodable(value: unknown, path: string, depth = 0, field = ''): void {
  if (INT64_FIELDS.has(field) && value !== null && value !== undefined) {
    const ok =
      (typeof value === 'number' && Number.isSafeInteger(value)) ||
      (typeof value === 'string' && DECIMAL_INT64.test(value) && BigInt(value) <= INT64_MAX && BigInt(value) >= INT64_MIN) ||
      (typeof value === 'object' && typeof (value as { low?: unknown }).low === 'number' && typeof (value as { high?: unknown }).high === 'number');
    if (!ok) {
      const got = typeof value === 'bigint' ? `the bigint ${value}n` : typeof value === 'number' ? `the number ${value}` : typeof value === 'string' ? 'a string that is not a decimal int64' : typeof value;
      throw new InvalidRequestError(`${path} must be a safe-integer number or a Long (keyValue() builds one from a bigint), got ${got}`);
    }
    return;
  }
  if (BYTES_FIELDS.has(field) && value !== null && value !== undefined) {
    if (!isUint8Array(value)) {
      throw new InvalidRequestError(`${path} must be a Uint8Array, got ${typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value}`);
    }
    return;
  }
  if (typeof value === 'string') {
    if (hasLoneSurrogate(value)) throw new InvalidRequestError(`${path} contains a lone UTF-16 surrogate, which has no UTF-8 encoding`);
  } else if (Array.isArray(value) && depth < 4) {
    value.forEach((item, i) => refuseUnencodable(item, `${path}[${i}]`, depth + 1));
  } else if (typeof value === 'object' && value !== null && !isUint8Array(value) && depth < 4) {
    for (const [name, fieldValue] of Object.entries(value)) refuseUnencodable(fieldValue, `${path}.${name}`, depth + 1, name);
  }
}
