/**
 * Environment configuration of `ldk-vss serve`, with the reference server's variable names
 * plus DATABASE_URL, VSS_AUTH, VSS_DATA_DIR and the operator extras. Every problem is reported
 * as a ConfigError naming the variable, which the CLI prints as one line before exiting.
 */
import { closest, distance } from 'fastest-levenshtein';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { JwtAuthorizer, JwtKeyError, parseRsaPublicKeyPem } from './auth/jwt.js';
import { DEFAULT_HOST, DEFAULT_PORT, HEALTH_PATH, METRICS_PATH, VSS_BASE_PATH } from './constants.js';
import { parseCorsOrigins } from './cors.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_MAX_REQUEST_BODY_SIZE, MAX_POSTGRES_TIMEOUT_MS, MAX_REQUEST_BODY_SIZE_LIMIT } from './limits.js';
import { parseRateLimit } from './rate-limit.js';
import type { AuthOption, BackendOption, LogLevel, VssServerOptions } from './server.js';

export { DEFAULT_PORT, DEFAULT_HOST, HEALTH_PATH, METRICS_PATH, VSS_BASE_PATH };

/** Where the embedded backend keeps its files when VSS_DATA_DIR is not set. */
export const DEFAULT_DATA_DIR = './.vss-data';

/** Every environment variable the server reads, with what it means (for docs, `--help` and checks). */
export const SERVER_ENV_DOCS = {
  VSS_BIND_ADDRESS: `host:port to listen on (default ${DEFAULT_HOST}:${DEFAULT_PORT}; use 0.0.0.0:${DEFAULT_PORT} in containers)`,
  VSS_MAX_REQUEST_BODY_SIZE: `request body limit in bytes (default ${DEFAULT_MAX_REQUEST_BODY_SIZE}, at most ${MAX_REQUEST_BODY_SIZE_LIMIT})`,
  VSS_LOG_LEVEL: 'trace | debug | info | warn | error | fatal | off (default info); JSON lines on stdout',
  VSS_AUTH: 'signature | jwt | noop (default: jwt when a JWT key is configured, else signature)',
  VSS_JWT_RSA_PEM: 'RSA public key or X.509 certificate (PEM text or a path to a PEM file) for jwt auth; a certificate is used only within its validity period',
  VSS_JWT_JWKS_PATH: 'path to a JSON Web Key Set file for jwt auth (alternative to VSS_JWT_RSA_PEM)',
  DATABASE_URL: 'postgres://user:password@host:port/database (selects the PostgreSQL backend)',
  VSS_PSQL_USERNAME: 'PostgreSQL user (reference-style settings; selects the PostgreSQL backend)',
  VSS_PSQL_PASSWORD: 'PostgreSQL password',
  VSS_PSQL_ADDRESS: 'PostgreSQL host:port (default 127.0.0.1:5432)',
  VSS_PSQL_DEFAULT_DB: 'database used to create the VSS database if missing (default postgres)',
  VSS_PSQL_VSS_DB: 'the VSS database (default vss)',
  VSS_PSQL_TLS: 'any value, even empty: connect to PostgreSQL over TLS, verifying against the system roots',
  VSS_PSQL_CRT_PEM: 'root certificate (PEM text or path) to trust for PostgreSQL TLS; implies TLS',
  VSS_PSQL_POOL_SIZE: 'PostgreSQL connection pool size (default 10)',
  VSS_PSQL_LOCK_TIMEOUT_MS: `how long a request's statement may wait for a row lock before failing with a 500 (default ${DEFAULT_LOCK_TIMEOUT_MS}; 0 waits forever)`,
  VSS_PSQL_CONNECT_TIMEOUT_MS: `how long getting a PostgreSQL connection may take (opening one, or waiting for a pooled one) before the request fails with a 500 (default ${DEFAULT_CONNECT_TIMEOUT_MS}; 0 waits forever)`,
  VSS_PSQL_STATEMENT_TIMEOUT_MS: 'how long a request\'s statement may run before failing with a 500 (default 0: no limit; a large value takes long to write)',
  VSS_DATA_DIR: `directory of the embedded PGlite database used when no PostgreSQL is configured (default ${DEFAULT_DATA_DIR})`,
  VSS_CORS_ORIGINS: 'comma-separated browser origins allowed to call the server, or * (default: CORS off)',
  VSS_RATE_LIMIT: 'e.g. 100/s (per user and per IP) or user=100/s,ip=1000/min (default off)',
  VSS_TRUST_PROXY: 'reverse proxies in front of the server, for per-IP limits: a hop count (e.g. 1) or true for the whole X-Forwarded-For chain',
  VSS_METRICS: `true to serve Prometheus metrics at ${METRICS_PATH} (default false)`,
  VSS_SHUTDOWN_GRACE_MS: 'how long SIGTERM waits for in-flight requests before closing connections (default 10000)',
} as const;

