import { afterEach, describe, expect, it, vi } from 'vitest';
import { closedLoopbackPort } from '../helpers/ports.js';
import {
  AuthError,
  ConflictError,
  errorProvesNotApplied,
  ExponentialBackoffRetryPolicy,
  FixedHeaders,
  HeaderProviderError,
  InternalServerError,
  InvalidRequestError,
  isPermanentVssError,
  NO_RETRY,
  NoSuchKeyError,
  RetryHookError,
  VersionMismatchError,
  VssClient,
  VssClientError,
  VssServerError,
  type VssHeaderProvider,
} from '../../src/client/index.js';
import { bigIntToInt64, keyValue, vss } from '../../src/protocol/index.js';
import { errorReply, hangingFetch, mockFetch, type MockReply } from './mock-vss.js';

const BASE = 'http://vss.test/vss';
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
// The reference tests' policy: 3 attempts, permanent errors and auth not retried.
const TEST_POLICY = new ExponentialBackoffRetryPolicy(1)
  .withMaxAttempts(3)
  .skipRetryOnError((e) => isPermanentVssError(e) || e instanceof AuthError);
const instantSleep = async () => undefined;

const okGet = (): MockReply => ({ body: vss.GetObjectResponse.encode({ value: keyValue('k1', 2n, new Uint8Array([7])) }).finish() });

describe('VssClient request construction', () => {
  it('POSTs the exact protobuf body with the reference headers to <base>/<operation>', async () => {
    const { fetch, requests } = mockFetch((req) => (req.url.endsWith('/getObject') ? okGet() : { body: new Uint8Array() }));
    const client = new VssClient(BASE, { fetch, headerProvider: new FixedHeaders({ 'x-custom': 'v', Authorization: 'token' }) });

    const got = await client.getObject({ storeId: 'store', key: 'k1' });
    expect(got.value?.key).toBe('k1');
    await client.putObjects({ storeId: 'store', globalVersion: bigIntToInt64(0n), transactionItems: [keyValue('k', 0n, new Uint8Array([1]))] });
    await client.deleteObject({ storeId: 'store', keyValue: keyValue('k', -1n) });
    await client.listKeyVersions({ storeId: 'store', keyPrefix: 'p', pageSize: 5 });

    expect(requests.map((r) => r.url)).toEqual([`${BASE}/getObject`, `${BASE}/putObjects`, `${BASE}/deleteObject`, `${BASE}/listKeyVersions`]);
    for (const r of requests) {
      expect(r.method).toBe('POST');
      expect(r.headers['content-type']).toBe('application/octet-stream');
      expect(r.headers['x-custom']).toBe('v');
      expect(r.headers.authorization).toBe('token');
    }
    expect(hex(requests[0].body)).toBe('0a0573746f726512026b31');
    expect(vss.PutObjectRequest.decode(requests[1].body).transactionItems[0].key).toBe('k');
    expect(vss.ListKeyVersionsRequest.decode(requests[3].body).pageSize).toBe(5);
  });

  it('uses the base URL verbatim, like the reference (no slash handling)', async () => {
    const { fetch, requests } = mockFetch(() => okGet());
    await new VssClient('http://vss.test/', { fetch }).getObject({ storeId: 's', key: 'k' });
    expect(requests[0].url).toBe('http://vss.test//getObject');
  });

  it('asks the header provider once per attempt with the request body', async () => {
    const bodies: Uint8Array[] = [];
    let n = 0;
    const provider: VssHeaderProvider = {
      getHeaders: async (body) => {
        bodies.push(body);
        return { authorization: `attempt-${++n}` };
      },
    };
    const { fetch, requests } = mockFetch((_, i) => (i < 2 ? errorReply(500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'x') : okGet()));
    await new VssClient(BASE, { fetch, headerProvider: provider, retryPolicy: TEST_POLICY, sleep: instantSleep }).getObject({ storeId: 's', key: 'k' });
    expect(requests.map((r) => r.headers.authorization)).toEqual(['attempt-1', 'attempt-2', 'attempt-3']);
    expect(bodies.every((b) => hex(b) === hex(requests[0].body))).toBe(true);
  });

  it('rejects unusable constructor arguments', () => {
    expect(() => new VssClient('vss.test')).toThrow(TypeError);
    expect(() => new VssClient(BASE, { timeoutMs: 0 })).toThrow(RangeError);
    expect(() => new VssClient(BASE, { timeoutMs: Number.NaN })).toThrow(RangeError);
    // Past what a timer can wait, setTimeout fires after ~1 ms: every attempt would time out.
    expect(() => new VssClient(BASE, { timeoutMs: 2 ** 31 })).toThrow(/at most 2147483647/);
    expect(new VssClient(BASE, { timeoutMs: 2 ** 31 - 1 }).timeoutMs).toBe(2 ** 31 - 1);
  });

  it('refuses strings with a lone UTF-16 surrogate before sending (a long one would reach the server as U+FFFD and merge keys)', async () => {
    const { fetch, requests } = mockFetch(() => ({ body: vss.PutObjectResponse.encode({}).finish() }));
    const client = new VssClient(BASE, { fetch, retryPolicy: NO_RETRY });
    const cut = (emoji: string) => `${'x'.repeat(60)}${emoji.slice(1)}`; // the second half of an emoji
    expect(cut('😀')).not.toBe(cut('😁'));
    const put = client.putObjects({ storeId: 's', transactionItems: [keyValue(cut('😀'), -1n, new Uint8Array([1]))] });
    await expect(put).rejects.toThrow(InvalidRequestError);
    await expect(put).rejects.toThrow(/transactionItems\[0\]\.key contains a lone UTF-16 surrogate/);
    await expect(client.listKeyVersions({ storeId: 's', keyPrefix: '\udc00' })).rejects.toThrow(/keyPrefix contains a lone UTF-16 surrogate/);
    await expect(client.getObject({ storeId: 's\ud800', key: 'k' })).rejects.toThrow(/storeId contains a lone UTF-16 surrogate/);
    expect(requests).toHaveLength(0);
    // Whole emoji are fine.
    await client.putObjects({ storeId: 's', transactionItems: [keyValue('😀 and 😁', -1n, new Uint8Array([1]))] });
    expect(requests).toHaveLength(1);
  });
});

