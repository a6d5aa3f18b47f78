/**
 * Shared pieces of the server tests: a raw protobuf-over-HTTP client that checks the
 * protocol-version header on every response, signature-auth identities built from the spec
 * (not from the server's code), and the backend matrix (memory, PGlite, PostgreSQL).
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { randomBytes } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import pg from 'pg';
import { expect } from 'vitest';
import { bigIntToInt64, hasField, int64ToBigInt, keyValue, vss } from '../../src/protocol/index.js';
import { MemoryBackend, type StorageBackend } from '../../src/server/index.js';
import { PgliteBackend } from '../../src/server/backends/pglite.js';
import { PostgresBackend } from '../../src/server/backends/postgres.js';
import { ConfigError, loadServeConfig } from '../../src/server/config.js';

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;

export const text = (s: string) => new TextEncoder().encode(s);
export const str = (b: Uint8Array | null | undefined) => new TextDecoder().decode(b ?? new Uint8Array(0));

// ---------------------------------------------------------------------------------------
// Identities (signature auth, written from the spec §4.3)

const SALT = 'VSS Signature Authorizer Signing Salt Constant..................';

export interface Identity {
  /** The user token the server should derive: lowercase hex of the compressed pubkey. */
  userToken: string;
  secretKey: Uint8Array;
  /** A fresh `authorization` header value for time `unixSeconds` (default now). */
  header(unixSeconds?: number | string): string;
}

export function signatureHeader(secretKey: Uint8Array, time: string): string {
  const pubkey = secp256k1.getPublicKey(secretKey, true);
  const message = new Uint8Array([...text(SALT), ...pubkey, ...text(time)]);
  const signature = secp256k1.sign(sha256(message), secretKey, { prehash: false, lowS: true });
  return Buffer.from(pubkey).toString('hex') + Buffer.from(signature).toString('hex') + time;
}

export function newIdentity(secretKey: Uint8Array = secp256k1.utils.randomSecretKey()): Identity {
  const userToken = Buffer.from(secp256k1.getPublicKey(secretKey, true)).toString('hex');
  let cached: { time: string; header: string } | undefined;
  return {
    userToken,
    secretKey,
    header(unixSeconds) {
      const time = String(unixSeconds ?? Math.floor(Date.now() / 1000));
      if (cached?.time !== time) cached = { time, header: signatureHeader(secretKey, time) };
      return cached.header;
    },
  };
}

/** A random alphanumeric store id of 0–5 characters, like the reference suite (may be empty). */
export function randomStoreId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const length = randomBytes(1)[0] % 6;
  return Array.from(randomBytes(length), (b) => alphabet[b % alphabet.length]).join('');
}

// ---------------------------------------------------------------------------------------
// HTTP

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

// node:http with keep-alive: several times faster than fetch for thousands of small requests.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** Sends one request and asserts the protocol-version header every response must carry. */
export async function send(
  url: string,
  body: Uint8Array | string | undefined,
  init: { method?: string; headers?: Record<string, string | string[]> } = {},
): Promise<RawResponse> {
  const payload = typeof body === 'string' ? Buffer.from(body) : body;
  const response = await new Promise<RawResponse>((resolve, reject) => {
    const headers: Record<string, string | string[] | number> = { ...init.headers };
    if (payload !== undefined) headers['content-length'] = payload.length;
    const request = http.request(url, { method: init.method ?? 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    request.on('error', reject);
    request.end(payload);
  });
  expect(response.headers['vss-protocol-version'], `vss-protocol-version header on ${response.status} from ${url}`).toBe('0');
  return response;
}

/** Decodes an error body, which must be a protobuf ErrorResponse with a known code. */
export function errorOf(response: RawResponse): { code: vss.ErrorCode; message: string } {
  const decoded = vss.ErrorResponse.decode(response.body);
  expect(decoded.errorCode).toBeGreaterThan(0);
  return { code: decoded.errorCode, message: decoded.message };
}

export class VssHttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: vss.ErrorCode,
    /** The ErrorResponse message exactly as the server sent it. */
    readonly serverMessage: string,
  ) {
    super(`${status} ${vss.ErrorCode[code]}: ${serverMessage}`);
  }
}

export interface Item {
  key: string;
  version: bigint;
  value?: string | Uint8Array;
}

const toKeyValue = (item: Item) => keyValue(item.key, item.version, typeof item.value === 'string' ? text(item.value) : (item.value ?? new Uint8Array(0)));

export interface ListPage {
  keys: Array<{ key: string; version: bigint; value: Uint8Array }>;
  nextPageToken: string | undefined;
  globalVersion: bigint | undefined;
}

/** A minimal VSS client for black-box tests: typed results, VssHttpError for non-200 answers. */
export class TestClient {
  constructor(
    readonly url: string,
    readonly storeId: string,
    private readonly authorization?: () => string,
  ) {}

  withStore(storeId: string): TestClient {
    return new TestClient(this.url, storeId, this.authorization);
  }

