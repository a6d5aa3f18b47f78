/**
 * startVssServer: builds the backend, authorizer and app from options, listens, and returns a
 * handle whose close() drains in-flight requests before releasing what the server created.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import pino, { type Level, type Logger } from 'pino';
import { PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../protocol/index.js';
import { createVssHandler, UNROUTED_ENDPOINT, type OperationRouting } from './app.js';
import { JwtAuthorizer } from './auth/jwt.js';
import { NoopAuthorizer } from './auth/noop.js';
import { SignatureAuthorizer } from './auth/signature.js';
import type { Authorizer } from './auth/types.js';
import { MemoryBackend } from './backends/memory.js';
import type { StorageBackend } from './backends/types.js';
import { DEFAULT_HOST, VSS_BASE_PATH } from './constants.js';
import { CorsPolicy } from './cors.js';
import { withDeadline } from './deadline.js';
import { DEFAULT_MAX_REQUEST_BODY_SIZE, MAX_REQUEST_BODY_SIZE_LIMIT, MAX_TIMER_MS } from './limits.js';
import { ServerMetrics } from './metrics.js';
import { parseRateLimit, rateLimitRuleProblem, type RateLimitOptions, type RateLimitRule } from './rate-limit.js';

export type BackendOption =
  | 'memory'
  | 'pglite'
  | { kind: 'memory' }
  /** `maxValueSize`: largest value stored (default PGLITE_MAX_VALUE_SIZE, 128 MiB); larger ones get a 413. */
  | { kind: 'pglite'; dataDir?: string; maxValueSize?: number }
  | {
      kind: 'postgres';
      url: string;
      poolSize?: number;
      ssl?: PostgresSsl;
      createDatabase?: boolean;
      defaultDatabase?: string;
      /** PostgreSQL `lock_timeout` of request statements in ms (default 30 s; 0 waits forever). */
      lockTimeoutMs?: number;
      /** PostgreSQL `statement_timeout` of request statements in ms (default 0: no limit). */
      statementTimeoutMs?: number;
      /** Time to get a connection (open one, or wait for a pooled one) in ms (default 10 s; 0 waits forever). */
      connectTimeoutMs?: number;
    }
  /** An instance the caller owns: close() leaves it open, so a new server can reuse the data. */
  | StorageBackend;

/** TLS to PostgreSQL: true = verify against the system roots; `{ ca }` = trust this root PEM too. */
export type PostgresSsl = boolean | { ca: string };

export type AuthOption =
  | { kind: 'noop' }
  | { kind: 'signature' }
  | { kind: 'jwt'; publicKeyPem?: string; jwksPath?: string }
  | Authorizer;

export type LogLevel = Level | 'silent';

export interface VssServerOptions {
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 (default) picks a free one. */
  port?: number;
  /** Storage. Default 'memory' (`ldk-vss serve` defaults to PGlite). */
  backend?: BackendOption;
  /** Authentication. Default `{ kind: 'signature' }`, like the reference server. */
  auth?: AuthOption;
  /** Request body limit in bytes. Default 128 MiB, at most 1 GiB. */
  maxRequestBodySize?: number;
  /** pino level. Default 'silent' so tests stay quiet; ignored when `logger` is given. */
  logLevel?: LogLevel;
  logger?: Logger;
  /** Browser origins allowed to call the server (CORS). Default none. */
  corsOrigins?: readonly string[];
  /** Per-user and per-IP limits, or the VSS_RATE_LIMIT syntax (`100/s`). Default off. */
  rateLimit?: RateLimitOptions | string;
  /** Serve Prometheus metrics at /metrics. Default false. */
  metrics?: boolean;
  /** Reverse proxies to trust for per-IP limits: true = all X-Forwarded-For hops, n = n hops. */
  trustProxy?: boolean | number;
  /**
   * How long close() waits for in-flight requests before cutting connections. Default 10 s.
   * Closing a backend created here then gets what is left of it, but at least
   * MIN_BACKEND_CLOSE_MS; past that close() rejects with BackendCloseTimeoutError.
   */
  shutdownGraceMs?: number;
  /** How long GET /health waits for the backend before answering 503. Default 5 s. */
  healthCheckTimeoutMs?: number;
  /** How the four operations are routed: 'direct' (default, faster) or through express's router. */
  operationRouting?: OperationRouting;
}