export type ServerEnvVar = keyof typeof SERVER_ENV_DOCS;
export const SERVER_ENV_VARS: readonly ServerEnvVar[] = Object.keys(SERVER_ENV_DOCS) as ServerEnvVar[];

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly variable: string,
    readonly problem: string,
  ) {
    super(`${variable}: ${problem}`);
  }
}

export interface ServeConfig {
  options: VssServerOptions & { host: string; port: number; backend: BackendOption; auth: AuthOption; logLevel: LogLevel };
  /** Where the data lives, for the startup log (never contains a password). */
  storageDescription: string;
  /**
   * One line per `VSS_*` variable that is set but not read (a typo such as `VSS_PSQL_ADRESS`
   * would otherwise go unnoticed), naming the known variable it most likely meant.
   */
  warnings: string[];
}

/** The reference server's variables this server does not read, and what to do instead. */
const UNSUPPORTED_REFERENCE_VARS: Readonly<Record<string, string>> = {
  VSS_LOG_FILE: 'is the reference server\'s log file; ldk-vss writes JSON logs to stdout (redirect them instead)',
};

/** Warnings for `VSS_*` variables that are set but not part of the configuration. */
export function unknownVariableWarnings(env: Env): string[] {
  const known = new Set<string>(SERVER_ENV_VARS);
  return Object.keys(env)
    .filter((name) => name.startsWith('VSS_') && !known.has(name) && env[name] !== undefined)
    .sort()
    .map((name) => {
      const unsupported = UNSUPPORTED_REFERENCE_VARS[name];
      if (unsupported) return `${name} ${unsupported}`;
      const likely = closest(name, [...SERVER_ENV_VARS]);
      const hint = distance(name, likely) <= 2 ? `; did you mean ${likely}?` : '';
      return `${name} is set but not read by ldk-vss serve${hint} (ldk-vss serve --help lists the variables)`;
    });
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS: Record<string, LogLevel> = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  error: 'error',
  fatal: 'fatal',
  off: 'silent',
  silent: 'silent',
};

function value(env: Env, name: ServerEnvVar): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? undefined : raw.trim();
}

/** Credentials are taken as given: a space may be part of a password. */
function credential(env: Env, name: 'VSS_PSQL_USERNAME' | 'VSS_PSQL_PASSWORD'): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

/**
 * Like the reference, VSS_PSQL_TLS asks for TLS by being set at all, even to nothing: an empty
 * value must not quietly mean a plaintext connection.
 */
const tlsRequested = (env: Env) => env.VSS_PSQL_TLS !== undefined;

/** Letters, digits, '.', '-' and '_' (container service names use '_'): hostnames and IPv4 addresses. */
const HOSTNAME = /^[A-Za-z0-9_.-]+$/;

/** Parses `host:port`, `[v6]:port` or a hostname (hostnames allowed, like the reference). */
export function parseBindAddress(text: string): { host: string; port: number } {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!match) throw new Error(`"${text}" is not host:port (e.g. 127.0.0.1:8080 or [::1]:8080)`);
  const [, host, portText] = match;
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`port ${portText} is out of range 0-65535`);
  if (text.startsWith('[')) {
    if (isIP(host) !== 6) throw new Error(`"${host}" is not an IPv6 address`);
  } else if (!HOSTNAME.test(host)) {
    // The host ends up in a URL (VSS_PSQL_ADDRESS): '/', '@', '?' or '#' would silently move
    // the rest into another part of it, a space would make it unparseable.
    throw new Error(`"${host}" is not a hostname or IP address`);
  }
  return { host, port };
}

function parseInteger(name: ServerEnvVar, text: string, min: number, max: number): number {
  // Said with the range: "-1 is not a non-negative integer" leaves the operator guessing the bounds.
  if (!/^\d+$/.test(text)) throw new ConfigError(name, `"${text}" is not an integer from ${min} to ${max}`);
  const parsed = Number(text);
  if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
    throw new ConfigError(name, `${text} is out of range (${min} to ${max})`);
  }
  return parsed;
}

