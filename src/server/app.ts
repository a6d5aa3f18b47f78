/**
 * The HTTP face of the server: the four VSS operations plus /health and /metrics.
 * Pipeline of an operation, in the reference's order: (per-IP limit) → authorize →
 * (per-user limit) → read the body under the size limit → decode → run → encode.
 * Every response, errors included, carries `vss-protocol-version: 0`, and every error
 * is a protobuf ErrorResponse.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import getRawBody from 'raw-body';
import { hasLoneSurrogate, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, VSS_PATHS, vss, type VssOperation } from '../protocol/index.js';
import { hasRepeatedAuthorization, type Authorizer } from './auth/types.js';
import type { StorageBackend } from './backends/types.js';
import { HEALTH_PATH, METRICS_PATH, VSS_BASE_PATH } from './constants.js';
import { withDeadline } from './deadline.js';
import type { CorsPolicy } from './cors.js';
import {
  AuthError,
  INTERNAL_ERROR_MESSAGE,
  InvalidRequestError,
  PayloadTooLargeError,
  RateLimitedError,
  VssServerError,
} from './errors.js';
import { BODY_STALL_TIMEOUT_MS, MAX_TIMER_MS, MAX_USER_TOKEN_LENGTH, fitsLength } from './limits.js';
import type { ServerMetrics } from './metrics.js';
import { OPERATIONS, type OperationSpec } from './operations.js';
import { ipRateLimitKey, TokenBuckets, type RateLimitOptions } from './rate-limit.js';

export interface VssAppOptions {
  backend: StorageBackend;
  authorizer: Authorizer;
  /** Bodies larger than this are refused with 413 without being buffered. */
  maxRequestBodySize: number;
  logger: Logger;
  cors?: CorsPolicy;
  rateLimit?: RateLimitOptions;
  metrics?: ServerMetrics;
  /**
   * Reverse proxies in front of the server, for per-IP limits: `true` trusts the whole
   * X-Forwarded-For chain (the client is its first entry), a number trusts that many hops.
   */
  trustProxy?: boolean | number;
  /**
   * 'direct' (default) dispatches the four operations on Node's request objects; 'express'
   * mounts them as express routes like every other path. Same behaviour, but express's
   * per-request work more than doubles the server's CPU per operation (see docs/server.md);
   * kept to measure that difference (`BENCH_ROUTING=express npm run bench:server`).
   */
  operationRouting?: OperationRouting;
  /** How long GET /health waits for the backend before answering 503. Default DEFAULT_HEALTH_CHECK_TIMEOUT_MS. */
  healthCheckTimeoutMs?: number;
  /**
   * How long an operation's body may go without receiving a byte before the request is answered
   * with 408 (retryable); 0 waits forever. Default BODY_STALL_TIMEOUT_MS.
   */
  bodyStallTimeoutMs?: number;
}

/**
 * A database that stopped answering (or a pool whose every connection is stuck) would otherwise
 * hold each probe open forever; a prober then sees its own timeout at best, and the log nothing.
 */
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 5_000;

/** What the status label of a request's metrics says when the response was never completed. */
export const ABORTED_STATUS = 'aborted';

/**
 * The operation label of requests that reached no endpoint: CORS preflights, and requests Node
 * refused before routing (malformed HTTP, headers too large or too slow).
 */
export const UNROUTED_ENDPOINT = 'other';

export type OperationRouting = 'direct' | 'express';

type RunOperation = (operation: OperationSpec, req: IncomingMessage, res: ServerResponse) => Promise<void>;

const OPERATION_BY_PATH = new Map<string, OperationSpec>(
  (Object.entries(VSS_PATHS) as Array<[VssOperation, string]>).map(([name, path]) => [VSS_BASE_PATH + path, OPERATIONS[name]]),
);

const OCTET_STREAM = 'application/octet-stream';

/** Which operation (or endpoint) answered a response, for metrics and logs. */
const endpointOf = new WeakMap<ServerResponse, string>();

/** `scheme://authority` at the start of an absolute-form request target (RFC 9112 §3.2.2). */
const ABSOLUTE_FORM_PREFIX = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i;