  async call(path: string, body: Uint8Array): Promise<Uint8Array> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (this.authorization) headers.authorization = this.authorization();
    const response = await send(this.url + path, body, { headers });
    if (response.status === 200) return response.body;
    const error = errorOf(response);
    throw new VssHttpError(response.status, error.code, error.message);
  }

  async put(globalVersion: bigint | undefined, items: Item[], deletes: Item[] = []): Promise<void> {
    const request: vss.PutObjectRequest.$Properties = {
      storeId: this.storeId,
      transactionItems: items.map(toKeyValue),
      deleteItems: deletes.map(toKeyValue),
    };
    if (globalVersion !== undefined) request.globalVersion = bigIntToInt64(globalVersion);
    const body = await this.call('/putObjects', vss.PutObjectRequest.encode(request).finish());
    expect(body.length).toBe(0);
  }

  async get(key: string): Promise<{ key: string; version: bigint; value: Uint8Array }> {
    const response = vss.GetObjectResponse.decode(await this.call('/getObject', vss.GetObjectRequest.encode({ storeId: this.storeId, key }).finish()));
    expect(response.value, 'GetObjectResponse.value must be present').toBeTruthy();
    const value = response.value as vss.KeyValue;
    return { key: value.key, version: int64ToBigInt(value.version), value: value.value };
  }

  async delete(key: string, version: bigint): Promise<void> {
    const body = await this.call('/deleteObject', vss.DeleteObjectRequest.encode({ storeId: this.storeId, keyValue: keyValue(key, version) }).finish());
    expect(body.length).toBe(0);
  }

  async list(options: { pageToken?: string; pageSize?: number; keyPrefix?: string } = {}): Promise<ListPage> {
    const request: vss.ListKeyVersionsRequest.$Properties = { storeId: this.storeId };
    if (options.pageToken !== undefined) request.pageToken = options.pageToken;
    if (options.pageSize !== undefined) request.pageSize = options.pageSize;
    if (options.keyPrefix !== undefined) request.keyPrefix = options.keyPrefix;
    const response = vss.ListKeyVersionsResponse.decode(await this.call('/listKeyVersions', vss.ListKeyVersionsRequest.encode(request).finish()));
    // The reference always sends next_page_token; ldk-node loops forever without it.
    expect(hasField(response, 'nextPageToken'), 'next_page_token must always be present').toBe(true);
    expect(hasField(response, 'globalVersion'), 'global_version present exactly on first pages').toBe(options.pageToken === undefined);
    return {
      keys: response.keyVersions.map((kv) => ({ key: kv.key ?? '', version: int64ToBigInt(kv.version), value: kv.value ?? new Uint8Array(0) })),
      nextPageToken: response.nextPageToken ?? undefined,
      globalVersion: hasField(response, 'globalVersion') ? int64ToBigInt(response.globalVersion) : undefined,
    };
  }

  /** Follows next_page_token until it is empty; returns every page. */
  async listAll(options: { pageSize?: number; keyPrefix?: string } = {}): Promise<ListPage[]> {
    const pages: ListPage[] = [];
    let pageToken: string | undefined;
    for (let guard = 0; guard < 100_000; guard++) {
      const page = await this.list({ ...options, pageToken });
      pages.push(page);
      if (!page.nextPageToken) return pages;
      pageToken = page.nextPageToken;
    }
    throw new Error('pagination did not terminate');
  }
}

/** Runs `promise` and returns the VssHttpError it rejects with (fails the test otherwise). */
export async function failure(promise: Promise<unknown>): Promise<VssHttpError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome, 'request should have failed').toBeInstanceOf(VssHttpError);
  return outcome as VssHttpError;
}

export const CONFLICT = { status: 409, code: vss.ErrorCode.CONFLICT_EXCEPTION };
export const NO_SUCH_KEY = { status: 404, code: vss.ErrorCode.NO_SUCH_KEY_EXCEPTION };
export const INVALID = { status: 400, code: vss.ErrorCode.INVALID_REQUEST_EXCEPTION };
export const UNAUTHORIZED = { status: 401, code: vss.ErrorCode.AUTH_EXCEPTION };

export async function expectFailure(promise: Promise<unknown>, expected: { status: number; code: vss.ErrorCode }): Promise<VssHttpError> {
  const error = await failure(promise);
  expect({ status: error.status, code: error.code }).toEqual(expected);
  return error;
}

// ---------------------------------------------------------------------------------------
// Backends

export interface OpenedBackend {
  backend: StorageBackend;
  /** Closes the backend and removes whatever it created (e.g. the test database). */
  dispose(): Promise<void>;
}

export interface BackendCase {
  name: 'memory' | 'pglite' | 'postgres';
  /** Why the case cannot run here, if it cannot. */
  skipReason?: string;
  open(options?: { inlineValueLimit?: number }): Promise<OpenedBackend>;
}

/** postgres URL of `database` on the TEST_DATABASE_URL server. */
export function testDatabaseUrl(database: string): string {
  const url = new URL(TEST_DATABASE_URL as string);
  url.pathname = `/${database}`;
  return url.toString();
}

/** A database name no other test file or run uses. */
export function uniqueDatabaseName(purpose: string): string {
  return `ldkvss_${purpose}_${process.pid}_${randomBytes(4).toString('hex')}`.toLowerCase();
}

export async function dropDatabase(database: string): Promise<void> {
  const client = new pg.Client({ connectionString: testDatabaseUrl('postgres') });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

export const BACKEND_CASES: readonly BackendCase[] = [
  {
    name: 'memory',
    async open() {
      const backend = new MemoryBackend();
      return { backend, dispose: () => backend.close() };
    },
  },
  {
    name: 'pglite',
    async open(options) {
      const backend = await PgliteBackend.open(options);
      return { backend, dispose: () => backend.close() };
    },
  },
  {
    name: 'postgres',
    skipReason: TEST_DATABASE_URL ? undefined : 'TEST_DATABASE_URL is not set',
    async open(options) {
      const database = uniqueDatabaseName('conformance');
      const backend = await PostgresBackend.open({ url: testDatabaseUrl(database), ...options });
      return {
        backend,
        async dispose() {
          await backend.close();
          await dropDatabase(database);
        },
      };
    },
  },
];

export function backendCase(name: BackendCase['name']): BackendCase {
  return BACKEND_CASES.find((c) => c.name === name) as BackendCase;
}

/** The ConfigError `loadServeConfig` throws for `env` (fails the test if it throws something else, or nothing). */
export function configError(env: Record<string, string>): ConfigError {
  try {
    loadServeConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}