function parseBoolean(name: ServerEnvVar, text: string): boolean {
  const lowered = text.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(lowered)) return true;
  if (['0', 'false', 'no', 'off'].includes(lowered)) return false;
  throw new ConfigError(name, `"${text}" is not true or false`);
}

const MAX_TRUSTED_PROXIES = 100;

function parseTrustProxy(text: string): boolean | number {
  const lowered = text.toLowerCase();
  if (lowered === 'true') return true;
  if (lowered === 'false') return false;
  if (!/^\d+$/.test(text)) throw new ConfigError('VSS_TRUST_PROXY', `"${text}" is neither true, false nor a number of proxies from 0 to ${MAX_TRUSTED_PROXIES}`);
  return parseInteger('VSS_TRUST_PROXY', text, 0, MAX_TRUSTED_PROXIES);
}

/** A PEM given inline or as a path to a file. */
function pemText(name: ServerEnvVar, text: string): string {
  if (text.includes('-----BEGIN')) return text.replace(/\\n/g, '\n');
  if (!existsSync(text)) throw new ConfigError(name, 'is neither PEM text nor the path of an existing file');
  try {
    return readFileSync(text, 'utf8').trim();
  } catch (error) {
    throw new ConfigError(name, `cannot read ${text}: ${(error as Error).message}`);
  }
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g;

/**
 * VSS_PSQL_CRT_PEM's certificates, each parsed (X509Certificate), lines trimmed of indentation.
 * Node's TLS silently skips what it cannot parse, so a DER file, a key or a damaged certificate
 * would otherwise surface only as an unverifiable server certificate on every connection.
 */
function rootCertificates(text: string): string {
  const blocks = (text.match(CERTIFICATE_BLOCK) ?? []).map((block) =>
    block
      .split(/\r?\n/)
      .map((line) => line.trim())
      .join('\n'),
  );
  if (blocks.length === 0) {
    const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(text)?.[1];
    throw new ConfigError(
      'VSS_PSQL_CRT_PEM',
      label !== undefined
        ? `holds a PEM ${label}, not the root certificate (-----BEGIN CERTIFICATE-----) to trust`
        : 'holds no PEM certificate (-----BEGIN CERTIFICATE-----); convert a DER file with `openssl x509 -inform der -in root.crt -out root.pem`',
    );
  }
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new ConfigError('VSS_PSQL_CRT_PEM', `certificate ${i + 1} of ${blocks.length} is not a valid X.509 certificate (${(error as Error).message})`);
    }
  });
  return blocks.join('\n');
}

function redactedUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  // pg also takes the password (and TLS key material) as query parameters.
  for (const name of ['password', 'sslpassword', 'sslkey']) if (parsed.searchParams.has(name)) parsed.searchParams.set(name, '***');
  return parsed.toString();
}