export interface StartedVssServer {
  /** Base URL including /vss, e.g. http://127.0.0.1:41234/vss */
  url: string;
  port: number;
  backend: StorageBackend;
  authorizer: Authorizer;
  logger: Logger;
  /** Graceful: stops accepting, finishes in-flight requests, closes the backend only if created here. */
  close(): Promise<void>;
  /**
   * Resolves (never rejects) with the reason when the storage has stopped for good: the embedded
   * database after a PANIC or FATAL (a `PgliteStoppedError`). The server keeps listening, but
   * every request answers 500 and `/health` 503 from then on, so close() it and start a new one
   * on the same storage, which recovers from its write-ahead log; a process should exit non-zero
   * so that its supervisor restarts it, as `ldk-vss serve` does. Pending while the storage works,
   * and forever for storage that cannot stop this way (memory, PostgreSQL).
   */
  backendStopped: Promise<Error>;
}

/** The default of `shutdownGraceMs` (Docker's default stop timeout). */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/**
 * Closing the backend always gets at least this long, even when the requests used up the
 * grace period: PGlite writes a checkpoint and releases its data-directory lock on close.
 */
export const MIN_BACKEND_CLOSE_MS = 5_000;

/**
 * close() gave up waiting for the backend to close (a statement that never returns keeps a
 * pooled PostgreSQL connection busy, and the pool waits for it). The backend is abandoned: a
 * process should exit, which ends its database connections.
 */
export class BackendCloseTimeoutError extends Error {
  override readonly name = 'BackendCloseTimeoutError';
  constructor(
    readonly backendKind: string,
    readonly waitedMs: number,
  ) {
    super(`the ${backendKind} backend did not close within ${waitedMs} ms after the server stopped; abandoned it`);
  }
}

/** Configuration errors found before the server starts (the CLI prints them on one line). */
export class ServerConfigError extends Error {
  override readonly name = 'ServerConfigError';
}

/**
 * The server could not listen on its address (in use, not an address of this host, a hostname
 * that does not resolve, a privileged port). Keeps the system error's `code` (`EADDRINUSE`...).
 */
export class ServerListenError extends Error {
  override readonly name = 'ServerListenError';
  readonly code: string | undefined;
  constructor(
    /** `host:port` as asked for (`[v6]:port` for IPv6). */
    readonly address: string,
    readonly reason: Error,
  ) {
    super(`cannot listen on ${address}: ${reason.message}`, { cause: reason });
    this.code = (reason as NodeJS.ErrnoException).code;
  }
}

function isStorageBackend(value: unknown): value is StorageBackend {
  return typeof value === 'object' && value !== null && typeof (value as StorageBackend).get === 'function';
}

function isAuthorizer(value: unknown): value is Authorizer {
  return typeof value === 'object' && value !== null && typeof (value as Authorizer).authorize === 'function';
}

/** Creates (and migrates) the backend an option names; `owned` says whether close() should close it. */
export async function openBackend(option: BackendOption, logger: Logger, maxRequestBodySize?: number): Promise<{ backend: StorageBackend; owned: boolean }> {
  if (isStorageBackend(option)) return { backend: option, owned: false };
  const spec = typeof option === 'string' ? { kind: option } : option;
  switch (spec.kind) {
    case 'memory':
      return { backend: new MemoryBackend(), owned: true };
    case 'pglite': {
      const { PgliteBackend, PGLITE_MAX_VALUE_SIZE } = await import('./backends/pglite.js');
      const dataDir = 'dataDir' in spec ? spec.dataDir : undefined;
      const maxValueSize = 'maxValueSize' in spec ? spec.maxValueSize : undefined;
      const valueLimit = maxValueSize ?? PGLITE_MAX_VALUE_SIZE;
      if (maxRequestBodySize !== undefined && maxRequestBodySize > valueLimit) {
        // Raised body limits work for PostgreSQL; the embedded database cannot hold such values.
        logger.warn(
          { maxRequestBodySize, maxValueSize: valueLimit },
          `the embedded database stores values up to ${valueLimit} bytes: larger ones are refused with 413 although the request body limit admits them; use PostgreSQL for larger values`,
        );
      }
      return { backend: await PgliteBackend.open({ dataDir, logger, maxValueSize }), owned: true };
    }
    case 'postgres': {
      const { PostgresBackend } = await import('./backends/postgres.js');
      const pgSpec = spec as Extract<BackendOption, { kind: 'postgres' }>;
      return { backend: await PostgresBackend.open({ ...pgSpec, logger }), owned: true };
    }
    default:
      throw new ServerConfigError(`unknown backend ${JSON.stringify(spec)}`);
  }
}

