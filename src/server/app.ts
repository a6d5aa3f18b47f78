/**
 * The HTTP face of the server: an express app that routes the four VSS operations plus
 * /health and /metrics. Request pipeline for an operation, in the reference's order:
 * (per-IP limit) → authorize → (per-user limit) → read the body under the size limit →
 * decode → run → encode. Every response, errors included, carries `vss-protocol-version: 0`
 * and every error is a protobuf ErrorResponse.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import getRawBody from 'raw-body';
import { PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, VSS_PATHS, vss, type VssOperation } from '../protocol/index.js';
import type { Authorizer } from './auth/types.js';
import type { StorageBackend } from './backends/types.js';
import { HEALTH_PATH, METRICS_PATH, VSS_BASE_PATH } from './constants.js';
import type { CorsPolicy } from './cors.js';
import {
  AuthError,
  INTERNAL_ERROR_MESSAGE,
  InvalidRequestError,
  PayloadTooLargeError,
  RateLimitedError,
  VssServerError,
} from './errors.js';
import { MAX_USER_TOKEN_LENGTH, fitsLength } from './limits.js';
import type { ServerMetrics } from './metrics.js';
import { OPERATIONS, type OperationSpec } from './operations.js';
import { TokenBuckets, type RateLimitOptions } from './rate-limit.js';

export interface VssAppOptions {
  backend: StorageBackend;
  authorizer: Authorizer;
  /** Bodies larger than this are refused with 413 without being buffered. */
  maxRequestBodySize: number;
  logger: Logger;
  cors?: CorsPolicy;
  rateLimit?: RateLimitOptions;
  metrics?: ServerMetrics;
  /** Express `trust proxy` setting, so per-IP limits see the client behind a reverse proxy. */
  trustProxy?: boolean | number | string;
}

const OPERATION_BY_PATH = new Map<string, OperationSpec>(
  (Object.entries(VSS_PATHS) as Array<[VssOperation, string]>).map(([name, path]) => [VSS_BASE_PATH + path, OPERATIONS[name]]),
);

const OCTET_STREAM = 'application/octet-stream';

/** Writes a protobuf ErrorResponse. */
export function sendError(res: Response, status: number, errorCode: vss.ErrorCode, message: string): void {
  const body = vss.ErrorResponse.encode({ errorCode, message }).finish();
  res.status(status).setHeader('content-type', OCTET_STREAM);
  res.end(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}

/** Reads the request body, failing as soon as it exceeds `limit` bytes (nothing past it is kept). */
async function readBody(req: Request, limit: number): Promise<Buffer> {
  try {
    return await getRawBody(req, { length: req.headers['content-length'], limit });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') throw new PayloadTooLargeError();
    if (type === 'request.size.invalid') throw new InvalidRequestError('Request body length does not match Content-Length');
    if (type === 'request.aborted') throw new ClientGoneError();
    throw new InvalidRequestError('Request body could not be read');
  }
}

/** The client hung up mid-request; there is nobody to answer. */
class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError';
}

function checkUserToken(userToken: string): string {
  // The reference lets such tokens through to fail later as 500s; they can never own data.
  if (userToken.length === 0 || !fitsLength(userToken, MAX_USER_TOKEN_LENGTH) || userToken.includes('\0')) {
    throw new AuthError(`User token must be 1 to ${MAX_USER_TOKEN_LENGTH} characters without NUL`);
  }
  return userToken;
}

export function createVssApp(options: VssAppOptions): express.Express {
  const { backend, authorizer, logger, metrics, cors } = options;
  const ipBuckets = options.rateLimit?.perIp ? new TokenBuckets(options.rateLimit.perIp) : undefined;
  const userBuckets = options.rateLimit?.perUser ? new TokenBuckets(options.rateLimit.perUser) : undefined;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  if (options.trustProxy !== undefined) app.set('trust proxy', options.trustProxy);

  app.use((req: Request, res: Response, next: NextFunction) => {
    res.setHeader(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const operation = (res.locals.operation as string | undefined) ?? 'other';
      metrics?.observe(operation, res.statusCode, seconds);
      logger.debug({ method: req.method, path: req.path, operation, status: res.statusCode, ms: Math.round(seconds * 1e4) / 10 }, 'request');
    });
    if (cors?.apply(req, res)) return;
    next();
  });

  const health = async (_req: Request, res: Response) => {
    res.locals.operation = 'health';
    try {
      await backend.checkHealth();
      res.status(200).json({ status: 'ok', backend: backend.kind });
    } catch (error) {
      logger.error({ err: error }, 'health check failed');
      res.status(503).json({ status: 'unavailable', backend: backend.kind });
    }
  };
  app.get(HEALTH_PATH, health);

  if (metrics) {
    app.get(METRICS_PATH, async (_req: Request, res: Response) => {
      res.locals.operation = 'metrics';
      res.setHeader('content-type', metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    });
  }

  // Any method on an operation path is processed, as the reference does (clients use POST).
  app.use(async (req: Request, res: Response, next: NextFunction) => {
    const operation = OPERATION_BY_PATH.get(req.path);
    if (!operation) return next();
    res.locals.operation = operation.name;
    if (ipBuckets) {
      const wait = ipBuckets.take(`ip:${req.ip ?? 'unknown'}`);
      if (wait > 0) throw new RateLimitedError(wait);
    }
    const userToken = checkUserToken(await authorizer.authorize(req.headers));
    if (userBuckets) {
      const wait = userBuckets.take(userToken);
      if (wait > 0) throw new RateLimitedError(wait);
    }
    const body = await readBody(req, options.maxRequestBodySize);
    const response = await operation.run(backend, userToken, body);
    res.status(200).setHeader('content-type', OCTET_STREAM);
    res.end(Buffer.from(response.buffer, response.byteOffset, response.byteLength));
  });

  app.use((req: Request, res: Response) => {
    res.locals.operation = 'unknown';
    sendError(res, 400, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, 'Invalid request path.');
  });

  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) {
      logger.error({ err: error, path: req.path }, 'error after the response started');
      res.destroy();
      return;
    }
    // A request whose body we did not read to the end cannot share its connection safely.
    if (!req.complete) res.setHeader('connection', 'close');
    if (error instanceof ClientGoneError) {
      res.destroy();
      return;
    }
    if (error instanceof VssServerError) {
      if (error instanceof RateLimitedError) res.setHeader('retry-after', String(error.retryAfterSeconds));
      logger.debug({ path: req.path, status: error.httpStatus, reason: error.message }, 'request refused');
      sendError(res, error.httpStatus, error.errorCode, error.message);
      return;
    }
    // Malformed input caught by express itself (e.g. a bad URI) carries a 4xx status.
    const status = (error as { status?: number; statusCode?: number }).status ?? (error as { statusCode?: number }).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      sendError(res, status, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, 'Invalid request');
      return;
    }
    logger.error({ err: error, path: req.path, operation: res.locals.operation }, 'internal error');
    sendError(res, 500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, INTERNAL_ERROR_MESSAGE);
  });

  return app;
}