function postgresBackend(env: Env): { backend: BackendOption; description: string } | undefined {
  const databaseUrl = value(env, 'DATABASE_URL');
  const partNames = ['VSS_PSQL_USERNAME', 'VSS_PSQL_PASSWORD', 'VSS_PSQL_ADDRESS', 'VSS_PSQL_VSS_DB'] as const;
  const partsGiven = partNames.filter((name) =>
    name === 'VSS_PSQL_USERNAME' || name === 'VSS_PSQL_PASSWORD' ? credential(env, name) !== undefined : value(env, name) !== undefined,
  );
  let url: string;
  if (databaseUrl !== undefined) {
    if (partsGiven.length > 0) {
      throw new ConfigError(partsGiven[0], 'conflicts with DATABASE_URL; configure PostgreSQL with one or the other');
    }
    let parsed: URL;
    try {
      parsed = new URL(databaseUrl);
    } catch {
      throw new ConfigError('DATABASE_URL', 'is not a URL such as postgres://user:password@host:5432/vss');
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      throw new ConfigError('DATABASE_URL', `scheme must be postgres:// or postgresql://, not ${parsed.protocol}//`);
    }
    url = databaseUrl;
  } else if (partsGiven.length > 0) {
    const address = value(env, 'VSS_PSQL_ADDRESS') ?? '127.0.0.1:5432';
    try {
      parseBindAddress(address);
    } catch (error) {
      throw new ConfigError('VSS_PSQL_ADDRESS', (error as Error).message);
    }
    const user = encodeURIComponent(credential(env, 'VSS_PSQL_USERNAME') ?? 'postgres');
    const password = credential(env, 'VSS_PSQL_PASSWORD');
    const credentials = password === undefined ? user : `${user}:${encodeURIComponent(password)}`;
    url = `postgresql://${credentials}@${address}/${encodeURIComponent(value(env, 'VSS_PSQL_VSS_DB') ?? 'vss')}`;
  } else {
    // These only tune a PostgreSQL connection. Given without one, they mean the connection
    // settings went missing (an unset shell variable, a typo): starting on the embedded
    // database instead would serve every wallet an empty store.
    if (env.DATABASE_URL !== undefined) {
      throw new ConfigError('DATABASE_URL', 'is set but empty; unset it to use the embedded PGlite database');
    }
    const orphan = (['VSS_PSQL_DEFAULT_DB', 'VSS_PSQL_TLS', 'VSS_PSQL_CRT_PEM', 'VSS_PSQL_POOL_SIZE', 'VSS_PSQL_LOCK_TIMEOUT_MS', 'VSS_PSQL_STATEMENT_TIMEOUT_MS', 'VSS_PSQL_CONNECT_TIMEOUT_MS'] as const).find((name) =>
      name === 'VSS_PSQL_TLS' ? tlsRequested(env) : value(env, name) !== undefined,
    );
    if (orphan !== undefined) {
      throw new ConfigError(orphan, `is set but no PostgreSQL is configured (set DATABASE_URL or ${partNames.join('/')}); refusing to fall back to the embedded PGlite database`);
    }
    return undefined;
  }
  const crt = value(env, 'VSS_PSQL_CRT_PEM');
  const ssl = crt !== undefined ? { ca: rootCertificates(pemText('VSS_PSQL_CRT_PEM', crt)) } : tlsRequested(env) ? true : undefined;
  const poolText = value(env, 'VSS_PSQL_POOL_SIZE');
  const lockText = value(env, 'VSS_PSQL_LOCK_TIMEOUT_MS');
  const statementText = value(env, 'VSS_PSQL_STATEMENT_TIMEOUT_MS');
  const connectText = value(env, 'VSS_PSQL_CONNECT_TIMEOUT_MS');
  return {
    backend: {
      kind: 'postgres',
      url,
      ssl,
      poolSize: poolText === undefined ? undefined : parseInteger('VSS_PSQL_POOL_SIZE', poolText, 1, 1000),
      lockTimeoutMs: lockText === undefined ? undefined : parseInteger('VSS_PSQL_LOCK_TIMEOUT_MS', lockText, 0, MAX_POSTGRES_TIMEOUT_MS),
      statementTimeoutMs: statementText === undefined ? undefined : parseInteger('VSS_PSQL_STATEMENT_TIMEOUT_MS', statementText, 0, MAX_POSTGRES_TIMEOUT_MS),
      connectTimeoutMs: connectText === undefined ? undefined : parseInteger('VSS_PSQL_CONNECT_TIMEOUT_MS', connectText, 0, MAX_POSTGRES_TIMEOUT_MS),
      defaultDatabase: value(env, 'VSS_PSQL_DEFAULT_DB') ?? 'postgres',
    },
    description: `postgres ${redactedUrl(url)}${ssl ? ' (TLS)' : ''} from ${databaseUrl !== undefined ? 'DATABASE_URL' : 'VSS_PSQL_*'}`,
  };
}