/**
 * The request path without the query string (not decoded, exactly like the reference). An
 * absolute-form target (`POST http://host/vss/getObject`, which servers must accept and some
 * proxies send) has the path of its URI, as with the reference's hyper and express's router.
 */
function pathOf(url: string | undefined): string {
  if (url === undefined) return '/';
  let path = url;
  const prefix = path.startsWith('/') ? null : ABSOLUTE_FORM_PREFIX.exec(path);
  if (prefix) path = path.slice(prefix[0].length) || '/';
  const query = path.indexOf('?');
  return query === -1 ? path : path.slice(0, query);
}

/** Writes a protobuf ErrorResponse. */
export function sendError(res: ServerResponse, status: number, errorCode: vss.ErrorCode, message: string): void {
  const body = vss.ErrorResponse.encode({ errorCode, message }).finish();
  res.statusCode = status;
  res.setHeader('content-type', OCTET_STREAM);
  res.end(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}

/**
 * The body stopped arriving (see BODY_STALL_TIMEOUT_MS). Nothing was wrong with the request, so
 * the client is told to retry: 408 with the code clients treat as retryable.
 */
class BodyStalledError extends VssServerError {
  readonly httpStatus = 408;
  readonly errorCode = vss.ErrorCode.INTERNAL_SERVER_EXCEPTION;
  override readonly name = 'BodyStalledError';
  constructor() {
    super('Request not received in time');
  }
}

async function readWholeBody(req: IncomingMessage, limit: number): Promise<Buffer> {
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

/**
 * Reads the request body, failing as soon as it exceeds `limit` bytes (nothing past it is kept),
 * or once no byte has arrived for `stallTimeoutMs` (0: never). The server has no limit on the
 * whole upload (Node's requestTimeout is off, see server.ts): it failed every slow but steady
 * upload of a large value, on every retry, while a stalled one is all that needs cutting off.
 */
async function readBody(req: IncomingMessage, limit: number, stallTimeoutMs: number): Promise<Buffer> {
  const reading = readWholeBody(req, limit);
  if (stallTimeoutMs === 0) return reading;
  let timer: NodeJS.Timeout | undefined;
  let chunks = 0;
  const onData = () => {
    chunks += 1;
    // Also re-arms a timer that has fired, whose verdict is still pending (below).
    timer?.refresh();
  };
  const stalled = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      // Node runs due timers before it reads sockets: after the event loop was held for longer
      // than the timeout (a long synchronous PGlite call on a loaded machine), bytes that
      // arrived meanwhile are read only after this callback. Decide once they have been.
      const seen = chunks;
      setImmediate(() => {
        if (chunks === seen) reject(new BodyStalledError());
      });
    }, stallTimeoutMs);
  });
  req.on('data', onData);
  try {
    // After a stall, `reading` settles when the connection closes (the 408 closes it).
    return await Promise.race([reading, stalled]);
  } finally {
    clearTimeout(timer);
    req.off('data', onData);
  }
}

/** The client hung up mid-request; there is nobody to answer. */
class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError';
}

function checkUserToken(userToken: string): string {
  // The reference lets such tokens through to fail later as 500s; they can never own data.
  // A lone surrogate (possible in a JWT `sub` escaped as \ud800) would be stored as U+FFFD,
  // merging users that differ only there; the reference's JSON parser refuses it too.
  const usable =
    userToken.length > 0 && fitsLength(userToken, MAX_USER_TOKEN_LENGTH) && !userToken.includes('\0') && !hasLoneSurrogate(userToken);
  if (!usable) {
    throw new AuthError(`User token must be 1 to ${MAX_USER_TOKEN_LENGTH} characters of valid Unicode without NUL`);
  }
  return userToken;
}

/** The client address for per-IP limits, honouring the configured trusted proxies. */
export function clientAddress(req: IncomingMessage, trustProxy: boolean | number | undefined): string {
  const peer = req.socket.remoteAddress ?? 'unknown';
  if (!trustProxy) return peer;
  const header = req.headers['x-forwarded-for'];
  const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
  if (forwarded.length === 0) return peer;
  if (trustProxy === true) return forwarded[0];
  // Nearest first: the peer, then X-Forwarded-For from right to left; skip `trustProxy` proxies.
  const chain = [peer, ...forwarded.reverse()];
  return chain[Math.min(trustProxy, chain.length - 1)];
}

