/**
 * What crosses the thread boundary of the sync bridge: protobuf request/response bytes per
 * operation, and client errors flattened to plain data and rebuilt as the same typed classes.
 */
import {
  AuthError,
  ConflictError,
  InternalServerError,
  InvalidRequestError,
  NoSuchKeyError,
  VersionMismatchError,
  VssClientError,
  VssError,
  VssServerError,
  type VssClientFailure,
} from '../client/index.js';
import { vss, type VssOperation } from '../protocol/index.js';
import { StoreError, StoreIOError } from './errors.js';
import type { RequestOf, ResponseOf } from './effects.js';

interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

export const REQUEST_CODECS: { [K in VssOperation]: Codec<RequestOf[K]> } = {
  getObject: vss.GetObjectRequest,
  putObjects: vss.PutObjectRequest,
  deleteObject: vss.DeleteObjectRequest,
  listKeyVersions: vss.ListKeyVersionsRequest,
};

export const RESPONSE_CODECS: { [K in VssOperation]: Codec<ResponseOf[K]> } = {
  getObject: vss.GetObjectResponse as Codec<vss.GetObjectResponse>,
  putObjects: vss.PutObjectResponse as Codec<vss.PutObjectResponse>,
  deleteObject: vss.DeleteObjectResponse as Codec<vss.DeleteObjectResponse>,
  listKeyVersions: vss.ListKeyVersionsResponse as Codec<vss.ListKeyVersionsResponse>,
};

/** A client error as plain, structured-cloneable data. */
export interface WireError {
  name: string;
  message: string;
  status?: number;
  serverMessage?: string;
  reason?: string;
  afterAmbiguousAttempt?: boolean;
  /** The server's Retry-After wait, so that a caller of the blocking view can honour it too. */
  retryAfterMs?: number;
  fromHeaderProvider?: boolean;
  versionServed?: string;
  /**
   * The error's direct cause, flattened, with the first system error code (`ECONNREFUSED`...)
   * found along the cause chain: the LDK bridge maps network failures by that code.
   */
  cause?: { name: string; message: string; code?: string };
}

function causeOf(error: Error): WireError['cause'] {
  if (error.cause === undefined) return undefined;
  let code: string | undefined;
  for (let current: unknown = error.cause, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    const found = (current as Error & { code?: unknown }).code;
    if (typeof found === 'string') {
      code = found;
      break;
    }
  }
  const direct = error.cause;
  const flat = direct instanceof Error ? { name: direct.name, message: direct.message } : { name: 'Error', message: String(direct) };
  return code === undefined ? flat : { ...flat, code };
}

export function toWireError(error: unknown): WireError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) };
  const wire: WireError = { name: error.name, message: error.message };
  const cause = causeOf(error);
  if (cause) wire.cause = cause;
  if (error instanceof VssServerError) {
    wire.serverMessage = error.serverMessage;
    wire.status = error.status;
  }
  if (error instanceof VssError && error.afterAmbiguousAttempt) wire.afterAmbiguousAttempt = true;
  if (error instanceof VssError && error.retryAfterMs !== undefined) wire.retryAfterMs = error.retryAfterMs;
  if (error instanceof AuthError) wire.fromHeaderProvider = error.fromHeaderProvider;
  if (error instanceof VersionMismatchError) {
    wire.versionServed = error.versionServed;
    wire.status = error.status;
  }
  if (error instanceof VssClientError) {
    wire.reason = error.reason;
    wire.status = error.status;
  }
  return wire;
}

const CLIENT_PREFIX = 'InternalError: ';

/** Rebuilds the typed error a worker reported. */
export function fromWireError(wire: WireError): Error {
  const error = rebuildError(wire);
  if (error instanceof VssError) {
    error.afterAmbiguousAttempt = wire.afterAmbiguousAttempt ?? false;
    error.retryAfterMs = wire.retryAfterMs;
  }
  if (wire.cause && error.cause === undefined) {
    const cause = new Error(wire.cause.message);
    cause.name = wire.cause.name;
    error.cause = wire.cause.code === undefined ? cause : Object.assign(cause, { code: wire.cause.code });
  }
  return error;
}

function rebuildError(wire: WireError): Error {
  const status = wire.status === undefined ? {} : { status: wire.status };
  const server = wire.serverMessage ?? wire.message;
  switch (wire.name) {
    case 'NoSuchKeyError':
      return new NoSuchKeyError(server, status);
    case 'InvalidRequestError':
      return new InvalidRequestError(server, status);
    case 'InternalServerError':
      return new InternalServerError(server, status);
    case 'ConflictError':
      return new ConflictError(server, status);
    case 'AuthError':
      return new AuthError(server, { ...status, fromHeaderProvider: wire.fromHeaderProvider });
    case 'VersionMismatchError':
      return new VersionMismatchError(wire.versionServed, status);
    case 'VssClientError':
      return new VssClientError(
        (wire.reason ?? 'network') as VssClientFailure,
        wire.message.startsWith(CLIENT_PREFIX) ? wire.message.slice(CLIENT_PREFIX.length) : wire.message,
        status,
      );
    default: {
      const error: StoreError = new StoreIOError(`sync bridge worker: ${wire.name}: ${wire.message}`);
      return error;
    }
  }
}
