/**
 * Typed errors of the VSS client. Server errors are classified by the `ErrorResponse.error_code`
 * in the body (as the reference client does), never by the HTTP status, and each carries the
 * status and the server's message so callers can log and branch without parsing text.
 */
import { PROTOCOL_VERSION, vss } from '../protocol/index.js';
import { shownServerText } from './text.js';

/**
 * Characters of a server's `ErrorResponse.message` an error message quotes (`serverMessage`
 * keeps it whole): the server is not trusted, and error messages end up in logs.
 */
const QUOTED_SERVER_MESSAGE_CHARS = 1000;

/** Base class of every error the VSS client raises. */
export class VssError extends Error {
  /** HTTP status of the response that caused the error, when there was one. */
  readonly status: number | undefined;
  /**
   * Set on the error of a write (putObjects, deleteObject) when an EARLIER attempt of the same
   * call failed in a way that does not prove the write was not applied (timeout, network error,
   * 5xx, undecodable reply). The write may then have been applied, whatever this error says: a
   * 409 may be our own first attempt, and a 401 or 400 on a retry says nothing about it.
   */
  afterAmbiguousAttempt = false;
  /**
   * How long the server asked us to wait before trying again, in ms: its `Retry-After` header
   * (delta-seconds or an HTTP-date) on a 429 or 5xx reply. Undefined when the reply had none or
   * an unusable one. As sent (only bounded to a safe integer); the retry loop waits at least
   * this long before the next attempt, up to `MAX_RETRY_AFTER_MS`.
   */
  retryAfterMs: number | undefined = undefined;
  constructor(message: string, options?: { status?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = options?.status;
  }
}

/**
 * An error the server reported through a decodable `ErrorResponse`. The message quotes the
 * server's as the reference does, but its first 1,000 characters only, on one line (`serverMessage` keeps it whole).
 */
export class VssServerError extends VssError {
  constructor(
    readonly errorCode: vss.ErrorCode,
    /** The `ErrorResponse.message` exactly as the server sent it. */
    readonly serverMessage: string,
    prefix: string,
    options?: { status?: number; cause?: unknown },
  ) {
    super(`${prefix}${shownServerText(serverMessage, QUOTED_SERVER_MESSAGE_CHARS)}`, options);
  }
}

/** NO_SUCH_KEY_EXCEPTION: the requested key does not exist. */
export class NoSuchKeyError extends VssServerError {
  constructor(serverMessage: string, options?: { status?: number }) {
    super(vss.ErrorCode.NO_SUCH_KEY_EXCEPTION, serverMessage, 'Requested key does not exist: ', options);
  }
}

/** INVALID_REQUEST_EXCEPTION: the server rejected the request as malformed. */
export class InvalidRequestError extends VssServerError {
  constructor(serverMessage: string, options?: { status?: number }) {
    super(vss.ErrorCode.INVALID_REQUEST_EXCEPTION, serverMessage, 'Request sent to VSS Storage was invalid: ', options);
  }
}

/**
 * CONFLICT_EXCEPTION: a conditional write or delete found another version. With
 * `afterAmbiguousAttempt` the conflict may be our own first attempt having committed: the caller
 * must read the key back to find out, never assume either outcome.
 */
export class ConflictError extends VssServerError {
  constructor(serverMessage: string, options?: { status?: number }) {
    super(vss.ErrorCode.CONFLICT_EXCEPTION, serverMessage, 'Potential version conflict in write operation: ', options);
  }
}

/**
 * AUTH_EXCEPTION from the server, or a header provider that could not produce credentials
 * (then `fromHeaderProvider` is true, `status` is undefined and `cause` holds the reason).
 */
export class AuthError extends VssServerError {
  constructor(
    serverMessage: string,
    options?: { status?: number; cause?: unknown; fromHeaderProvider?: boolean },
  ) {
    super(vss.ErrorCode.AUTH_EXCEPTION, serverMessage, 'Authentication or Authorization failure: ', options);
    this.fromHeaderProvider = options?.fromHeaderProvider ?? false;
  }
  readonly fromHeaderProvider: boolean;
}

/** INTERNAL_SERVER_EXCEPTION, or a 2xx reply that violates the API (GetObject without value). */
export class InternalServerError extends VssServerError {
  constructor(serverMessage: string, options?: { status?: number }) {
    super(vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, serverMessage, 'InternalServerError: ', options);
  }
}

/**
 * The server speaks another protocol version, or did not send the version header at all.
 * `fromIntermediary` marks the second case on a 5xx, 408 or 429 reply: what a reverse proxy
 * or load balancer sends while the VSS server behind it restarts or is overloaded. Such a
 * reply says nothing about the server's protocol, so it is retried like any 5xx.
 */
export class VersionMismatchError extends VssError {
  readonly versionExpected = PROTOCOL_VERSION;
  readonly fromIntermediary: boolean;
  /** The reply's content-type, when it had one (`text/html` is a captive portal or a proxy's page). */
  readonly contentType: string | undefined;
  constructor(
    readonly versionServed: string | undefined,
    options?: { status?: number; contentType?: string },
  ) {
    const status = options?.status;
    const fromIntermediary = versionServed === undefined && status !== undefined && (status >= 500 || status === 408 || status === 429);
    let message: string;
    if (versionServed !== undefined) {
      message = `The VSS server and client speak different versions of the VSS protocol, the server serves version ${versionServed}, client expects ${PROTOCOL_VERSION}`;
    } else {
      message = 'The server did not set the `vss-protocol-version` header';
      // The status tells an outage (a proxy's 502) from an old server. A foreign content-type
      // (HTML from a captive portal, a corporate proxy or a wrong base URL) says the reply is not
      // from a VSS server at all; a 2xx without one keeps the reference text.
      const contentType = options?.contentType?.slice(0, 100);
      const foreign = contentType !== undefined && !/^application\/(octet-stream|x-protobuf|protobuf)\b/i.test(contentType);
      const typed = foreign ? ` with content-type ${contentType}` : '';
      if (fromIntermediary) message += ` (on an HTTP ${status} reply${typed}, likely from a proxy in front of an unavailable VSS server)`;
      else if (status !== undefined && (status < 200 || status > 299)) message += ` (on an HTTP ${status} reply${typed})`;
      else if (foreign) message += ` (on ${status === undefined ? 'a' : `an HTTP ${status}`} reply${typed}: not a VSS server's reply, perhaps a captive portal, a proxy or a wrong base URL)`;
    }
    super(message, { status: options?.status });
    this.fromIntermediary = fromIntermediary;
    this.contentType = options?.contentType;
  }
}

/**
 * Why a request failed on the client side:
 * - `network`: the request could not be sent or the reply not received;
 * - `timeout`: the per-attempt deadline passed;
 * - `aborted`: the caller's AbortSignal fired;
 * - `decode`: the reply was not the expected protobuf (or not a decodable ErrorResponse);
 * - `unknown-error-code`: an ErrorResponse with UNKNOWN or an unrecognised code;
 * - `redirect`: the reply was an HTTP redirect, which VSS requests never follow (a fetch turns a
 *   redirected POST into a GET without its body, which a server takes for an empty request).
 */
export type VssClientFailure = 'network' | 'timeout' | 'aborted' | 'decode' | 'unknown-error-code' | 'redirect';

/** A client-side failure: network, timeout, abort, decoding, unknown error codes, redirects. */
export class VssClientError extends VssError {
  constructor(
    readonly reason: VssClientFailure,
    message: string,
    options?: { status?: number; cause?: unknown },
  ) {
    super(`InternalError: ${message}`, options);
  }
}

/** Which caller-supplied part of the retry loop threw: the policy (its filter), the onRetry hook, or the sleep. */
export type RetryHook = 'retryPolicy' | 'onRetry' | 'sleep';

/**
 * A caller-supplied retry callback (a policy's `nextDelay` or `skipRetryOnError` filter, the
 * `onRetry` hook, an injected `sleep`) threw while the loop handled a failed attempt, so no
 * further attempt was made. Both errors are kept: `cause` is what the callback threw (the bug
 * to fix), `attemptError` is the attempt's own failure (a `VssError` for the client's calls),
 * which is the call's real outcome. `status`, `retryAfterMs` and `afterAmbiguousAttempt` are
 * the attempt error's; `errorProvesNotApplied` answers for the attempt error.
 */
export class RetryHookError extends VssError {
  constructor(
    readonly hook: RetryHook,
    readonly attemptError: unknown,
    /** Attempts made, the failed one included. */
    readonly attemptsMade: number,
    hookError: unknown,
  ) {
    const what = hook === 'retryPolicy' ? 'the retry policy' : hook === 'onRetry' ? 'the onRetry hook' : 'the retry sleep';
    super(`${what} threw (${describeThrown(hookError)}) after attempt ${attemptsMade} failed with ${describeThrown(attemptError)}; no further attempt was made`, {
      status: attemptError instanceof VssError ? attemptError.status : undefined,
      cause: hookError,
    });
    if (attemptError instanceof VssError) {
      this.afterAmbiguousAttempt = attemptError.afterAmbiguousAttempt;
      this.retryAfterMs = attemptError.retryAfterMs;
    }
  }
}

/** `Name: message` of a thrown value, for messages that must name two errors at once. */
function describeThrown(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return String(value);
  } catch {
    return typeof value;
  }
}