/** Answers an error thrown anywhere in request handling. */
function respondWithError(req: IncomingMessage, res: ServerResponse, error: unknown, logger: Logger): void {
  const path = pathOf(req.url);
  if (res.headersSent) {
    logger.error({ err: error, path }, 'error after the response started');
    res.destroy();
    return;
  }
  if (error instanceof ClientGoneError) {
    res.destroy();
    return;
  }
  // A request whose body we did not read to the end cannot share its connection safely.
  if (!req.complete) res.setHeader('connection', 'close');
  if (error instanceof VssServerError) {
    if (error instanceof RateLimitedError) res.setHeader('retry-after', String(error.retryAfterSeconds));
    logger.debug({ path, status: error.httpStatus, reason: error.message }, 'request refused');
    sendError(res, error.httpStatus, error.errorCode, error.message);
    return;
  }
  // Malformed input caught by express itself (e.g. a bad URI) carries a 4xx status.
  const status = (error as { status?: number; statusCode?: number }).status ?? (error as { statusCode?: number }).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    sendError(res, status, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, 'Invalid request');
    return;
  }
  logger.error({ err: error, path, operation: endpointOf.get(res) }, 'internal error');
  sendError(res, 500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, INTERNAL_ERROR_MESSAGE);
}

/**
 * express app for everything that is not a VSS operation (/health, /metrics, unknown paths),
 * and for the operations too when `operationRoutes` is given.
 */
function createExpressApp(options: VssAppOptions, operationRoutes?: RunOperation): express.Express {
  const { backend, logger, metrics } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('case sensitive routing', true);
  app.set('strict routing', true);

  if (operationRoutes) {
    for (const [path, operation] of OPERATION_BY_PATH) {
      app.all(path, (req: Request, res: Response, next: NextFunction) => {
        endpointOf.set(res, operation.name);
        operationRoutes(operation, req, res).catch(next);
      });
    }
  }

  const healthTimeoutMs = options.healthCheckTimeoutMs ?? DEFAULT_HEALTH_CHECK_TIMEOUT_MS;
  // Probes arriving while a check is still running share it, so a hung database does not
  // collect one waiting check (and one waiter for a pooled connection) per probe.
  let runningCheck: Promise<void> | undefined;
  const checkHealth = (): Promise<void> => {
    runningCheck ??= backend.checkHealth().finally(() => {
      runningCheck = undefined;
    });
    return runningCheck;
  };
  // /health is unauthenticated and not rate limited: while the database is down, an error line
  // (with a stack) per probe would let anyone fill the log. The change is what matters: the
  // first failure at error, the same failure again at debug, the recovery at info.
  let failingSince: string | undefined;
  app.get(HEALTH_PATH, async (_req: Request, res: Response) => {
    endpointOf.set(res, 'health');
    try {
      await withDeadline(checkHealth(), healthTimeoutMs, () => new Error(`the ${backend.kind} backend did not answer within ${healthTimeoutMs} ms`));
      if (failingSince !== undefined) logger.info({ failingSince }, 'health check passes again');
      failingSince = undefined;
      res.status(200).json({ status: 'ok', backend: backend.kind });
    } catch (error) {
      if (failingSince === undefined) {
        failingSince = new Date().toISOString();
        logger.error({ err: error }, 'health check failed');
      } else {
        logger.debug({ err: error, failingSince }, 'health check still failing');
      }
      res.status(503).json({ status: 'unavailable', backend: backend.kind });
    }
  });

  if (metrics) {
    app.get(METRICS_PATH, async (_req: Request, res: Response) => {
      endpointOf.set(res, 'metrics');
      res.setHeader('content-type', metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    });
  }

  app.use((_req: Request, res: Response) => {
    endpointOf.set(res, 'unknown');
    sendError(res, 400, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, 'Invalid request path.');
  });

  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => respondWithError(req, res, error, logger));
  return app;
}

