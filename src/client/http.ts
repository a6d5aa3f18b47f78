/**
 * The little HTTP plumbing the client and the LNURL provider share: an injectable `fetch`,
 * a deadline covering the whole exchange (request AND body), and a capped body read. Only
 * web-standard APIs (fetch, AbortController, setTimeout) so it runs in browsers and React Native.
 */
import { isUint8Array, ownRealmBytes } from '../protocol/bytes.js';
import { VssClientError } from './errors.js';

/** Reads a body chunk by chunk (a web `ReadableStreamDefaultReader` fits). */
export interface FetchBodyReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
}

/** The parts of a fetch `Response` the client reads (a real `Response` has all of them). */
export interface FetchResponse {
  readonly status: number;
  /** True when the fetch followed a redirect to produce this response (fetch's `redirected`). */
  readonly redirected?: boolean;
  /**
   * The final URL (fetch's `url`). When it names another resource than the one requested, the
   * VSS client takes the response for a followed redirect and refuses it; a fetch wrapper that
   * rewrites URLs should leave it out.
   */
  readonly url?: string;
  /** fetch's response type: a browser's `redirect: 'manual'` yields `opaqueredirect` (status 0). */
  readonly type?: string;
  readonly headers: { get(name: string): string | null };
  arrayBuffer(): Promise<ArrayBuffer>;
  /**
   * How the body is read: with `getReader` (a web stream) or, failing that, as an async iterable
   * of byte chunks (a Node.js Readable, as node-fetch returns), chunk by chunk, refused as soon as
   * it passes the size limit. A response with neither (React Native's XMLHttpRequest-based fetch,
   * which has received the whole body before it resolves) is read whole with `arrayBuffer()`, then
   * checked. `cancel` (or a Readable's `destroy`) releases a body that will not be read.
   */
  readonly body?: FetchResponseBody | null;
}

/** A response body as `readBodyCapped` can use it; see `FetchResponse.body`. */
export interface FetchResponseBody {
  cancel?(): Promise<void>;
  getReader?(): FetchBodyReader;
  [Symbol.asyncIterator]?(): AsyncIterator<unknown>;
  /** A Node.js Readable's way to release itself (it has no `cancel`). */
  destroy?(error?: Error): unknown;
}

/**
 * The subset of `fetch` the client uses; inject your own (custom agent, proxy, tests, or
 * `nodeHttpFetch()` in Node). `globalThis.fetch` fits.
 */
export type FetchFunction = (input: string, init: RequestInit) => Promise<FetchResponse>;

/** The longest delay `setTimeout` honours (a longer one fires after about 1 ms). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Validates a per-request deadline option: a positive number of ms that a timer can wait. */
export function checkTimeoutMs(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMEOUT_MS) {
    throw new RangeError(`${name} must be a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS} (about 24.8 days), got ${value}`);
  }
  return value;
}

/**
 * `url` as error messages show it: without userinfo (a password) and with any query elided
 * (a signed LNURL's `k1`/`sig` is a login credential until the challenge expires). Error
 * messages end up in logs and bug reports.
 */