export async function createAuthorizer(option: AuthOption, logger: Logger): Promise<Authorizer> {
  if (isAuthorizer(option)) return option;
  switch (option.kind) {
    case 'noop':
      logger.warn('noop authorizer active: every client shares the user "unauth-user" and is separated only by store_id; never use this in production');
      return new NoopAuthorizer();
    case 'signature':
      return new SignatureAuthorizer();
    case 'jwt': {
      if (option.publicKeyPem !== undefined) return new JwtAuthorizer({ publicKeyPem: option.publicKeyPem });
      if (option.jwksPath !== undefined) {
        const jwks = JSON.parse(await readFile(option.jwksPath, 'utf8'));
        return new JwtAuthorizer({ jwks });
      }
      throw new ServerConfigError('jwt auth needs publicKeyPem or jwksPath');
    }
    default:
      throw new ServerConfigError(`unknown auth ${JSON.stringify(option)}`);
  }
}

/** The answer to a connection-level error: status line and ErrorResponse. */
function clientErrorAnswer(code: string | undefined): { status: number; reason: string; errorCode: vss.ErrorCode; message: string } {
  switch (code) {
    // Node's headersTimeout (headers not complete within 60 s; a stalled body is the app's
    // BodyStalledError, answered the same way): nothing was wrong with the request,
    // so the client must see a retryable error, not an invalid request it would give up on.
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, reason: 'Request Timeout', errorCode: vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, message: 'Request not received in time' };
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, reason: 'Request Header Fields Too Large', errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: 'Request headers too large' };
    default:
      return { status: 400, reason: 'Bad Request', errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: 'Malformed HTTP request' };
  }
}

/**
 * Answers HTTP-level errors (before express sees a request) with a typed error and the version
 * header. Returns the status answered, or undefined when the connection was only closed (the
 * client already hung up: nobody to answer, nothing to count).
 */
export function answerClientError(
  error: NodeJS.ErrnoException,
  socket: Socket,
  headers: Readonly<Record<string, string>> = {},
  lingerMs: number = CLIENT_ERROR_LINGER_MS,
): number | undefined {
  if (!socket.writable || error.code === 'ECONNRESET') {
    socket.destroy();
    return undefined;
  }
  const { status, reason, errorCode, message } = clientErrorAnswer(error.code);
  const body = Buffer.from(vss.ErrorResponse.encode({ errorCode, message }).finish());
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.write(
    `HTTP/1.1 ${status} ${reason}\r\n${PROTOCOL_VERSION_HEADER}: ${PROTOCOL_VERSION}\r\n${extra}content-type: application/octet-stream\r\n` +
      `content-length: ${body.length}\r\nconnection: close\r\n\r\n`,
  );
  socket.end(body);
  // end() only half-closes: the connection lasts until the client closes its side, which a
  // client that never does (or keeps sending) would put off forever, one descriptor each, and a
  // shutdown would wait for it until its grace period ran out. The client gets this long to
  // read the answer; then the connection is cut.
  const linger = setTimeout(() => socket.destroy(), lingerMs);
  linger.unref();
  socket.once('close', () => clearTimeout(linger));
  return status;
}

/** How long a connection answered by answerClientError may stay open for the client to read the answer. */
export const CLIENT_ERROR_LINGER_MS = 5_000;

/**
 * The rate limits to apply, checked before any storage is opened: a rule refused afterwards
 * would leave the backend opened here open, and a PGlite data directory locked by this process.
 */
function checkedRateLimit(option: RateLimitOptions | string | undefined): RateLimitOptions | undefined {
  let rateLimit: RateLimitOptions | undefined;
  try {
    rateLimit = typeof option === 'string' ? parseRateLimit(option) : option;
  } catch (error) {
    throw new ServerConfigError(`rateLimit: ${(error as Error).message}`);
  }
  for (const [name, rule] of Object.entries(rateLimit ?? {}) as Array<[string, RateLimitRule | undefined]>) {
    const problem = rule === undefined ? undefined : rateLimitRuleProblem(rule);
    if (problem !== undefined) throw new ServerConfigError(`rateLimit.${name}: ${problem}`);
  }
  return rateLimit;
}