function authOption(env: Env): AuthOption {
  const pem = value(env, 'VSS_JWT_RSA_PEM');
  const jwksPath = value(env, 'VSS_JWT_JWKS_PATH');
  const requested = value(env, 'VSS_AUTH')?.toLowerCase();
  if (requested !== undefined && !['noop', 'jwt', 'signature'].includes(requested)) {
    throw new ConfigError('VSS_AUTH', `"${requested}" is not one of signature, jwt, noop`);
  }
  const kind = requested ?? (pem !== undefined || jwksPath !== undefined ? 'jwt' : 'signature');
  if (kind !== 'jwt') {
    if (pem !== undefined) throw new ConfigError('VSS_JWT_RSA_PEM', `is set but VSS_AUTH=${kind}; remove one of them`);
    if (jwksPath !== undefined) throw new ConfigError('VSS_JWT_JWKS_PATH', `is set but VSS_AUTH=${kind}; remove one of them`);
    return { kind } as AuthOption;
  }
  if (pem !== undefined && jwksPath !== undefined) throw new ConfigError('VSS_JWT_JWKS_PATH', 'conflicts with VSS_JWT_RSA_PEM; set only one');
  if (pem !== undefined) {
    const text = pemText('VSS_JWT_RSA_PEM', pem);
    try {
      parseRsaPublicKeyPem(text);
    } catch (error) {
      throw new ConfigError('VSS_JWT_RSA_PEM', error instanceof JwtKeyError ? error.message : String(error));
    }
    return { kind: 'jwt', publicKeyPem: text };
  }
  if (jwksPath !== undefined) {
    try {
      new JwtAuthorizer({ jwks: JSON.parse(readFileSync(jwksPath, 'utf8')) });
    } catch (error) {
      throw new ConfigError('VSS_JWT_JWKS_PATH', `cannot use ${jwksPath}: ${(error as Error).message}`);
    }
    return { kind: 'jwt', jwksPath };
  }
  throw new ConfigError('VSS_JWT_RSA_PEM', 'VSS_AUTH=jwt needs VSS_JWT_RSA_PEM or VSS_JWT_JWKS_PATH');
}

function wrap<T>(name: ServerEnvVar, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(name, (error as Error).message);
  }
}

/** Reads the server configuration from environment variables. Throws ConfigError. */
export function loadServeConfig(env: Env = process.env): ServeConfig {
  const bind = wrap('VSS_BIND_ADDRESS', () => parseBindAddress(value(env, 'VSS_BIND_ADDRESS') ?? `${DEFAULT_HOST}:${DEFAULT_PORT}`));
  const bodyText = value(env, 'VSS_MAX_REQUEST_BODY_SIZE');
  const maxRequestBodySize =
    bodyText === undefined ? DEFAULT_MAX_REQUEST_BODY_SIZE : parseInteger('VSS_MAX_REQUEST_BODY_SIZE', bodyText, 0, MAX_REQUEST_BODY_SIZE_LIMIT);
  const levelText = value(env, 'VSS_LOG_LEVEL')?.toLowerCase() ?? 'info';
  const logLevel = LOG_LEVELS[levelText];
  if (logLevel === undefined) throw new ConfigError('VSS_LOG_LEVEL', `"${levelText}" is not one of ${Object.keys(LOG_LEVELS).join(', ')}`);
  const auth = authOption(env);
  const postgres = postgresBackend(env);
  const dataDir = resolve(value(env, 'VSS_DATA_DIR') ?? DEFAULT_DATA_DIR);
  const backend: BackendOption = postgres?.backend ?? { kind: 'pglite', dataDir };
  const corsText = value(env, 'VSS_CORS_ORIGINS');
  const rateText = value(env, 'VSS_RATE_LIMIT');
  const metricsText = value(env, 'VSS_METRICS');
  const trustText = value(env, 'VSS_TRUST_PROXY');
  const graceText = value(env, 'VSS_SHUTDOWN_GRACE_MS');
  const corsOrigins = corsText === undefined ? undefined : wrap('VSS_CORS_ORIGINS', () => parseCorsOrigins(corsText));
  const rateLimit = rateText === undefined ? undefined : wrap('VSS_RATE_LIMIT', () => parseRateLimit(rateText));
  const metrics = metricsText === undefined ? false : parseBoolean('VSS_METRICS', metricsText);
  const trustProxy = trustText === undefined ? undefined : parseTrustProxy(trustText);
  const warnings = unknownVariableWarnings(env);
  if (trustProxy && rateLimit?.perIp === undefined) {
    // Only the per-IP limit reads X-Forwarded-For; an operator who set this expects an effect.
    warnings.push(`VSS_TRUST_PROXY is set but has no effect: only a per-IP limit (VSS_RATE_LIMIT=ip=… or a single rate) uses the client address`);
  }
  return {
    options: {
      host: bind.host,
      port: bind.port,
      backend,
      auth,
      logLevel,
      maxRequestBodySize,
      corsOrigins,
      rateLimit,
      metrics,
      trustProxy,
      shutdownGraceMs: graceText === undefined ? undefined : parseInteger('VSS_SHUTDOWN_GRACE_MS', graceText, 0, 3_600_000),
    },
    storageDescription: postgres?.description ?? `pglite ${dataDir} ${value(env, 'VSS_DATA_DIR') !== undefined ? 'from VSS_DATA_DIR' : '(the default VSS_DATA_DIR)'}`,
    warnings,
  };
}
