/**
 * Environment configuration: defaults, the reference variable names, DATABASE_URL, auth
 * selection, operator extras, and one clear error naming the variable for every bad value.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_DATA_DIR,
  DEFAULT_PORT,
  HEALTH_PATH,
  loadServeConfig,
  parseBindAddress,
  SERVER_ENV_VARS,
} from '../../src/server/config.js';
import { configError } from './helpers.js';
import { VALID_2000_TO_2099 } from './test-certificates.js';

const rsaPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ldk-vss-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('exported constants', () => {
  it('lists every variable the configuration reads (checked against the source) and the reference names', () => {
    const source = readFileSync(new URL('../../src/server/config.ts', import.meta.url), 'utf8');
    const read = new Set([...source.matchAll(/'((?:VSS_[A-Z_]+)|DATABASE_URL)'/g)].map((m) => m[1]));
    // The scan found the variables (a source that stops naming them literally must fail here).
    expect(read).toContain('VSS_BIND_ADDRESS');
    expect(read).toContain('DATABASE_URL');
    for (const name of read) expect(SERVER_ENV_VARS, `${name} is read but not listed`).toContain(name);
    for (const name of [
      'VSS_BIND_ADDRESS',
      'VSS_PSQL_USERNAME',
      'VSS_PSQL_PASSWORD',
      'VSS_PSQL_ADDRESS',
      'VSS_PSQL_DEFAULT_DB',
      'VSS_PSQL_VSS_DB',
      'VSS_PSQL_TLS',
      'VSS_PSQL_CRT_PEM',
      'VSS_JWT_RSA_PEM',
      'VSS_MAX_REQUEST_BODY_SIZE',
      'VSS_LOG_LEVEL',
      'DATABASE_URL',
      'VSS_AUTH',
      'VSS_DATA_DIR',
      'VSS_CORS_ORIGINS',
      'VSS_RATE_LIMIT',
      'VSS_METRICS',
    ]) {
      expect(SERVER_ENV_VARS).toContain(name);
    }
    expect(DEFAULT_PORT).toBe(8080);
    expect(HEALTH_PATH).toBe('/health');
  });
});

describe('loadServeConfig', () => {
  it('warns about VSS_* variables it does not read, naming the likely intended one', () => {
    const { warnings } = loadServeConfig({ VSS_PSQL_ADRESS: 'db:5432', VSS_LOG_FILE: '/var/log/vss.log', VSS_SOMETHING_ELSE: 'x', VSS_LOG_LEVEL: 'warn', HOME: '/root' });
    expect(warnings).toEqual([
      expect.stringMatching(/^VSS_LOG_FILE is the reference server's log file; ldk-vss writes JSON logs to stdout/),
      'VSS_PSQL_ADRESS is set but not read by ldk-vss serve; did you mean VSS_PSQL_ADDRESS? (ldk-vss serve --help lists the variables)',
      'VSS_SOMETHING_ELSE is set but not read by ldk-vss serve (ldk-vss serve --help lists the variables)',
    ]);
    expect(loadServeConfig(Object.fromEntries(SERVER_ENV_VARS.map((name) => [name, undefined]))).warnings).toEqual([]);
    expect(loadServeConfig({ VSS_LOG_LEVEL: 'debug', VSS_DATA_DIR: '/tmp/x' }).warnings).toEqual([]);
  });

  it('defaults to 127.0.0.1:8080, PGlite in ./.vss-data, signature auth, 128 MiB bodies, info logs', () => {
    const { options, storageDescription } = loadServeConfig({});
    expect(options).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      backend: { kind: 'pglite', dataDir: resolve(DEFAULT_DATA_DIR) },
      auth: { kind: 'signature' },
      maxRequestBodySize: 128 * 1024 * 1024,
      logLevel: 'info',
      metrics: false,
    });
    expect(options.corsOrigins).toBeUndefined();
    expect(options.rateLimit).toBeUndefined();
    expect(storageDescription).toContain('pglite');
  });

  it('reads the bind address, body limit, log level and data dir', () => {
    const { options } = loadServeConfig({
      VSS_BIND_ADDRESS: '[::1]:9000',
      VSS_MAX_REQUEST_BODY_SIZE: '1073741824',
      VSS_LOG_LEVEL: 'OFF',
      VSS_DATA_DIR: '/var/lib/vss',
    });
    expect(options).toMatchObject({ host: '::1', port: 9000, maxRequestBodySize: 1073741824, logLevel: 'silent', backend: { kind: 'pglite', dataDir: '/var/lib/vss' } });
    expect(parseBindAddress('vss.internal:8080')).toEqual({ host: 'vss.internal', port: 8080 });
    expect(parseBindAddress('my_db-1:5432')).toEqual({ host: 'my_db-1', port: 5432 });
  });

  it('selects PostgreSQL from DATABASE_URL, keeping the password out of the description', () => {
    const { options, storageDescription } = loadServeConfig({ DATABASE_URL: 'postgres://vss:s3cret@db:5432/vss', VSS_PSQL_TLS: '1', VSS_PSQL_POOL_SIZE: '20' });
    expect(options.backend).toEqual({ kind: 'postgres', url: 'postgres://vss:s3cret@db:5432/vss', ssl: true, poolSize: 20, defaultDatabase: 'postgres' });
    expect(storageDescription).not.toContain('s3cret');
    expect(storageDescription).toMatch(/ from DATABASE_URL$/);
    const inQuery = loadServeConfig({ DATABASE_URL: 'postgres://vss@db:5432/vss?password=s3cret&sslmode=require' }).storageDescription;
    expect(inQuery).not.toContain('s3cret');
    expect(inQuery).toContain('sslmode=require');
    // A password of spaces alone is still a PostgreSQL setting, not a reason to fall back to PGlite.
    expect(loadServeConfig({ VSS_PSQL_PASSWORD: '   ' }).options.backend).toMatchObject({ kind: 'postgres' });
  });

  it('reads the PostgreSQL lock, statement and connect timeouts (left to the backend\'s defaults when unset)', () => {
    const tuned = loadServeConfig({ DATABASE_URL: 'postgres://db/vss', VSS_PSQL_LOCK_TIMEOUT_MS: '0', VSS_PSQL_STATEMENT_TIMEOUT_MS: '60000', VSS_PSQL_CONNECT_TIMEOUT_MS: '2500' });
    expect(tuned.options.backend).toMatchObject({ kind: 'postgres', lockTimeoutMs: 0, statementTimeoutMs: 60000, connectTimeoutMs: 2500 });
    const plain = loadServeConfig({ DATABASE_URL: 'postgres://db/vss' }).options.backend as { lockTimeoutMs?: number; statementTimeoutMs?: number; connectTimeoutMs?: number };
    expect([plain.lockTimeoutMs, plain.statementTimeoutMs, plain.connectTimeoutMs]).toEqual([undefined, undefined, undefined]);
  });

  it('builds the URL from the reference VSS_PSQL_* variables, encoding credentials', () => {
    const { options } = loadServeConfig({
      VSS_PSQL_USERNAME: 'vss user',
      VSS_PSQL_PASSWORD: 'p@ss/word',
      VSS_PSQL_ADDRESS: 'db.internal:6543',
      VSS_PSQL_DEFAULT_DB: 'template1',
      VSS_PSQL_VSS_DB: 'vss',
      // Inline, with its line breaks written as \n (as an env file holds it).
      VSS_PSQL_CRT_PEM: VALID_2000_TO_2099.trim().replace(/\n/g, '\\n'),
    });
    expect(options.backend).toMatchObject({
      kind: 'postgres',
      url: 'postgresql://vss%20user:p%40ss%2Fword@db.internal:6543/vss',
      defaultDatabase: 'template1',
      ssl: { ca: VALID_2000_TO_2099.trim() },
    });
  });

  it('takes VSS_PSQL_TLS set to nothing as a request for TLS (like the reference), and credentials untrimmed', () => {
    const { options, storageDescription } = loadServeConfig({ VSS_PSQL_USERNAME: ' u', VSS_PSQL_PASSWORD: ' pw with spaces ', VSS_PSQL_TLS: '' });
    expect(options.backend).toMatchObject({ kind: 'postgres', url: 'postgresql://%20u:%20pw%20with%20spaces%20@127.0.0.1:5432/vss', ssl: true });
    expect(storageDescription).toContain('(TLS)');
    expect(storageDescription).not.toContain('spaces');
    expect(configError({ VSS_PSQL_TLS: '' }).variable).toBe('VSS_PSQL_TLS');
  });

  it('selects JWT when a key is configured (inline PEM or file), and noop only when asked', async () => {
    expect(loadServeConfig({ VSS_JWT_RSA_PEM: rsaPem }).options.auth).toEqual({ kind: 'jwt', publicKeyPem: rsaPem.trim() });
    const pemPath = join(dir, 'key.pem');
    await writeFile(pemPath, rsaPem);
    expect(loadServeConfig({ VSS_JWT_RSA_PEM: pemPath }).options.auth).toEqual({ kind: 'jwt', publicKeyPem: rsaPem.trim() });
    expect(loadServeConfig({ VSS_AUTH: 'noop' }).options.auth).toEqual({ kind: 'noop' });
    expect(loadServeConfig({ VSS_AUTH: 'Signature' }).options.auth).toEqual({ kind: 'signature' });
  });

  it('parses the operator extras', () => {
    const { options } = loadServeConfig({
      VSS_CORS_ORIGINS: 'https://a.example, http://localhost:3000',
      VSS_RATE_LIMIT: 'user=100/s,ip=600/min',
      VSS_METRICS: 'true',
      VSS_TRUST_PROXY: '1',
      VSS_SHUTDOWN_GRACE_MS: '2500',
    });
    expect(options).toMatchObject({
      corsOrigins: ['https://a.example', 'http://localhost:3000'],
      rateLimit: { perUser: { limit: 100, windowMs: 1000 }, perIp: { limit: 600, windowMs: 60_000 } },
      metrics: true,
      trustProxy: 1,
      shutdownGraceMs: 2500,
    });
  });

  it.each([
    [{ VSS_BIND_ADDRESS: 'localhost' }, 'VSS_BIND_ADDRESS'],
    [{ VSS_BIND_ADDRESS: '127.0.0.1:99999' }, 'VSS_BIND_ADDRESS'],
    [{ VSS_MAX_REQUEST_BODY_SIZE: '1073741825' }, 'VSS_MAX_REQUEST_BODY_SIZE'],
    [{ VSS_MAX_REQUEST_BODY_SIZE: '10MB' }, 'VSS_MAX_REQUEST_BODY_SIZE'],
    [{ VSS_LOG_LEVEL: 'loud' }, 'VSS_LOG_LEVEL'],
    [{ VSS_AUTH: 'magic' }, 'VSS_AUTH'],
    [{ VSS_AUTH: 'jwt' }, 'VSS_JWT_RSA_PEM'],
    [{ VSS_JWT_RSA_PEM: '-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----' }, 'VSS_JWT_RSA_PEM'],
    [{ VSS_JWT_RSA_PEM: '/does/not/exist.pem' }, 'VSS_JWT_RSA_PEM'],
    [{ VSS_AUTH: 'noop', VSS_JWT_RSA_PEM: rsaPem }, 'VSS_JWT_RSA_PEM'],
    [{ VSS_JWT_JWKS_PATH: '/does/not/exist.json' }, 'VSS_JWT_JWKS_PATH'],
    [{ DATABASE_URL: 'mysql://db/vss' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'not a url' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://db/vss', VSS_PSQL_ADDRESS: 'db:5432' }, 'VSS_PSQL_ADDRESS'],
    [{ VSS_PSQL_ADDRESS: 'db' }, 'VSS_PSQL_ADDRESS'],
    // Hosts that do not survive being put into the connection URL: unparseable (it used to escape
    // as a bare TypeError) or silently moving the rest into the path, the credentials or the query.
    [{ VSS_PSQL_ADDRESS: 'db host:5432' }, 'VSS_PSQL_ADDRESS'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_ADDRESS: 'db/x:5432' }, 'VSS_PSQL_ADDRESS'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_ADDRESS: 'admin@db:5432' }, 'VSS_PSQL_ADDRESS'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_ADDRESS: 'db?ssl=0:5432' }, 'VSS_PSQL_ADDRESS'],
    [{ VSS_BIND_ADDRESS: 'wallet host:8080' }, 'VSS_BIND_ADDRESS'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_POOL_SIZE: '0' }, 'VSS_PSQL_POOL_SIZE'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_LOCK_TIMEOUT_MS: '30s' }, 'VSS_PSQL_LOCK_TIMEOUT_MS'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_STATEMENT_TIMEOUT_MS: '2147483648' }, 'VSS_PSQL_STATEMENT_TIMEOUT_MS'],
    [{ VSS_PSQL_LOCK_TIMEOUT_MS: '5000' }, 'VSS_PSQL_LOCK_TIMEOUT_MS'],
    [{ VSS_PSQL_USERNAME: 'u', VSS_PSQL_CONNECT_TIMEOUT_MS: '-1' }, 'VSS_PSQL_CONNECT_TIMEOUT_MS'],
    [{ VSS_PSQL_CONNECT_TIMEOUT_MS: '5000' }, 'VSS_PSQL_CONNECT_TIMEOUT_MS'],
    // PostgreSQL tuning without a PostgreSQL connection: the connection settings went missing,
    // and falling back to an empty embedded database would serve wallets an empty store.
    [{ DATABASE_URL: '' }, 'DATABASE_URL'],
    [{ DATABASE_URL: '  ', VSS_PSQL_TLS: '1' }, 'DATABASE_URL'],
    [{ VSS_PSQL_POOL_SIZE: '32' }, 'VSS_PSQL_POOL_SIZE'],
    [{ VSS_PSQL_TLS: '1', VSS_DATA_DIR: '/var/lib/ldk-vss' }, 'VSS_PSQL_TLS'],
    [{ VSS_PSQL_CRT_PEM: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }, 'VSS_PSQL_CRT_PEM'],
    [{ VSS_PSQL_DEFAULT_DB: 'postgres' }, 'VSS_PSQL_DEFAULT_DB'],
    [{ VSS_CORS_ORIGINS: 'wallet.example' }, 'VSS_CORS_ORIGINS'],
    [{ VSS_CORS_ORIGINS: 'https://wallet.example/path' }, 'VSS_CORS_ORIGINS'],
    [{ VSS_RATE_LIMIT: 'fast' }, 'VSS_RATE_LIMIT'],
    [{ VSS_RATE_LIMIT: 'users=5/s' }, 'VSS_RATE_LIMIT'],
    [{ VSS_METRICS: 'maybe' }, 'VSS_METRICS'],
    [{ VSS_SHUTDOWN_GRACE_MS: '-5' }, 'VSS_SHUTDOWN_GRACE_MS'],
    [{ VSS_TRUST_PROXY: '10.0.0.0/8' }, 'VSS_TRUST_PROXY'],
  ])('refuses %j naming %s', (env, variable) => {
    const error = configError(env as Record<string, string>);
    expect(error.variable).toBe(variable);
    expect(error.message.startsWith(`${variable}: `)).toBe(true);
    expect(error.message).not.toContain('\n');
  });
});
