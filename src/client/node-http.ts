/**
 * A lighter HTTP transport for Node: a `FetchFunction` over `node:http` / `node:https` with a
 * keep-alive agent. Node's built-in `fetch` (undici) spends about twice the CPU per small
 * request (WHATWG streams, Request/Response objects) and a wallet on a busy event loop makes
 * many small requests; `npm run bench:ldk` measures the difference.
 *
 * Node-only, but with no static `node:` import: the modules are taken from
 * `process.getBuiltinModule` when the transport is created, so a browser or React Native
 * bundle that includes this file still builds (calling it there throws a clear error).
 * Nothing else in src/client depends on it; VssStore picks it by default in Node.
 */
import { isUint8Array } from '../protocol/bytes.js';
import { MAX_TIMEOUT_MS, type FetchBodyReader, type FetchFunction, type FetchResponse } from './http.js';

type Http = typeof import('node:http');
type Https = typeof import('node:https');

export interface NodeHttpFetchOptions {
  /** Sockets per origin (default: unlimited, like undici). */
  maxSockets?: number;
  /** Idle keep-alive sockets are closed after this long (default 4 s, below common server timeouts; 0: never). */
  idleSocketTimeoutMs?: number;
  /**
   * Certificate authorities (PEM) trusted for https URLs instead of Node's default roots, for a
   * VSS server behind a private CA. Default: Node's roots.
   */
  ca?: string | readonly string[];
}

function builtin<T>(id: string): T | undefined {
  const get = (globalThis.process as { getBuiltinModule?: (id: string) => unknown } | undefined)?.getBuiltinModule;
  return get?.(id) as T | undefined;
}

/** True where `nodeHttpFetch` works (Node ≥ 20.16, which has `process.getBuiltinModule`). */
export function nodeHttpAvailable(): boolean {
  return builtin<Http>('node:http') !== undefined;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const error = new Error('the request was aborted');
  error.name = 'AbortError';
  return error;
}

function headerRecord(headers: RequestInit['headers']): Record<string, string> {
  if (headers === undefined) return {};
  if (headers instanceof Headers) {
    const out: Record<string, string> = {};
    headers.forEach((value, name) => (out[name] = value));
    return out;
  }
  if (Array.isArray(headers)) return Object.fromEntries(headers);
  return { ...(headers as Record<string, string>) };
}

function bodyBytes(body: RequestInit['body']): Uint8Array | string | undefined {
  if (body === undefined || body === null) return undefined;
  // Bytes of another realm (a jsdom or vm environment) too: node:http writes any Uint8Array.
  if (typeof body === 'string' || isUint8Array(body)) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('nodeHttpFetch sends string, Uint8Array or ArrayBuffer bodies only');
}

/** Unread bytes held before the socket is paused (read-ahead while the caller catches up). */
const READ_AHEAD_BYTES = 1024 * 1024;

type IncomingMessage = import('node:http').IncomingMessage;

/**
 * A response body read from the start (a response left unread would stall the socket), held
 * until read, either whole (`arrayBuffer`) or chunk by chunk (the reader, which lets the caller
 * stop at a size limit). At most about READ_AHEAD_BYTES wait unread: past that the socket is
 * paused until the caller reads on.
 */
