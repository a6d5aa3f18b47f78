/** The package's exports map (package.json), read by the tests that check its entry points. */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

interface ModuleEntry {
  types: string;
  default: string;
}

/** Every entry with a module behind it (`.`, `./client`, … but not `./package.json`), by subpath. */
export function moduleEntries(): Record<string, ModuleEntry> {
  const exportsMap = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, string | Partial<ModuleEntry>> }).exports;
  const entries: Record<string, ModuleEntry> = {};
  for (const [subpath, target] of Object.entries(exportsMap)) {
    if (typeof target !== 'object') continue;
    if (target.types === undefined || target.default === undefined) throw new Error(`package.json exports ${subpath} lacks types or default`);
    entries[subpath] = { types: target.types, default: target.default };
  }
  return entries;
}

/** The TypeScript source, relative to the repository root, an entry is compiled from (`./dist/src/x.js` ← `src/x.ts`). */
export function entrySource(subpath: string): string {
  const entry = moduleEntries()[subpath];
  if (entry === undefined) throw new Error(`package.json exports has no module entry ${subpath}`);
  return entry.default.replace(/^\.\/dist\//, '').replace(/\.js$/, '.ts');
}