describe('VssClient error mapping (by ErrorResponse.error_code, not HTTP status)', () => {
  const cases = [
    [404, vss.ErrorCode.NO_SUCH_KEY_EXCEPTION, NoSuchKeyError, 'Requested key does not exist: '],
    [400, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, InvalidRequestError, 'Request sent to VSS Storage was invalid: '],
    [409, vss.ErrorCode.CONFLICT_EXCEPTION, ConflictError, 'Potential version conflict in write operation: '],
    [401, vss.ErrorCode.AUTH_EXCEPTION, AuthError, 'Authentication or Authorization failure: '],
    [500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, InternalServerError, 'InternalServerError: '],
  ] as const;

  for (const [status, code, type, prefix] of cases) {
    it(`maps ${vss.ErrorCode[code]} to ${type.name} with status and message`, async () => {
      const { fetch } = mockFetch(() => errorReply(status, code, 'server says no'));
      const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
      expect(error).toBeInstanceOf(type);
      expect(error).toBeInstanceOf(VssServerError);
      expect(error.status).toBe(status);
      expect(error.serverMessage).toBe('server says no');
      expect(error.errorCode).toBe(code);
      expect(error.message).toBe(`${prefix}server says no`);
    });
  }

  it('classifies by code even when the status disagrees', async () => {
    const { fetch } = mockFetch(() => errorReply(500, vss.ErrorCode.NO_SUCH_KEY_EXCEPTION, 'gone'));
    const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(error).toBeInstanceOf(NoSuchKeyError);
    expect(error.status).toBe(500);
  });

  it('maps unknown codes to VssClientError(unknown-error-code)', async () => {
    // fetch cannot represent the reference test's status 999; 599 is the highest it allows.
    const { fetch } = mockFetch(() => errorReply(599, 999, 'weird'));
    const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('unknown-error-code');
    expect(error.status).toBe(599);
    expect(error.message).toContain('unknown error code: 999, message: weird');
  });

  it('maps a malformed error body to VssClientError(decode)', async () => {
    const { fetch } = mockFetch(() => ({ status: 409, body: new Uint8Array([0xff, 0xff, 0xff]) }));
    const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).putObjects({ storeId: 's' }).catch((e) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('decode');
    expect(error.message).toContain('HttpStatusCode: 409');
  });

  it('maps an undecodable 2xx body to VssClientError(decode)', async () => {
    const { fetch } = mockFetch(() => ({ status: 200, body: new Uint8Array([0x0a, 0x05, 0x01]) }));
    const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).listKeyVersions({ storeId: 's' }).catch((e) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('decode');
  });

  it('maps a transport failure to VssClientError(network)', async () => {
    const client = new VssClient(BASE, {
      fetch: async () => {
        throw new TypeError('fetch failed');
      },
      retryPolicy: NO_RETRY,
    });
    const error = await client.deleteObject({ storeId: 's' }).catch((e) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('network');
    expect(error.cause).toBeInstanceOf(TypeError);
  });

  it("names the reason Node's fetch hides one cause down (here: connection refused)", async () => {
    const closed = await closedLoopbackPort();
    const refused = await new VssClient(`http://127.0.0.1:${closed}/vss`, { retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(refused.reason).toBe('network');
    expect(refused.message).toMatch(new RegExp(`^InternalError: request to http://127\\.0\\.0\\.1:${closed}/vss/getObject: fetch failed \\(connect ECONNREFUSED 127\\.0\\.0\\.1:${closed}\\)$`));
  });

  it('keeps credentials in the base URL (userinfo) out of error messages', async () => {
    const client = new VssClient('http://wallet:s3cret-pass@vss.test/vss', {
      fetch: async () => {
        throw new TypeError('fetch failed');
      },
      retryPolicy: NO_RETRY,
    });
    const network = await client.getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(network.reason).toBe('network');
    expect(network.message).toBe('InternalError: request to http://vss.test/vss/getObject: fetch failed');
    const aborted = await client.getObject({ storeId: 's', key: 'k' }, { signal: AbortSignal.abort() }).catch((e) => e);
    expect(aborted.reason).toBe('aborted');
    expect(aborted.message).not.toContain('s3cret');
  });

  it('refuses a base URL with userinfo for the built-in transports, without quoting the password', () => {
    // Both built-in transports refuse such a URL on every request (fetch quoting it whole).
    expect(() => new VssClient('http://wallet:s3cret-pass@vss.test/vss')).toThrow(/^VSS base URL http:\/\/vss\.test\/vss holds a user name or password \(not shown\)/);
    for (const given of ['wallet:s3cret-pass@vss.test/vss', 'http://wallet:s3cret-pass@[vss/vss']) {
      const error = (() => {
        try {
          new VssClient(given);
        } catch (e) {
          return e as Error;
        }
      })();
      expect(error).toBeInstanceOf(TypeError);
      expect(error!.message).not.toContain('s3cret');
    }
  });

  it('keeps the requested URL (a credential in its query) out of a transport error that quotes it', async () => {
    const client = new VssClient('http://vss.test/vss?token=s3cret', {
      fetch: async (url) => {
        throw new TypeError(`Request cannot be constructed from ${String(url)}`);
      },
      retryPolicy: NO_RETRY,
    });
    const network = await client.getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(network.reason).toBe('network');
    expect(network.message).not.toContain('s3cret');
    expect(network.message).toContain('Request cannot be constructed from http://vss.test/vss?…');
  });

  it('wraps a header-provider failure into AuthError (no request sent)', async () => {
    const { fetch, requests } = mockFetch(() => okGet());
    const provider: VssHeaderProvider = { getHeaders: async () => Promise.reject(new Error('no token')) };
    const error = await new VssClient(BASE, { fetch, headerProvider: provider, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(error).toBeInstanceOf(AuthError);
    expect(error.fromHeaderProvider).toBe(true);
    expect(error.status).toBeUndefined();
    expect(error.cause.message).toBe('no token');
    expect(requests).toHaveLength(0);
  });
});

describe('VssClient protocol-version gate', () => {
  it('rejects a reply without the header, before looking at the status', async () => {
    for (const [reply, suffix] of [
      [{ ...okGet(), headers: null }, ''],
      [{ ...errorReply(404, 4, 'x'), headers: null }, ' (on an HTTP 404 reply)'],
    ] as const) {
      const { fetch } = mockFetch(() => reply);
      const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
      expect(error).toBeInstanceOf(VersionMismatchError);
      expect(error.versionServed).toBeUndefined();
      expect(error.versionExpected).toBe('0');
      expect(error.fromIntermediary).toBe(false);
      expect(error.message).toBe(`The server did not set the \`vss-protocol-version\` header${suffix}`);
    }
  });

  it("retries a proxy's 502/503/504/429 without the header (the server behind it is restarting), and flags a write ambiguous", async () => {
    const gateway = (status: number): MockReply => ({ status, headers: { 'content-type': 'text/html' }, body: new TextEncoder().encode('<html>Bad Gateway</html>') });
    const { fetch, requests } = mockFetch((_, i) => (i < 4 ? gateway([502, 503, 504, 429][i]) : okGet()));
    const client = new VssClient(BASE, { fetch, sleep: instantSleep });
    expect((await client.getObject({ storeId: 's', key: 'k' })).value?.key).toBe('k1');
    expect(requests).toHaveLength(5);

    const down = mockFetch((_, i) => (i === 0 ? gateway(502) : errorReply(409, 1, 'moved')));
    const error = await new VssClient(BASE, { fetch: down.fetch, sleep: instantSleep }).putObjects({ storeId: 's' }).catch((e) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error.afterAmbiguousAttempt).toBe(true);

    // When retries run out, the error names the status, not just a missing header.
    const always = mockFetch(() => gateway(502));
    const last = await new VssClient(BASE, { fetch: always.fetch, retryPolicy: TEST_POLICY, sleep: instantSleep }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(always.requests).toHaveLength(3);
    expect(last).toBeInstanceOf(VersionMismatchError);
    expect(last.fromIntermediary).toBe(true);
    expect(last.message).toContain('HTTP 502');
    expect(isPermanentVssError(last)).toBe(false);
  });

  it('rejects another version, even with the legacy opt-in', async () => {
    const { fetch } = mockFetch(() => ({ ...okGet(), headers: { 'vss-protocol-version': '1' } }));
    for (const allowMissingProtocolVersion of [false, true]) {
      const error = await new VssClient(BASE, { fetch, retryPolicy: NO_RETRY, allowMissingProtocolVersion })
        .getObject({ storeId: 's', key: 'k' })
        .catch((e) => e);
      expect(error).toBeInstanceOf(VersionMismatchError);
      expect(error.versionServed).toBe('1');
    }
  });

  it('accepts a missing header only with the legacy opt-in', async () => {
    const { fetch } = mockFetch(() => ({ ...okGet(), headers: null }));
    const got = await new VssClient(BASE, { fetch, allowMissingProtocolVersion: true }).getObject({ storeId: 's', key: 'k' });
    expect(got.value?.key).toBe('k1');
  });

  it('does not retry a version mismatch under the default policy', async () => {
    const { fetch, requests } = mockFetch(() => ({ ...okGet(), headers: null }));
    await expect(new VssClient(BASE, { fetch, sleep: instantSleep }).getObject({ storeId: 's', key: 'k' })).rejects.toBeInstanceOf(VersionMismatchError);
    expect(requests).toHaveLength(1);
  });
});

describe('VssClient retries (reference expectations)', () => {
  it('retries an InternalServerError 3 times on each of the 4 endpoints (12 hits)', async () => {
    const { fetch, requests } = mockFetch(() => errorReply(500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'down'));
    const client = new VssClient(BASE, { fetch, retryPolicy: TEST_POLICY, sleep: instantSleep });
    await expect(client.getObject({ storeId: 's', key: 'k' })).rejects.toBeInstanceOf(InternalServerError);
    await expect(client.putObjects({ storeId: 's' })).rejects.toBeInstanceOf(InternalServerError);
    await expect(client.deleteObject({ storeId: 's' })).rejects.toBeInstanceOf(InternalServerError);
    await expect(client.listKeyVersions({ storeId: 's' })).rejects.toBeInstanceOf(InternalServerError);
    expect(requests).toHaveLength(12);
  });

  it('treats a 2xx GetObject without value as InternalServerError and retries it (3 hits)', async () => {
    const { fetch, requests } = mockFetch(() => ({ body: new Uint8Array() }));
    const error = await new VssClient(BASE, { fetch, retryPolicy: TEST_POLICY, sleep: instantSleep }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(error).toBeInstanceOf(InternalServerError);
    expect(error.message).toContain('expected value in GetObjectResponse');
    expect(requests).toHaveLength(3);
  });

  it('hits InvalidRequest, Auth and Conflict once each', async () => {
    for (const [status, code] of [
      [400, 2],
      [401, 5],
      [409, 1],
    ]) {
      const { fetch, requests } = mockFetch(() => errorReply(status, code, 'x'));
      await expect(new VssClient(BASE, { fetch, retryPolicy: TEST_POLICY, sleep: instantSleep }).putObjects({ storeId: 's' })).rejects.toBeInstanceOf(VssServerError);
      expect(requests).toHaveLength(1);
    }
  });

  it('recovers from transient failures and reports each retry', async () => {
    const seen: Array<{ operation: string; attemptsMade: number; delayMs: number }> = [];
    const { fetch, requests } = mockFetch((_, i) => (i === 0 ? errorReply(503, 3, 'busy') : okGet()));
    const client = new VssClient(BASE, {
      fetch,
      retryPolicy: TEST_POLICY,
      sleep: instantSleep,
      onRetry: ({ operation, attemptsMade, delayMs }) => seen.push({ operation, attemptsMade, delayMs }),
    });
    expect((await client.getObject({ storeId: 's', key: 'k' })).value?.version?.toString()).toBe('2');
    expect(requests).toHaveLength(2);
    expect(seen).toEqual([{ operation: 'getObject', attemptsMade: 1, delayMs: 1 }]);
  });

  it('an onRetry hook that throws surfaces its own error and the VSS error, not a made-up abort', async () => {
    const { fetch } = mockFetch(() => errorReply(503, 3, 'busy'));
    const hookError = new Error('metrics sink is down');
    const client = new VssClient(BASE, {
      fetch,
      retryPolicy: TEST_POLICY,
      sleep: instantSleep,
      onRetry: () => {
        throw hookError;
      },
    });
    const outcome = await client.getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(RetryHookError);
    expect(outcome).toMatchObject({ hook: 'onRetry', cause: hookError, status: 503 });
    expect((outcome as RetryHookError).attemptError).toBeInstanceOf(InternalServerError);
    expect((outcome as RetryHookError).attemptError).toMatchObject({ serverMessage: 'busy' });
  });

  it('a per-call policy overrides the client policy', async () => {
    const { fetch, requests } = mockFetch(() => errorReply(500, 3, 'down'));
    const client = new VssClient(BASE, { fetch, retryPolicy: TEST_POLICY, sleep: instantSleep });
    await expect(client.getObject({ storeId: 's', key: 'k' }, { retryPolicy: NO_RETRY })).rejects.toBeInstanceOf(InternalServerError);
    expect(requests).toHaveLength(1);
  });

  it('tells the header provider which credentials the server rejected', async () => {
    const rejected: Array<Record<string, string>> = [];
    let n = 0;
    const provider: VssHeaderProvider = {
      getHeaders: async () => ({ Authorization: `Bearer t${++n}` }),
      onAuthError: (headers) => rejected.push({ ...headers }),
    };
    const { fetch } = mockFetch((req) => (req.headers.authorization === 'Bearer t1' ? errorReply(401, 5, 'expired') : okGet()));
    const client = new VssClient(BASE, { fetch, headerProvider: provider, sleep: instantSleep });
    await client.getObject({ storeId: 's', key: 'k' });
    expect(rejected).toEqual([{ Authorization: 'Bearer t1' }]);
  });
});

describe('VssClient ambiguous conditional writes', () => {
  it('flags a 409 that follows a timed-out attempt of the same put', async () => {
    let attempt = 0;
    const client = new VssClient(BASE, {
      timeoutMs: 50,
      sleep: instantSleep,
      fetch: async (url, init) => {
        attempt += 1;
        if (attempt === 1) {
          // The server commits, but the reply never arrives in time.
          await new Promise((_, reject) => init.signal?.addEventListener('abort', () => reject(init.signal?.reason)));
        }
        return new Response(vss.ErrorResponse.encode({ errorCode: 1, message: 'version mismatch' }).finish() as BodyInit, {
          status: 409,
          headers: { 'vss-protocol-version': '0' },
        });
      },
    });
    const error = await client.putObjects({ storeId: 's', transactionItems: [keyValue('k', 3n)] }).catch((e) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error.afterAmbiguousAttempt).toBe(true);
    expect(attempt).toBe(2);
  });

  it('does not flag a 409 on a first attempt or after a definite rejection', async () => {
    const direct = mockFetch(() => errorReply(409, 1, 'x'));
    const e1 = await new VssClient(BASE, { fetch: direct.fetch }).putObjects({ storeId: 's' }).catch((e) => e);
    expect(e1.afterAmbiguousAttempt).toBe(false);

    const afterAuth = mockFetch((_, i) => (i === 0 ? errorReply(401, 5, 'x') : errorReply(409, 1, 'x')));
    const e2 = await new VssClient(BASE, { fetch: afterAuth.fetch, sleep: instantSleep }).putObjects({ storeId: 's' }).catch((e) => e);
    expect(e2).toBeInstanceOf(ConflictError);
    expect(e2.afterAmbiguousAttempt).toBe(false);
    expect(afterAuth.requests).toHaveLength(2);
  });

  it('flags any final error of a write after an ambiguous attempt (a 401 on the retry proves nothing), never a read\'s', async () => {
    const lostThenAuth = () => mockFetch((_, i) => (i === 0 ? errorReply(500, 3, 'db down') : errorReply(401, 5, 'token expired')));
    const write = lostThenAuth();
    const writeError = await new VssClient(BASE, { fetch: write.fetch, retryPolicy: TEST_POLICY, sleep: instantSleep }).putObjects({ storeId: 's' }).catch((e) => e);
    expect(write.requests).toHaveLength(2);
    expect(writeError).toBeInstanceOf(AuthError);
    expect(writeError.afterAmbiguousAttempt).toBe(true);
    expect(errorProvesNotApplied(writeError)).toBe(false);

    const del = lostThenAuth();
    const deleteError = await new VssClient(BASE, { fetch: del.fetch, retryPolicy: TEST_POLICY, sleep: instantSleep })
      .deleteObject({ storeId: 's', keyValue: keyValue('k', 1n) })
      .catch((e) => e);
    expect(deleteError.afterAmbiguousAttempt).toBe(true);

    // The same rejection with no ambiguous attempt before it does prove nothing was applied.
    const direct = mockFetch(() => errorReply(401, 5, 'token expired'));
    const directError = await new VssClient(BASE, { fetch: direct.fetch, retryPolicy: TEST_POLICY, sleep: instantSleep }).putObjects({ storeId: 's' }).catch((e) => e);
    expect(directError.afterAmbiguousAttempt).toBe(false);
    expect(errorProvesNotApplied(directError)).toBe(true);

    const read = lostThenAuth();
    const readError = await new VssClient(BASE, { fetch: read.fetch, retryPolicy: TEST_POLICY, sleep: instantSleep }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(read.requests).toHaveLength(2);
    expect(readError.afterAmbiguousAttempt).toBe(false);
  });
});

describe('VssClient timeouts and aborts (fake timers)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('aborts each attempt after timeoutMs and retries on the policy schedule', async () => {
    vi.useFakeTimers();
    const hanging = hangingFetch();
    const client = new VssClient(BASE, {
      fetch: hanging.fetch,
      timeoutMs: 1000,
      retryPolicy: new ExponentialBackoffRetryPolicy(100).withMaxAttempts(3),
    });
    let settled = false;
    const promise = client
      .getObject({ storeId: 's', key: 'k' })
      .catch((e) => e)
      .finally(() => (settled = true));
    // 3 attempts of 1000 ms with sleeps of 100 and 300 ms between them: where the fake clock
    // stands when each attempt starts, and when the call gives up.
    const schedule: [number, number][] = [
      [999, 1], // the first attempt waits for its deadline
      [1099, 1], // then sleeps 100 ms
      [1100, 2],
      [2399, 2], // the second attempt times out at 2100, then sleeps 300 ms
      [2400, 3],
    ];
    let now = 0;
    for (const [at, calls] of schedule) {
      await vi.advanceTimersByTimeAsync(at - now);
      now = at;
      expect(hanging.calls(), `attempts started at ${at} ms`).toBe(calls);
    }
    await vi.advanceTimersByTimeAsync(3399 - now);
    expect(settled, 'still waiting for the third deadline at 3399 ms').toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const error = await promise;
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('timeout');
    expect(hanging.calls()).toBe(3);
  });

  it('the deadline also covers a body that never finishes', async () => {
    vi.useFakeTimers();
    const client = new VssClient(BASE, {
      timeoutMs: 500,
      retryPolicy: NO_RETRY,
      fetch: async (_url, init) => {
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new Uint8Array([0x12]));
            init.signal?.addEventListener('abort', () => controller.error(init.signal?.reason));
          },
        });
        return new Response(body, { status: 200, headers: { 'vss-protocol-version': '0' } });
      },
    });
    const promise = client.getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    await vi.advanceTimersByTimeAsync(500);
    const error = await promise;
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('timeout');
  });

  it("the caller's signal aborts an in-flight attempt and a pending retry sleep", async () => {
    vi.useFakeTimers();
    const hanging = hangingFetch();
    const client = new VssClient(BASE, { fetch: hanging.fetch, timeoutMs: 10_000 });
    const c1 = new AbortController();
    const p1 = client.getObject({ storeId: 's', key: 'k' }, { signal: c1.signal }).catch((e) => e);
    await vi.advanceTimersByTimeAsync(10);
    c1.abort();
    const e1 = await p1;
    expect(e1).toBeInstanceOf(VssClientError);
    expect(e1.reason).toBe('aborted');

    const failing = mockFetch(() => errorReply(500, 3, 'down'));
    const client2 = new VssClient(BASE, { fetch: failing.fetch, retryPolicy: new ExponentialBackoffRetryPolicy(10_000).withMaxAttempts(5) });
    const c2 = new AbortController();
    const p2 = client2.getObject({ storeId: 's', key: 'k' }, { signal: c2.signal }).catch((e) => e);
    await vi.advanceTimersByTimeAsync(100);
    c2.abort();
    const e2 = await p2;
    expect(e2).toBeInstanceOf(VssClientError);
    expect(e2.reason).toBe('aborted');
    expect(failing.requests).toHaveLength(1);

    await expect(client.getObject({ storeId: 's', key: 'k' }, { signal: AbortSignal.abort() })).rejects.toMatchObject({ reason: 'aborted' });
  });

  it('a header provider that never answers (a hung token service) fails the attempt after timeoutMs, retried, nothing sent', async () => {
    vi.useFakeTimers();
    let calls = 0;
    const hungProvider: VssHeaderProvider = {
      getHeaders: () => {
        calls += 1;
        return new Promise<Record<string, string>>(() => undefined);
      },
    };
    const { fetch, requests } = mockFetch(() => okGet());
    const client = new VssClient(BASE, {
      fetch,
      headerProvider: hungProvider,
      timeoutMs: 1000,
      retryPolicy: new ExponentialBackoffRetryPolicy(100).withMaxAttempts(3),
    });
    const promise = client.putObjects({ storeId: 's', transactionItems: [keyValue('k', 0n, new Uint8Array([1]))] }).catch((e) => e);
    await vi.runAllTimersAsync();
    const error = await promise;
    expect(error).toBeInstanceOf(AuthError);
    expect(error.fromHeaderProvider).toBe(true);
    expect(error.message).toContain('header provider did not supply headers within 1000 ms');
    expect(error.cause).toBeInstanceOf(HeaderProviderError);
    expect(calls).toBe(3); // retried like any provider failure
    expect(requests).toHaveLength(0);
    // Nothing was sent, so the write is known not applied.
    expect(error.afterAmbiguousAttempt).toBe(false);
    expect(errorProvesNotApplied(error)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("the caller's signal also ends a wait for the header provider (a slow login), without cancelling the login itself", async () => {
    let calls = 0;
    let finishLogin: (headers: Record<string, string>) => void = () => undefined;
    const slowLogin: VssHeaderProvider = {
      getHeaders: () => {
        calls += 1;
        return new Promise((resolve) => (finishLogin = resolve));
      },
    };
    const { fetch, requests } = mockFetch(() => okGet());
    const client = new VssClient(BASE, { fetch, headerProvider: slowLogin, retryPolicy: TEST_POLICY, sleep: instantSleep });

    await expect(client.getObject({ storeId: 's', key: 'k' }, { signal: AbortSignal.abort() })).rejects.toMatchObject({ reason: 'aborted' });
    expect(calls).toBe(0); // an already aborted call does not start a login

    const controller = new AbortController();
    const pending = client.getObject({ storeId: 's', key: 'k' }, { signal: controller.signal }).catch((e) => e);
    await Promise.resolve();
    expect(calls).toBe(1);
    controller.abort();
    const error = await pending;
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('aborted');
    expect(requests).toHaveLength(0);
    finishLogin({ authorization: 'Bearer late' }); // the login finishes for whoever needs it next
  });
});
