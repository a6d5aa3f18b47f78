/** Facts read from this checkout's package-lock.json, shared by the tests that stand up an install. */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const REPO_ROOT = resolve(import.meta.dirname, '../..');

/**
 * Top-level packages of the production dependency tree, per the lockfile: what `npm ci
 * --omit=dev` installs, and what `npm install ldk-vss` adds to a consumer.
 */
export function productionPackages(): string[] {
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([path, info]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) && !info.dev && !info.devOptional)
    .map(([path]) => path.slice('node_modules/'.length));
}
