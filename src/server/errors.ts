/**
 * The server's typed errors. Each maps to exactly one HTTP status and one protobuf
 * `ErrorCode`, so the HTTP layer never has to guess; anything else that escapes an
 * operation is an internal error whose details are logged but never sent.
 */
import { vss } from '../protocol/index.js';

export abstract class VssServerError extends Error {
  abstract readonly httpStatus: number;
  abstract readonly errorCode: vss.ErrorCode;
}

/** The request is malformed or breaks a documented limit; clients must not retry it. */
export class InvalidRequestError extends VssServerError {
  readonly httpStatus = 400;
  readonly errorCode = vss.ErrorCode.INVALID_REQUEST_EXCEPTION;
  override readonly name = 'InvalidRequestError';
}

/** A version check failed; the whole PutObjects request was rolled back. */
export class ConflictError extends VssServerError {
  readonly httpStatus = 409;
  readonly errorCode = vss.ErrorCode.CONFLICT_EXCEPTION;
  override readonly name = 'ConflictError';
  constructor(message = 'Transaction could not be completed due to a possible conflict') {
    super(message);
  }
}

export class NoSuchKeyError extends VssServerError {
  readonly httpStatus = 404;
  readonly errorCode = vss.ErrorCode.NO_SUCH_KEY_EXCEPTION;
  override readonly name = 'NoSuchKeyError';
  constructor(message = 'Requested key not found.') {
    super(message);
  }
}

export class AuthError extends VssServerError {
  readonly httpStatus = 401;
  readonly errorCode = vss.ErrorCode.AUTH_EXCEPTION;
  override readonly name = 'AuthError';
}

/** The request body exceeds the configured limit (answered as a typed ErrorResponse). */
export class PayloadTooLargeError extends VssServerError {
  readonly httpStatus = 413;
  readonly errorCode = vss.ErrorCode.INVALID_REQUEST_EXCEPTION;
  override readonly name = 'PayloadTooLargeError';
  constructor(message = 'Request body too large') {
    super(message);
  }
}

/** Too many requests from one user token or one client address. Retryable. */
export class RateLimitedError extends VssServerError {
  readonly httpStatus = 429;
  // There is no dedicated code; INTERNAL_SERVER_EXCEPTION is the one clients treat as retryable.
  readonly errorCode = vss.ErrorCode.INTERNAL_SERVER_EXCEPTION;
  override readonly name = 'RateLimitedError';
  constructor(readonly retryAfterSeconds: number) {
    super('Rate limit exceeded');
  }
}

/** The message every unexpected failure is reported with; details stay in the log. */
export const INTERNAL_ERROR_MESSAGE = 'Unknown Server Error occurred.';
