import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // LDK WASM and embedded Postgres are heavy; two cores on CI.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
