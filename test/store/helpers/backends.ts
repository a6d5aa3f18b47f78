/**
 * The server backends the store tests run on: embedded PGlite always, PostgreSQL when
 * TEST_DATABASE_URL is set (in a database of its own, so concurrent test files never collide).
 */
import type { BackendOption } from '../../../src/server/index.js';

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
