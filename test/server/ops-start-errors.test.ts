/**
 * startVssServer refusing bad rate-limit options: a typed configuration error, raised before the
 * storage is opened, so a PGlite data directory is not left locked by the process that then
 * retries with corrected options.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ServerConfigError, startVssServer } from '../../src/server/index.js';
import type { RateLimitOptions } from '../../src/server/index.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('startVssServer with invalid rate limits', () => {
  it.each<[string, RateLimitOptions | string, RegExp]>([
    ['a zero per-IP limit', { perIp: { limit: 0, windowMs: 1000 } }, /^rateLimit\.perIp: /],
    ['a negative per-user window', { perUser: { limit: 10, windowMs: -1 } }, /^rateLimit\.perUser: /],
    ['an unparseable rate', '10 per second', /^rateLimit: /],
  ])('refuses %s with a ServerConfigError, and the same data directory then starts', async (_name, rateLimit, message) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ldk-vss-ops-'));
    dirs.push(dataDir);
    const backend = { kind: 'pglite', dataDir } as const;
    const error = await startVssServer({ backend, auth: { kind: 'noop' }, rateLimit }).then(
      () => undefined,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(ServerConfigError);
    expect((error as Error).message).toMatch(message);
    // The corrected retry in the same process is not refused as "in use by process <its own pid>".
    const server = await startVssServer({ backend, auth: { kind: 'noop' } });
    await server.close();
  });
});