/**
 * Whether a failed write is known NOT to have been applied: the server answered with a definite
 * rejection, or the request was never sent (header provider failure), and no earlier attempt of
 * the call left its outcome unknown. Any other failure (timeout, network, 5xx, undecodable
 * reply) leaves the write's outcome unknown.
 */
export function errorProvesNotApplied(error: unknown): boolean {
  if (error instanceof VssError && error.afterAmbiguousAttempt) return false;
  // A throwing retry callback changes nothing on the server: the attempt's error decides.
  if (error instanceof RetryHookError) return errorProvesNotApplied(error.attemptError);
  return (
    error instanceof NoSuchKeyError ||
    error instanceof InvalidRequestError ||
    error instanceof ConflictError ||
    error instanceof AuthError
  );
}

/**
 * Builds the typed error for a decoded `ErrorResponse`, exactly as the reference maps codes.
 * `describeBody` (the reply's content-type and first bytes) is quoted for an unknown code: an
 * empty or foreign body also decodes as an ErrorResponse, with code 0 and no message.
 */
export function errorFromResponse(response: vss.ErrorResponse, status: number, describeBody?: () => string): VssError {
  const message = response.message ?? '';
  switch (response.errorCode) {
    case vss.ErrorCode.NO_SUCH_KEY_EXCEPTION:
      return new NoSuchKeyError(message, { status });
    case vss.ErrorCode.INVALID_REQUEST_EXCEPTION:
      return new InvalidRequestError(message, { status });
    case vss.ErrorCode.CONFLICT_EXCEPTION:
      return new ConflictError(message, { status });
    case vss.ErrorCode.AUTH_EXCEPTION:
      return new AuthError(message, { status });
    case vss.ErrorCode.INTERNAL_SERVER_EXCEPTION:
      return new InternalServerError(message, { status });
    default:
      return new VssClientError(
        'unknown-error-code',
        `VSS responded with an unknown error code: ${response.errorCode}, message: ${shownServerText(message, QUOTED_SERVER_MESSAGE_CHARS)} (HTTP ${status}${describeBody ? `, ${describeBody()}` : ''})`,
        { status },
      );
  }
}