/**
 * The server's request handler. By default the four operation paths are dispatched directly on
 * Node's request objects and express serves the rest: express's routing more than doubled the
 * server's CPU per operation in the benchmark (docs/server.md).
 */
export function createVssHandler(options: VssAppOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { backend, authorizer, logger, metrics, cors, trustProxy } = options;
  const ipBuckets = options.rateLimit?.perIp ? new TokenBuckets(options.rateLimit.perIp) : undefined;
  const userBuckets = options.rateLimit?.perUser ? new TokenBuckets(options.rateLimit.perUser) : undefined;
  const observing = metrics !== undefined || logger.isLevelEnabled('debug');
  const bodyStallTimeoutMs = options.bodyStallTimeoutMs ?? BODY_STALL_TIMEOUT_MS;
  // A timer would take NaN or a negative value as 1 ms, and fail every upload.
  if (!(Number.isSafeInteger(bodyStallTimeoutMs) && bodyStallTimeoutMs >= 0 && bodyStallTimeoutMs <= MAX_TIMER_MS)) {
    throw new RangeError(`bodyStallTimeoutMs must be an integer from 0 to ${MAX_TIMER_MS} (ms), not ${bodyStallTimeoutMs}`);
  }
  let warnedUntrustedProxy = false;

  const runOperation: RunOperation = async (operation, req, res) => {
    if (ipBuckets) {
      if (!trustProxy && !warnedUntrustedProxy && req.headers['x-forwarded-for'] !== undefined) {
        // Behind a reverse proxy every client has the proxy's address, so one per-IP bucket
        // would throttle the whole service; say so once instead of failing silently.
        warnedUntrustedProxy = true;
        logger.warn(
          { peer: req.socket.remoteAddress },
          'per-IP rate limit: requests carry X-Forwarded-For but no proxy is trusted, so all clients behind the proxy share one limit; set VSS_TRUST_PROXY (trustProxy) to the number of proxies',
        );
      }
      const wait = ipBuckets.take(ipRateLimitKey(clientAddress(req, trustProxy)));
      if (wait > 0) throw new RateLimitedError(wait);
    }
    // The noop authorizer ignores credentials, so only the others can be misled by a repeat.
    if (req.headers.authorization !== undefined && authorizer.kind !== 'noop' && hasRepeatedAuthorization(req.rawHeaders)) {
      throw new AuthError('More than one Authorization header: the credentials are ambiguous.');
    }
    const userToken = checkUserToken(await authorizer.authorize(req.headers));
    if (userBuckets) {
      const wait = userBuckets.take(userToken);
      if (wait > 0) throw new RateLimitedError(wait);
    }
    const body = await readBody(req, options.maxRequestBodySize, bodyStallTimeoutMs);
    const response = await operation.run(backend, userToken, body);
    res.statusCode = 200;
    res.setHeader('content-type', OCTET_STREAM);
    res.end(Buffer.from(response.buffer, response.byteOffset, response.byteLength));
  };
  const routedByExpress = options.operationRouting === 'express';
  const app = createExpressApp(options, routedByExpress ? runOperation : undefined);

  return (req, res) => {
    res.setHeader(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION);
    if (observing) {
      const started = process.hrtime.bigint();
      // 'close', not 'finish': a response never completed (the client hung up, or shutdown cut
      // the connection) emits only 'close', and those are the requests worth seeing.
      res.once('close', () => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const endpoint = endpointOf.get(res) ?? UNROUTED_ENDPOINT;
        const status = res.writableFinished ? res.statusCode : ABORTED_STATUS;
        metrics?.observe(endpoint, status, seconds);
        logger.debug({ method: req.method, path: pathOf(req.url), endpoint, status, ms: Math.round(seconds * 1e4) / 10 }, 'request');
      });
    }
    if (cors?.apply(req, res)) return;
    // Any method on an operation path is processed, as the reference does (clients use POST).
    const operation = routedByExpress ? undefined : OPERATION_BY_PATH.get(pathOf(req.url));
    if (!operation) {
      app(req, res);
      return;
    }
    endpointOf.set(res, operation.name);
    runOperation(operation, req, res).catch((error: unknown) => respondWithError(req, res, error, logger));
  };
}
