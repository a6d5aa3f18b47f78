/**
 * A scripted stand-in for `fetch` that speaks the VSS wire format, for unit tests of the
 * client: every request is recorded (URL, method, headers, decoded-ready body) and answered
 * by a handler.
 */
import { vss } from '../../src/protocol/index.js';
import type { FetchFunction } from '../../src/client/index.js';

export interface RecordedRequest {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: Uint8Array;
  signal: AbortSignal | undefined;
}

export interface MockReply {
  status?: number;
  body?: Uint8Array;
  /** Defaults to `{ 'vss-protocol-version': '0' }`; pass null to send no version header. */
  headers?: Record<string, string> | null;
}

export type Handler = (request: RecordedRequest, index: number) => MockReply | Promise<MockReply>;

export function mockFetch(handler: Handler): { fetch: FetchFunction; requests: RecordedRequest[] } {
  const requests: RecordedRequest[] = [];
  const fetch: FetchFunction = async (url, init) => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, name) => {
      headers[name] = value;
    });
    const request: RecordedRequest = {
      url,
      method: init.method ?? 'GET',
      headers,
      body: new Uint8Array(init.body as Uint8Array),
      signal: init.signal ?? undefined,
    };
    requests.push(request);
    const reply = await handler(request, requests.length - 1);
    const replyHeaders = reply.headers === null ? {} : (reply.headers ?? { 'vss-protocol-version': '0' });
    return new Response((reply.body ?? new Uint8Array()) as BodyInit, { status: reply.status ?? 200, headers: replyHeaders });
  };
  return { fetch, requests };
}

export function errorReply(status: number, errorCode: number, message: string): MockReply {
  return { status, body: vss.ErrorResponse.encode({ errorCode, message }).finish() };
}

/** A fetch that never answers on its own: it rejects only when its signal aborts. */
export function hangingFetch(): { fetch: FetchFunction; calls: () => number } {
  let calls = 0;
  const fetch: FetchFunction = (_url, init) => {
    calls += 1;
    return new Promise((_, reject) => {
      init.signal?.addEventListener('abort', () => reject(init.signal?.reason ?? new Error('aborted')), { once: true });
    });
  };
  return { fetch, calls: () => calls };
}