class IncomingBody implements FetchBodyReader {
  private readonly chunks: Buffer[] = [];
  private unreadBytes = 0;
  private ended = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly response: IncomingMessage,
    private readonly onFinished: () => void,
  ) {
    response.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.unreadBytes += chunk.byteLength;
      if (this.unreadBytes > READ_AHEAD_BYTES) response.pause();
      this.notify();
    });
    response.once('end', () => {
      this.ended = true;
      this.onFinished();
      this.notify();
    });
    // An abort or a broken connection while the body is arriving.
    response.once('error', (error) => this.fail(error));
    response.once('close', () => {
      if (!response.complete) this.fail(Object.assign(new Error('the connection closed before the whole response arrived'), { code: 'ECONNRESET' }));
    });
  }

  fail(error: Error): void {
    if (this.ended || this.error) return;
    this.error = error;
    this.onFinished();
    this.notify();
  }

  async read(): Promise<{ done: boolean; value?: Uint8Array }> {
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk) {
        this.unreadBytes -= chunk.byteLength;
        if (this.response.isPaused() && this.unreadBytes <= READ_AHEAD_BYTES) this.response.resume();
        return { done: false, value: chunk };
      }
      if (this.error) throw this.error;
      if (this.ended) return { done: true };
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const parts: Buffer[] = [];
    for (let next = await this.read(); !next.done; next = await this.read()) parts.push(next.value as Buffer);
    const all = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    return all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
  }

  async cancel(): Promise<void> {
    this.onFinished();
    this.chunks.length = 0;
    this.response.destroy();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/**
 * Creates a fetch-compatible transport with its own keep-alive agents (one per scheme).
 * Resolves once the response headers arrive; `arrayBuffer()` resolves with the whole body, and
 * `body.getReader()` reads it chunk by chunk.
 * The request's `signal` aborts the request and a body still being received. Network
 * errors keep Node's error codes (`ECONNREFUSED`, `ECONNRESET`, ...).
 */
export function nodeHttpFetch(options: NodeHttpFetchOptions = {}): FetchFunction {
  const http = builtin<Http>('node:http');
  const https = builtin<Https>('node:https');
  if (!http || !https) throw new Error('nodeHttpFetch needs Node.js (process.getBuiltinModule is not available here)');
  // Checked here: node:http takes maxSockets ≤ 0 as "never connect" (every request waits for a
  // socket forever) and a bad idle timeout only fails later, on each request, as a network error.
  const { maxSockets, idleSocketTimeoutMs } = options;
  if (maxSockets !== undefined && !(maxSockets === Infinity || (Number.isSafeInteger(maxSockets) && maxSockets >= 1))) {
    throw new RangeError(`nodeHttpFetch maxSockets must be an integer >= 1 or Infinity, got ${maxSockets}`);
  }
  if (idleSocketTimeoutMs !== undefined && !(Number.isFinite(idleSocketTimeoutMs) && idleSocketTimeoutMs >= 0 && idleSocketTimeoutMs <= MAX_TIMEOUT_MS)) {
    throw new RangeError(`nodeHttpFetch idleSocketTimeoutMs must be a number of milliseconds from 0 to ${MAX_TIMEOUT_MS}, got ${idleSocketTimeoutMs}`);
  }
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? Infinity, timeout: options.idleSocketTimeoutMs ?? 4_000, scheduling: 'lifo' as const };
  const tls = options.ca === undefined ? {} : { ca: typeof options.ca === 'string' ? options.ca : [...options.ca] };
  const agents = { 'http:': new http.Agent(agentOptions), 'https:': new https.Agent({ ...agentOptions, ...tls }) };

  return (input, init) =>
    new Promise<FetchResponse>((resolve, reject) => {
      const signal = init.signal ?? undefined;
      if (signal?.aborted) return reject(abortError(signal));
      const url = new URL(input);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return reject(new TypeError(`nodeHttpFetch: unsupported URL scheme ${url.protocol}`));
      const body = bodyBytes(init.body);
      const headers = headerRecord(init.headers);
      if (body !== undefined) headers['content-length'] = String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength);
      const transport = url.protocol === 'https:' ? https : http;
      const request = transport.request(url, { method: init.method ?? 'GET', headers, agent: agents[url.protocol] });

      let settled = false;
      const onAbort = (): void => {
        const error = abortError(signal!);
        request.destroy(error);
        // A request still waiting for a free socket (maxSockets reached) emits its error only
        // once it gets one, which may be a whole timeout later: reject now.
        if (!settled) {
          settled = true;
          reject(error);
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (): void => signal?.removeEventListener('abort', onAbort);

      request.once('error', (error) => {
        done();
        if (!settled) {
          settled = true;
          reject(error);
        }
      });
      // A 101 Switching Protocols reply has no HTTP response to hand over; node:http then
      // destroys the socket without an error or a response, and the request would wait for the
      // caller's deadline, reported as a silent server. Refuse it at once instead.
      request.once('upgrade', (response, socket) => {
        socket.destroy();
        done();
        if (!settled) {
          settled = true;
          const to = response.headers.upgrade ? ` to ${response.headers.upgrade}` : '';
          reject(new Error(`the server switched protocols${to} (HTTP ${response.statusCode}) instead of answering the request`));
        }
      });
      request.once('response', (response) => {
        settled = true;
        const incoming = new IncomingBody(response, done);
        request.once('error', (error) => incoming.fail(error));
        const raw = response.headers;
        resolve({
          status: response.statusCode ?? 0,
          headers: {
            get: (name: string): string | null => {
              const value = raw[name.toLowerCase()];
              if (value === undefined) return null;
              return Array.isArray(value) ? value.join(', ') : String(value);
            },
          },
          arrayBuffer: () => incoming.arrayBuffer(),
          body: {
            getReader: () => incoming,
            cancel: () => incoming.cancel(),
          },
        });
      });
      request.end(body);
    });
}
