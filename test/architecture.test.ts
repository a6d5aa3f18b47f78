/**
 * The layering rule of the project, checked on the real import graph: protocol ← crypto ←
 * client ← store ← ldk ← harness, and the server shares only the protocol. A layer may import
 * itself and the layers before it; src/ never imports harness/; src/client and src/crypto, and
 * everything the browser entries (`ldk-vss/client`, `ldk-vss/store`) reach, stay free of static
 * Node built-ins so they bundle and run in browsers and React Native.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { entrySource } from './helpers/exports-map.js';

const ROOT = resolve(import.meta.dirname, '..');
const ORDER = ['protocol', 'crypto', 'client', 'store', 'ldk'] as const;
type Layer = (typeof ORDER)[number] | 'server' | 'cli' | 'harness';

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'generated' ? [] : sourceFiles(path);
    return path.endsWith('.ts') && !path.endsWith('.d.ts') ? [path] : [];
  });
}

function layerOf(file: string): Layer | undefined {
  const parts = relative(ROOT, file).split(sep);
  if (parts[0] === 'harness') return 'harness';
  if (parts[0] !== 'src') return undefined;
  if (parts.length === 2) return parts[1] === 'cli.ts' ? 'cli' : undefined;
  return parts[1] as Layer;
}

/** Module specifiers of static imports and re-exports (dynamic imports are listed separately). */
function importsOf(file: string): { specifier: string; dynamic: boolean }[] {
  const text = readFileSync(file, 'utf8');
  const found: { specifier: string; dynamic: boolean }[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]/gm)) found.push({ specifier: m[1]!, dynamic: false });
  for (const m of text.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm)) found.push({ specifier: m[1]!, dynamic: false });
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push({ specifier: m[1]!, dynamic: true });
  return found;
}

function allowed(from: Layer, to: Layer): boolean {
  if (from === to) return true;
  if (from === 'cli' || from === 'harness') return to !== 'harness' || from === 'harness';
  if (from === 'server') return to === 'protocol';
  if (to === 'server' || to === 'cli' || to === 'harness') return false;
  const a = ORDER.indexOf(from as (typeof ORDER)[number]);
  const b = ORDER.indexOf(to as (typeof ORDER)[number]);
  return b <= a;
}

const NODE_BUILTINS = new Set(builtinModules);

/** A Node built-in by any spelling: `node:x`, `x`, or a subpath such as `stream/web`. */
function isNodeBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || NODE_BUILTINS.has(specifier) || NODE_BUILTINS.has(specifier.split('/')[0]!);
}

const files = [...sourceFiles(join(ROOT, 'src')), ...sourceFiles(join(ROOT, 'harness'))];

/** The browser / React Native entries of the exports map, as their TypeScript sources. */
const BROWSER_ENTRIES = ['./client', './store'] as const;
function entrySourcePath(subpath: string): string {
  return join(ROOT, entrySource(subpath));
}

/** Every source file `entry` reaches through static relative imports and re-exports (itself included). */
function staticGraph(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const { specifier, dynamic } of importsOf(file)) {
      if (dynamic || !specifier.startsWith('.')) continue;
      const target = resolve(dirname(file), specifier).replace(/\.js$/, '.ts');
      // The generated protobuf module is plain JavaScript (checked by the bundle test instead).
      if (target.includes(`${sep}generated${sep}`)) continue;
      visit(target);
    }
  };
  visit(entry);
  return [...seen];
}

describe('architecture', () => {
  it('finds the source tree', () => {
    expect(files.length).toBeGreaterThan(50);
    expect(files.some((f) => f.includes(`${sep}server${sep}`))).toBe(true);
  });

  it('imports point one way: protocol ← crypto ← client ← store ← ldk ← harness; the server shares only the protocol', () => {
    const violations: string[] = [];
    for (const file of files) {
      const from = layerOf(file);
      if (!from) continue;
      for (const { specifier } of importsOf(file)) {
        if (!specifier.startsWith('.')) continue;
        const to = layerOf(resolve(dirname(file), specifier));
        if (to && !allowed(from, to)) violations.push(`${relative(ROOT, file)} (${from}) imports ${specifier} (${to})`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('the rule itself rejects what it must', () => {
    expect(allowed('server', 'client')).toBe(false);
    expect(allowed('crypto', 'client')).toBe(false);
    expect(allowed('store', 'ldk')).toBe(false);
    expect(allowed('ldk', 'harness')).toBe(false);
    expect(allowed('ldk', 'protocol')).toBe(true);
    expect(allowed('harness', 'server')).toBe(true);
    for (const builtin of ['node:fs', 'fs', 'events', 'stream', 'stream/web', 'buffer', 'net', 'url', 'util', 'zlib']) expect(isNodeBuiltin(builtin), builtin).toBe(true);
    for (const other of ['@noble/hashes/sha2.js', 'long', 'protobufjs/minimal.js', './node-http.js']) expect(isNodeBuiltin(other), other).toBe(false);
  });

  it('what the browser entries ldk-vss/client and ldk-vss/store reach has no static Node built-in import', () => {
    for (const subpath of BROWSER_ENTRIES) {
      const graph = staticGraph(entrySourcePath(subpath));
      const offenders = graph.flatMap((f) => importsOf(f).filter((i) => !i.dynamic && isNodeBuiltin(i.specifier)).map((i) => `${relative(ROOT, f)}: ${i.specifier}`));
      expect(offenders, subpath).toEqual([]);
      // The LDK layer (lightningdevkit's WASM, loaded with Node modules) and the server stay out.
      expect(graph.map((f) => layerOf(f)).filter((layer) => layer === 'ldk' || layer === 'server' || layer === 'harness'), subpath).toEqual([]);
    }
    const store = staticGraph(entrySourcePath('./store')).map((f) => relative(ROOT, f).split(sep).join('/'));
    expect(store).toEqual(expect.arrayContaining(['src/client/client.ts', 'src/crypto/storable.ts', 'src/protocol/index.ts', 'src/store/vss-store.ts', 'src/store/version-ledger.ts', 'src/store/sync-bridge.ts']));
    // The sync bridge's worker imports Node built-ins statically: it is started by URL in a
    // worker thread (Node only), never imported.
    expect(store).not.toContain('src/store/sync-worker.ts');
  });

  it('the graph walk finds a static Node import where there is one', () => {
    const root = staticGraph(join(ROOT, 'src/index.ts'));
    const offenders = root.flatMap((f) => importsOf(f).filter((i) => !i.dynamic && isNodeBuiltin(i.specifier)).map((i) => relative(ROOT, f).split(sep).join('/')));
    expect(offenders).toContain('src/ldk/wasm.ts');
  });

  it('src/client and src/crypto have no static Node built-in imports (browser / React Native)', () => {
    const offenders = files
      .filter((f) => ['client', 'crypto'].includes(layerOf(f) ?? ''))
      .flatMap((f) => importsOf(f).filter((i) => !i.dynamic && isNodeBuiltin(i.specifier)).map((i) => `${relative(ROOT, f)}: ${i.specifier}`));
    expect(offenders).toEqual([]);
  });
});