export function urlForMessages(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}${parsed.search ? '?…' : ''}`;
  } catch {
    return '<unparsable URL>';
  }
}

/**
 * Runs `fetch` and then `consume(response)` under one deadline of `timeoutMs`, also honouring
 * `outerSignal`. Failures become `VssClientError` with reason `timeout`, `aborted` or `network`;
 * errors thrown by `consume` itself pass through unchanged.
 */
export async function fetchWithDeadline<T>(
  fetchFn: FetchFunction,
  url: string,
  init: RequestInit,
  timeoutMs: number,
  consume: (response: FetchResponse) => Promise<T>,
  outerSignal?: AbortSignal,
): Promise<T> {
  if (outerSignal?.aborted) throw new VssClientError('aborted', 'request aborted by the caller', { cause: outerSignal.reason });
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new Error(`deadline of ${timeoutMs} ms exceeded`));
  }, timeoutMs);
  const onOuterAbort = () => controller.abort(outerSignal?.reason);
  outerSignal?.addEventListener('abort', onOuterAbort, { once: true });
  const shownUrl = urlForMessages(url);
  const failure = (stage: string, cause: unknown): VssClientError => {
    if (timedOut) return new VssClientError('timeout', `${stage} ${shownUrl}: no complete response within ${timeoutMs} ms`, { cause });
    if (outerSignal?.aborted) return new VssClientError('aborted', `${stage} ${shownUrl}: aborted by the caller`, { cause });
    return new VssClientError('network', `${stage} ${shownUrl}: ${withoutUrl(transportFailureText(cause), url, shownUrl)}`, { cause });
  };
  try {
    let response: FetchResponse;
    try {
      response = await fetchFn(url, { ...init, signal: controller.signal });
    } catch (cause) {
      throw failure('request to', cause);
    }
    try {
      return await consume(response);
    } catch (cause) {
      // A body read interrupted by the deadline or the network is a transport failure; any
      // other error from `consume` (a typed decode or protocol error) is the caller's own.
      if (cause instanceof BodyReadError) throw failure('reading the response of', cause.cause);
      throw cause;
    }
  } finally {
    clearTimeout(timer);
    outerSignal?.removeEventListener('abort', onOuterAbort);
  }
}

/** A failure while receiving a response body (as opposed to interpreting it). */
export class BodyReadError extends Error {
  constructor(cause: unknown) {
    super('failed to read the response body', { cause });
    this.name = 'BodyReadError';
  }
}

/**
 * Reads the whole body, refusing more than `cap` bytes. A streamed body (no Content-Length) is
 * refused as soon as it passes the cap, so a misbehaving server cannot fill the process's memory.
 * It is read through `getReader`, else as an async iterable of chunks; only a body with neither
 * is read whole through `arrayBuffer()` before its size can be checked.
 */
export async function readBodyCapped(response: FetchResponse, cap: number): Promise<Uint8Array> {
  const tooLarge = (size: string) =>
    new VssClientError('decode', `response body of ${size} bytes exceeds the ${cap}-byte limit`, { status: response.status });
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > cap) {
    await releaseBody(response.body);
    throw tooLarge(String(declared));
  }
  const reader = response.body?.getReader?.();
  if (reader) return readChunksCapped(() => reader.read(), () => reader.cancel(), cap, tooLarge);
  const iterate = response.body?.[Symbol.asyncIterator];
  if (typeof iterate === 'function') {
    const body = response.body!;
    const iterator = iterate.call(body);
    return readChunksCapped(
      () => iterator.next(),
      // return() ends the iteration (a Node Readable destroys itself); a body that cannot be
      // released that way is released as any other.
      async () => {
        await iterator.return?.();
        await releaseBody(body);
      },
      cap,
      tooLarge,
    );
  }
  let body: ArrayBuffer;
  try {
    body = await response.arrayBuffer();
  } catch (cause) {
    throw new BodyReadError(cause);
  }
  if (body.byteLength > cap) throw tooLarge(String(body.byteLength));
  return new Uint8Array(body);
}

/**
 * Reads chunks until `next` says done, refusing (after `release`) as soon as their total passes
 * `cap`. A chunk must be a Uint8Array (of any realm: a fetch polyfilled in a jsdom or vm
 * environment makes its own): anything else is refused, not coerced.
 */
async function readChunksCapped(
  next: () => Promise<{ done?: boolean; value?: unknown }>,
  release: () => Promise<unknown>,
  cap: number,
  tooLarge: (size: string) => VssClientError,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    let chunk: { done?: boolean; value?: unknown };
    try {
      chunk = await next();
    } catch (cause) {
      throw new BodyReadError(cause);
    }
    if (chunk.done) break;
    if (chunk.value === undefined) continue;
    if (!isUint8Array(chunk.value)) {
      // Not counted, it would slip past the cap (a string's byteLength is undefined).
      await release().catch(() => undefined);
      const what = chunk.value === null ? 'null' : typeof chunk.value === 'object' ? (chunk.value.constructor?.name ?? 'object') : typeof chunk.value;
      throw new VssClientError('decode', `the fetch implementation's response body yielded a chunk that is not a Uint8Array (${what})`);
    }
    size += chunk.value.byteLength;
    if (size > cap) {
      await release().catch(() => undefined);
      throw tooLarge(`more than ${cap}`);
    }
    chunks.push(chunk.value);
  }
  // A lone chunk is handed on as it is, without a copy; the decoded values are views of it, so
  // it is made this realm's first (they reach callers, whose `instanceof Uint8Array` must hold).
  if (chunks.length === 1) return ownRealmBytes(chunks[0]);
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/**
 * Releases a body that will not be read: `cancel()` (a web stream), else `destroy()` (a Node.js
 * Readable). Never throws: the connection is then simply not reused.
 */
