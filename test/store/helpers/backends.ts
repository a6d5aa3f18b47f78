/**
 * The server backends the store tests run on: embedded PGlite always, PostgreSQL when
 * TEST_DATABASE_URL is set (in a database of its own, so concurrent test files never collide).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { VssClient, type RetrySettings } from '../../../src/client/index.js';
import { startVssServer, type BackendOption } from '../../../src/server/index.js';
import { VssStore, type VssStoreOptions } from '../../../src/store/index.js';

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

export interface TestBackend {
  label: string;
  option: BackendOption;
  /** Why it does not run here, if it does not. */
  skipReason?: string;
}

export const STORE_TEST_BACKENDS: TestBackend[] = [
  { label: 'PGlite', option: 'pglite' },
  TEST_DATABASE_URL
    ? { label: 'PostgreSQL', option: { kind: 'postgres', url: withDatabase(TEST_DATABASE_URL, 'ldk_vss_store_tests'), createDatabase: true } }
    : { label: 'PostgreSQL', option: 'memory', skipReason: 'TEST_DATABASE_URL is not set' },
];

/**
 * Per-suite setup of the async store tests: the real server in this thread on `backend`
 * (noop auth), a raw client to look behind the store's back, and stores opened with `seed`.
 */
export function useStoreServer(backend: TestBackend, seed: Uint8Array, retry: RetrySettings, prefix: string) {
  let server: Awaited<ReturnType<typeof startVssServer>> | undefined;
  let raw: VssClient | undefined;
  beforeAll(async () => {
    server = await startVssServer({ backend: backend.option, auth: { kind: 'noop' }, port: 0 });
    raw = new VssClient(server.url);
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });
  const started = () => {
    if (!server || !raw) throw new Error('the server is not started yet');
    return { server, raw };
  };
  return {
    get url(): string {
      return started().server.url;
    },
    get raw(): VssClient {
      return started().raw;
    },
    newStoreId: () => `${prefix}-${randomUUID().slice(0, 18)}`,
    open: (storeId: string, extra: Partial<VssStoreOptions> = {}) =>
      VssStore.open({ storeId, client: { baseUrl: started().server.url, retry }, keys: { seed }, ...extra }),
  };
}