export async function startVssServer(options: VssServerOptions = {}): Promise<StartedVssServer> {
  const logger = options.logger ?? pino({ level: options.logLevel ?? 'silent' });
  const maxRequestBodySize = options.maxRequestBodySize ?? DEFAULT_MAX_REQUEST_BODY_SIZE;
  if (!Number.isSafeInteger(maxRequestBodySize) || maxRequestBodySize < 0 || maxRequestBodySize > MAX_REQUEST_BODY_SIZE_LIMIT) {
    throw new ServerConfigError(`maxRequestBodySize must be an integer from 0 to ${MAX_REQUEST_BODY_SIZE_LIMIT}`);
  }
  // Node would refuse it only at listen, after the storage opened, as a listen failure.
  const requested = options.port;
  if (requested !== undefined && !(Number.isSafeInteger(requested) && requested >= 0 && requested <= 65_535)) {
    throw new ServerConfigError(`port must be an integer from 0 to 65535 (0: any free port), not ${typeof requested === 'number' ? requested : JSON.stringify(requested)}`);
  }
  const rateLimit = checkedRateLimit(options.rateLimit);
  // A negative or fractional hop count picks no entry of the forwarding chain, and every
  // rate-limited request would fail with a 500 instead of the server refusing to start.
  const { trustProxy } = options;
  if (trustProxy !== undefined && typeof trustProxy !== 'boolean' && !(Number.isSafeInteger(trustProxy) && trustProxy >= 0)) {
    throw new ServerConfigError(`trustProxy must be true, false or a number of proxies (an integer from 0), not ${trustProxy}`);
  }
  // Checked before any storage opens; a timer would take NaN or a negative value as 1 ms, and a
  // health check given no time at all would answer 503 for a healthy backend.
  for (const [name, least] of [['shutdownGraceMs', 0], ['healthCheckTimeoutMs', 1]] as const) {
    const ms = options[name];
    if (ms !== undefined && !(Number.isSafeInteger(ms) && ms >= least && ms <= MAX_TIMER_MS)) {
      throw new ServerConfigError(`${name} must be an integer from ${least} to ${MAX_TIMER_MS} (ms), not ${ms}`);
    }
  }
  const authorizer = await createAuthorizer(options.auth ?? { kind: 'signature' }, logger);
  const { backend, owned } = await openBackend(options.backend ?? 'memory', logger, maxRequestBodySize);
  const metrics = options.metrics ? new ServerMetrics({ processMetrics: true }) : undefined;
  const cors = options.corsOrigins && options.corsOrigins.length > 0 ? new CorsPolicy({ origins: options.corsOrigins }) : undefined;
  const handler = createVssHandler({
    backend,
    authorizer,
    logger,
    maxRequestBodySize,
    metrics,
    rateLimit,
    cors,
    trustProxy: options.trustProxy,
    operationRouting: options.operationRouting,
    healthCheckTimeoutMs: options.healthCheckTimeoutMs,
  });

  // Responses not yet started when close() begins; they (and any request arriving on a
  // kept-alive connection meanwhile) answer with `Connection: close`, so a client does not send
  // its next request on a socket the shutdown is about to close (which would fail as a reset
  // that leaves it unsure whether a write was applied) but reconnects to the next instance.
  const pending = new Set<ServerResponse>();
  // Responses not yet written, per connection. A pipelining client (or one that sent more body
  // than its Content-Length) may have bytes Node cannot parse behind a request being served: the
  // error answer must follow that request's response, not go out in its place (the client would
  // take it for the answer to a request that may well have been applied).
  const unwritten = new WeakMap<Socket, Set<ServerResponse>>();
  let shuttingDown = false;
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    let onConnection = unwritten.get(req.socket);
    if (onConnection === undefined) unwritten.set(req.socket, (onConnection = new Set()));
    const responses = onConnection;
    responses.add(res);
    res.once('close', () => responses.delete(res));
    if (shuttingDown) res.setHeader('connection', 'close');
    else {
      pending.add(res);
      res.once('close', () => pending.delete(res));
    }
    handler(req, res);
  };
  // Node would answer a request without Host (400) or with an Expect other than 100-continue
  // (417) itself, without the protocol-version header or an ErrorResponse. The reference serves
  // both, and so do we: neither header means anything to VSS.
  // requestTimeout (Node's default: 300 s for the whole request) is off: it answered 408 to every
  // upload slower than the body size over 300 s (a 128 MiB value under 450 KB/s), on every retry.
  // A stalled body is cut off by the app instead (BODY_STALL_TIMEOUT_MS), and slow headers still
  // by headersTimeout, which Node would otherwise turn off along with requestTimeout.
  const server: Server = createServer({ keepAliveTimeout: 65_000, requireHostHeader: false, requestTimeout: 0, headersTimeout: 60_000 }, serve);
  server.on('checkExpectation', serve);
  const answer = (error: NodeJS.ErrnoException, socket: Socket) => {
    const status = answerClientError(error, socket, cors?.headersForUnknownOrigin());
    if (status === undefined) return;
    // These never reach the app's handler, so without this an operator would see neither
    // metrics nor logs for clients failing with 431 (headers too large) or 408 (headers too
    // slow). Debug level: each costs the client a single cheap request, like any refused one.
    metrics?.observe(UNROUTED_ENDPOINT, status);
    logger.debug({ code: error.code, status }, 'request refused before routing');
  };
  // Node reports the error again for every later chunk of an unparseable connection: one
  // waiting for its earlier responses (below) is answered once, when they are written.
  const refused = new WeakSet<Socket>();
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    if (error.code === 'ECONNRESET' || !socket.writable) {
      answer(error, socket);
      return;
    }
    if (refused.has(socket)) return;
    refused.add(socket);
    const before = [...(unwritten.get(socket) ?? [])];
    if (before.length === 0) answer(error, socket);
    else void Promise.all(before.map((res) => new Promise((resolve) => res.once('close', resolve)))).then(() => answer(error, socket));
  });
  const host = options.host ?? DEFAULT_HOST;
  const requestedPort = options.port ?? 0;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(requestedPort, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    if (owned) await backend.close();
    // Said as a listening problem: the CLI would otherwise report it as a failure to start on the
    // storage, and a hostname that does not resolve (getaddrinfo ENOTFOUND) reads like a database host.
    throw new ServerListenError(`${host.includes(':') ? `[${host}]` : host}:${requestedPort}`, error as Error);
  }
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host;
  const url = `http://${urlHost}:${port}${VSS_BASE_PATH}`;
  logger.info({ url, backend: backend.kind, auth: authorizer.kind, maxRequestBodySize }, 'VSS server listening');
  const certificateExpiresAt = authorizer instanceof JwtAuthorizer ? authorizer.certificateExpiresAt : undefined;
  if (certificateExpiresAt !== undefined) {
    logger.info({ certificateExpiresAt: certificateExpiresAt.toISOString() }, 'the JWT key comes from an X.509 certificate: every token is refused (401) once it expires');
  }

  let closing: Promise<void> | undefined;
  const backendStopped: Promise<Error> = backend.stopped ?? new Promise<Error>(() => {});
  void backendStopped.then((reason) => {
    if (!closing) logger.error({ err: reason }, 'storage stopped: every request fails until the server is restarted on it');
  });
  const close = () => {
    closing ??= (async () => {
      const graceMs = options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
      const started = performance.now();
      shuttingDown = true;
      for (const res of pending) if (!res.headersSent) res.setHeader('connection', 'close');
      pending.clear();
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle keep-alive connections would otherwise hold close() open; busy ones finish first.
      server.closeIdleConnections();
      const sweeper = setInterval(() => server.closeIdleConnections(), 50);
      const deadline = setTimeout(() => {
        logger.warn('shutdown grace period over; closing remaining connections');
        server.closeAllConnections();
      }, graceMs);
      try {
        await stopped;
      } finally {
        clearInterval(sweeper);
        clearTimeout(deadline);
      }
      if (owned) {
        // Bounded: a pool waits for statements still running on its connections (one stuck on a
        // lock, or on a database that stopped answering), which cutting the HTTP connections
        // does not end, and shutdown would hang until killed.
        const closeMs = Math.max(MIN_BACKEND_CLOSE_MS, Math.ceil(graceMs - (performance.now() - started)));
        await withDeadline(backend.close(), closeMs, () => new BackendCloseTimeoutError(backend.kind, closeMs));
      }
      logger.info('VSS server stopped');
    })();
    return closing;
  };
  return { url, port, backend, authorizer, logger, close, backendStopped };
}