async function releaseBody(body: FetchResponseBody | null | undefined): Promise<void> {
  try {
    if (typeof body?.cancel === 'function') await body.cancel();
    else if (typeof body?.destroy === 'function') body.destroy();
  } catch {
    // Nothing useful to do.
  }
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const IMF_FIXDATE = /^[a-z]{3}, (\d{2}) ([a-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/i;
const RFC850_DATE = /^[a-z]{6,9}, (\d{2})-([a-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/i;
const ASCTIME_DATE = /^[a-z]{3} ([a-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/i;

/**
 * An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a
 * recipient must accept) as ms since the epoch, or undefined. Parsed here rather than by
 * `Date.parse`, whose accepted formats differ between engines (Hermes, JavaScriptCore) and
 * which reads a bare "1" as the year 2001.
 */
export function parseHttpDate(text: string, nowMs: number): number | undefined {
  let day: string, month: string, year: number, hh: string, mm: string, ss: string;
  let match = IMF_FIXDATE.exec(text);
  if (match) {
    [, day, month, , hh, mm, ss] = match;
    year = Number(match[3]);
  } else if ((match = RFC850_DATE.exec(text))) {
    [, day, month, , hh, mm, ss] = match;
    // A two-digit year more than 50 years in the future is in the past century (RFC 9110).
    const thisYear = new Date(nowMs).getUTCFullYear();
    year = Math.floor(thisYear / 100) * 100 + Number(match[3]);
    if (year > thisYear + 50) year -= 100;
  } else if ((match = ASCTIME_DATE.exec(text))) {
    [, month, day, hh, mm, ss] = match;
    year = Number(match[6]);
  } else {
    return undefined;
  }
  const monthIndex = MONTHS.indexOf(month.toLowerCase());
  if (monthIndex < 0) return undefined;
  const ms = Date.UTC(year, monthIndex, Number(day), Number(hh), Number(mm), Number(ss));
  // Date.UTC rolls 31 Feb over into March: an impossible date is refused, not moved.
  const back = new Date(ms);
  if (back.getUTCDate() !== Number(day) || back.getUTCHours() !== Number(hh) || back.getUTCMinutes() !== Number(mm) || back.getUTCSeconds() !== Number(ss)) {
    return undefined;
  }
  return ms;
}

/**
 * A `Retry-After` header as a wait in ms (≥ 0, at most `Number.MAX_SAFE_INTEGER`), or undefined
 * when absent or unusable (negative, fractional, a list, garbage): such a header is ignored, so
 * the retry policy's own schedule applies. An HTTP-date is taken relative to the reply's `Date`
 * header when it has a usable one (the server's clock, so a skewed client clock does not matter),
 * else to `nowMs`; a date in the past means no wait.
 */
export function parseRetryAfter(value: string | null, responseDate: string | null, nowMs: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, Number.MAX_SAFE_INTEGER);
  const at = parseHttpDate(text, nowMs);
  if (at === undefined) return undefined;
  const served = responseDate === null ? undefined : parseHttpDate(responseDate.trim(), nowMs);
  return Math.min(Math.max(0, at - (served ?? nowMs)), Number.MAX_SAFE_INTEGER);
}

/** How many leading body bytes error messages quote. */
const QUOTED_BODY_BYTES = 64;

/**
 * A reply body as error messages show it: its content-type, its size and its first bytes (as
 * text when they are printable, else as hex). An HTML login page from a captive portal or a
 * proxy's plain-text error then reads as what it is, not as an opaque protobuf decoding failure.
 */
export function describeBody(contentType: string | null, bytes: Uint8Array): string {
  const type = contentType === null ? 'no content-type' : `content-type ${contentType.slice(0, 100)}`;
  if (bytes.byteLength === 0) return `${type}, empty body`;
  const head = bytes.subarray(0, QUOTED_BODY_BYTES);
  const more = bytes.byteLength > head.byteLength ? '…' : '';
  // A multi-byte character cut at the end of the quote decodes as U+FFFD: drop that one.
  const text = new TextDecoder('utf-8', { fatal: false }).decode(head).replace(/\uFFFD$/, '');
  // Printable means no control characters (tab and newlines aside) and no invalid UTF-8.
  const printable = text.length > 0 && !/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F\uFFFD]/.test(text);
  const quoted = printable
    ? JSON.stringify(text) + more
    : `0x${Array.from(head.subarray(0, 32), (b) => b.toString(16).padStart(2, '0')).join('')}${bytes.byteLength > 32 ? '…' : ''}`;
  return `${type}, ${bytes.byteLength} bytes: ${quoted}`;
}

/** Releases a response body we will not read, so the connection can be reused. */
export async function discardBody(response: FetchResponse): Promise<void> {
  await releaseBody(response.body);
}

/**
 * What went wrong on the wire, in one line. Node's fetch (undici) reports every transport failure
 * as "fetch failed" and keeps the reason (connect ECONNREFUSED, getaddrinfo ENOTFOUND, a reset)
 * one cause further down, where most error printers never look.
 */
/**
 * `text` with the requested URL, as given or as normalized, replaced by its shown form: a fetch
 * error may quote the whole URL (undici does for a URL it refuses), query credentials included.
 */
function withoutUrl(text: string, url: string, shown: string): string {
  let normalized: string | undefined;
  try {
    normalized = new URL(url).href;
  } catch {
    normalized = undefined;
  }
  let out = text.split(url).join(shown);
  if (normalized !== undefined && normalized !== url) out = out.split(normalized).join(shown);
  return out;
}

function transportFailureText(cause: unknown): string {
  const text = (cause as Error)?.message ?? String(cause);
  const reason = (cause as { cause?: unknown } | undefined)?.cause;
  const detail = reason instanceof Error ? reason.message || (reason as NodeJS.ErrnoException).code : undefined;
  return detail && !text.includes(detail) ? `${text} (${detail})` : text;
}
