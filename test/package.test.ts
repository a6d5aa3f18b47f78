/**
 * What a wallet builder gets from `npm install ldk-vss`: the project is packed for real (`npm pack`,
 * whose `prepare` script builds it) from a copy of this checkout, the tarball is unpacked into a
 * consumer's node_modules next to the production dependencies only, and the consumer then uses it
 * the way the README says: plain `node` scripts importing each entry of the exports map, the
 * `ldk-vss` bin, and TypeScript type-checking against the shipped declarations.
 *
 * Nothing is downloaded: the production dependencies are symlinked from this checkout's
 * node_modules (what `npm ci` installed, the lockfile's non-dev packages, as `npm install` would
 * place them), and so is the consumer's own dev package @types/node.
 *
 * The copy that is packed leaves out what a fresh clone does not have (node_modules, dist, local
 * state), then gets the local state a maintainer's checkout typically holds planted into it
 * (an embedded database, scratch notes, a version ledger, a stray `tsc -p tsconfig.json` emit in
 * dist/): none of it may reach the tarball.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { productionPackages } from './helpers/lockfile.js';

const REPO_ROOT = resolve(import.meta.dirname, '..');
const FIXTURES = join(REPO_ROOT, 'test/fixtures/package-consumer');
const TSC = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');

/** Top-level entries of the checkout that a fresh clone does not have (see .gitignore). */
const NOT_IN_A_CLONE = /^(node_modules|dist|\.git|\.vss-data|coverage|\.scratch.*|.*\.log|.*\.vss-versions(\.lock)?)$/;

/** What a maintainer's checkout may hold besides the sources; planted into the packed copy. */
const LOCAL_STATE: Record<string, string> = {
  '.vss-data/PG_VERSION': '17\n',
  '.scratch/notes.md': '# notes\n',
  'wallet-1.vss-versions': '{}\n',
  // A `tsc -p tsconfig.json` without --noEmit writes the tests and benches next to the build.
  'dist/test/store/vss-store.test.js': 'export {};\n',
  'dist/bench/server.js': 'export {};\n',
  // A module deleted or renamed in src/ since the last build: tsc never removes its old output.
  'dist/src/removed-module.js': 'export {};\n',
  'dist/src/removed-module.d.ts': 'export {};\n',
};

interface Manifest {
  name: string;
  version: string;
  main?: string;
  types?: string;
  bin?: Record<string, string>;
  exports: Record<string, string | Record<string, string>>;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = process.env, timeout = 60_000): Promise<Run> {
  return new Promise((resolveRun) => {
    execFile(file, args, { cwd, env, timeout, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      resolveRun({ code, stdout, stderr });
    });
  });
}

function linkPackage(consumer: string, name: string): void {
  const target = join(consumer, 'node_modules', name);
  mkdirSync(dirname(target), { recursive: true });
  symlinkSync(join(REPO_ROOT, 'node_modules', name), target, 'dir');
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)).split(sep).join('/'));
}

/** Every file target of an exports map, whatever its nesting of conditions. */
function exportTargets(entry: string | Record<string, unknown>): string[] {
  if (typeof entry === 'string') return [entry];
  return Object.values(entry).flatMap((value) => exportTargets(value as string | Record<string, unknown>));
}

/** `file(line,col): error TSnnnn: message` lines of `tsc --pretty false`, paths relative to `cwd`. */
function diagnostics(output: string): { file: string; line: number; code: string; text: string }[] {
  return [...output.matchAll(/^(.+?)\((\d+),\d+\): error (TS\d+): (.*)$/gm)].map((m) => ({ file: m[1]!.split(sep).join('/'), line: Number(m[2]), code: m[3]!, text: m[0] }));
}

let root: string;
/** The consumer project: its node_modules holds the unpacked tarball and the production dependencies. */
let consumer: string;
let pkg: string;
let manifest: Manifest;
/** Paths in the tarball, relative to the package root. */
let packed: string[];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ldk-vss-package-'));
  const checkout = join(root, 'checkout');
  cpSync(REPO_ROOT, checkout, {
    recursive: true,
    filter: (source) => {
      const rel = relative(REPO_ROOT, source);
      return rel === '' || (!NOT_IN_A_CLONE.test(rel.split(sep)[0]!) && rel !== join('bench', 'results'));
    },
  });
  for (const [path, text] of Object.entries(LOCAL_STATE)) {
    mkdirSync(dirname(join(checkout, path)), { recursive: true });
    writeFileSync(join(checkout, path), text);
  }
  // This checkout's node_modules stands in for `npm ci` of the same lockfile (the build's TypeScript).
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(checkout, 'node_modules'), 'dir');

  // `npm pack` runs `prepare` (the build), as `npm publish` does. An inherited `npm ci --ignore-scripts`
  // setting would skip it and pack no dist/ at all.
  const env = { ...process.env };
  delete env.npm_config_ignore_scripts;
  delete env.npm_config_dry_run;
  const pack = await run('npm', ['pack', '--json', '--pack-destination', root], checkout, env, 110_000);
  if (pack.code !== 0) throw new Error(`npm pack failed (${pack.code}):\n${pack.stdout}\n${pack.stderr}`);
  const [report] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  packed = report!.files.map((file) => file.path).sort();

  consumer = join(root, 'wallet');
  pkg = join(consumer, 'node_modules/ldk-vss');
  mkdirSync(pkg, { recursive: true });
  const untar = await run('tar', ['-xzf', join(root, report!.filename), '-C', pkg, '--strip-components=1'], root);
  if (untar.code !== 0) throw new Error(`tar failed: ${untar.stderr}`);
  manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as Manifest;
  for (const name of productionPackages()) linkPackage(consumer, name);
  // @types/pg came with the production packages (tested below); Node's types are the consumer's own.
  for (const name of ['@types/node']) if (!existsSync(join(consumer, 'node_modules', name))) linkPackage(consumer, name);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'wallet', private: true, type: 'module' }));
  for (const name of readdirSync(FIXTURES)) cpSync(join(FIXTURES, name), join(consumer, name));
}, 120_000);

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('the tarball', () => {
  it('holds the compiled library, the proto file, README and package.json, and nothing else', () => {
    const unexpected = packed.filter((path) => !/^(package\.json|README\.md|proto\/vss\.proto|dist\/src\/.+\.(js|d\.ts|js\.map))$/.test(path));
    expect(unexpected, 'files outside dist/src, proto and README').toEqual([]);
    expect(packed.filter((path) => /(^|\/)(test|bench|harness|\.scratch|\.vss-data)\/|\.test\.|\.vss-versions/.test(path))).toEqual([]);
    // The pieces loaded by path rather than by import: the generated protobuf module (copied by the
    // build, not emitted by tsc) and the sync store's worker.
    expect(packed).toEqual(expect.arrayContaining(['proto/vss.proto', 'dist/src/protocol/generated/vss.js', 'dist/src/protocol/generated/vss.d.ts', 'dist/src/store/sync-worker.js']));
    // Every compiled module comes from a source of this checkout (no stale output of a removed one).
    const withoutSource = packed.filter((path) => path.endsWith('.js') && !path.startsWith('dist/src/protocol/generated/') && !existsSync(join(REPO_ROOT, path.replace(/^dist\//, '').replace(/\.js$/, '.ts'))));
    expect(withoutSource, 'compiled modules without a source in src/').toEqual([]);
    // What was unpacked is what npm listed.
    expect(filesUnder(pkg).sort()).toEqual(packed);
  });

  it('ships every file package.json names (exports map, main, types, bin), the bin with its shebang', () => {
    const named = [
      ...Object.values(manifest.exports).flatMap(exportTargets),
      ...(manifest.main ? [manifest.main] : []),
      ...(manifest.types ? [manifest.types] : []),
      ...Object.values(manifest.bin ?? {}),
    ];
    expect(Object.keys(manifest.exports).sort()).toEqual(['.', './client', './package.json', './protocol', './server', './store']);
    expect(named.length).toBeGreaterThan(8);
    for (const path of named) expect(packed, `${path} named by package.json`).toContain(path.replace(/^\.\//, ''));
    expect(Object.keys(manifest.bin ?? {})).toEqual(['ldk-vss']);
    expect(readFileSync(join(pkg, manifest.bin!['ldk-vss']!), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
  });

  it('ships source maps that are complete without the TypeScript sources (which are not shipped)', () => {
    const scripts = packed.filter((path) => path.endsWith('.js'));
    const incomplete: string[] = [];
    for (const script of scripts) {
      const link = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(join(pkg, script), 'utf8'))?.[1];
      if (link === undefined) continue;
      const mapPath = join(dirname(script), link).split(sep).join('/');
      if (!packed.includes(mapPath)) {
        incomplete.push(`${script}: its map ${mapPath} is not shipped`);
        continue;
      }
      const map = JSON.parse(readFileSync(join(pkg, mapPath), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
      map.sources.forEach((source, index) => {
        const shipped = packed.includes(join(dirname(mapPath), source).split(sep).join('/'));
        if (!shipped && typeof map.sourcesContent?.[index] !== 'string') incomplete.push(`${mapPath}: ${source} is neither shipped nor inlined`);
      });
    }
    expect(scripts.length).toBeGreaterThan(50);
    expect(incomplete).toEqual([]);
  });
});

describe('a consumer running plain node', () => {
  it('imports every entry of the exports map: a memory server, VssClient, VssStore, protocol decoding, LDK WASM; deep imports are refused', async () => {
    const result = await run(process.execPath, ['runtime.mjs'], consumer);
    expect(result.code, `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`).toBe(0);
    expect(JSON.parse(result.stdout.trim().split('\n').at(-1)!)).toEqual({ ok: true, serverKeys: 2 });
  });

  it('is also loaded by require() from CommonJS (every entry), where Node loads ES modules synchronously', async () => {
    const result = await run(process.execPath, ['require.cjs'], consumer);
    if (process.features.require_module) {
      expect(result.code, `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`).toBe(0);
      expect(JSON.parse(result.stdout.trim())).toEqual({ ok: true });
    } else {
      // Node 20.16–20.18: require() of an ES module is refused by Node itself, whatever the package says.
      expect(result.stderr).toMatch(/ERR_REQUIRE_ESM/);
    }
  });

  it('cannot import the package without its dependencies (the check above depends on them, not on this checkout)', async () => {
    // The same script from a consumer whose node_modules holds ldk-vss alone: the package's own
    // imports must resolve from the consumer's node_modules, never from anything around the tarball.
    const bare = join(root, 'bare');
    mkdirSync(join(bare, 'node_modules'), { recursive: true });
    cpSync(pkg, join(bare, 'node_modules/ldk-vss'), { recursive: true });
    writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'bare', private: true, type: 'module' }));
    cpSync(join(FIXTURES, 'runtime.mjs'), join(bare, 'runtime.mjs'));
    const result = await run(process.execPath, ['runtime.mjs'], bare);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/ERR_MODULE_NOT_FOUND/);
  });
});

describe('the ldk-vss bin from the tarball', () => {
  let bin: string;
  beforeAll(() => {
    bin = join(pkg, manifest.bin!['ldk-vss']!);
  });

  it('--help, --version and serve --help exit 0 with usage; an unknown command exits 2', async () => {
    const help = await run(process.execPath, [bin, '--help'], consumer);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: ldk-vss <command>/);
    expect(help.stdout).toMatch(/^ {2}serve {2}/m);
    expect(help.stdout).toMatch(/^ {2}inspect {2}/m);
    const version = await run(process.execPath, [bin, '--version'], consumer);
    expect({ code: version.code, stdout: version.stdout.trim() }).toEqual({ code: 0, stdout: manifest.version });
    const serveHelp = await run(process.execPath, [bin, 'serve', '--help'], consumer);
    expect(serveHelp.code).toBe(0);
    expect(serveHelp.stdout).toMatch(/^Usage: ldk-vss serve/);
    expect(serveHelp.stdout).toMatch(/VSS_BIND_ADDRESS/);
    const inspectHelp = await run(process.execPath, [bin, 'inspect', '--help'], consumer);
    expect(inspectHelp.code).toBe(0);
    expect(inspectHelp.stdout).toMatch(/Usage: ldk-vss inspect/);
    const unknown = await run(process.execPath, [bin, 'srve'], consumer);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "srve"/);
  });

  it('serve (embedded database, VSS_AUTH=noop, port 0) answers /health, serves the blocking store, and stops on SIGTERM', async () => {
    const env = { PATH: process.env.PATH ?? '', HOME: root, VSS_AUTH: 'noop', VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_DATA_DIR: join(root, 'vss-data') };
    const child: ChildProcess = spawn(process.execPath, [bin, 'serve'], { cwd: consumer, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolveExit) => child.once('exit', (code) => resolveExit(code)));
    try {
      // The port is the one the server logs once it listens ("VSS server listening", with its url).
      const url = await new Promise<string>((resolveUrl, reject) => {
        const look = (): void => {
          const line = output.split('\n').find((l) => l.includes('"VSS server listening"'));
          if (line) resolveUrl((JSON.parse(line) as { url: string }).url);
        };
        child.stdout!.on('data', look);
        void exited.then((code) => reject(new Error(`serve exited with ${code} before listening:\n${output}`)));
        // Creating the embedded database takes 5-15 s; fail with the output rather than at the test's timeout.
        setTimeout(() => reject(new Error(`serve did not listen within 45 s:\n${output}`)), 45_000).unref();
      });
      const health = await fetch(new URL('/health', url));
      expect(health.status).toBe(200);
      expect(health.headers.get('vss-protocol-version')).toBe('0');
      const sync = await run(process.execPath, ['sync-store.mjs', url], consumer);
      expect(sync.code, `stdout:\n${sync.stdout}\nstderr:\n${sync.stderr}`).toBe(0);
      expect(sync.stdout.trim().split('\n').at(-1)).toBe('{"ok":true}');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(output).toMatch(/"VSS server stopped"/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});

describe('TypeScript consumers of the shipped declarations', () => {
  it('get the pg types the declarations name with the package: @types/pg is a dependency, not a devDependency', () => {
    // postgres.d.ts imports pg (`PostgresBackend.pool: pg.Pool`): without @types/pg installed, the
    // pool is silently `any` under skipLibCheck and an error in the library's file without it.
    expect(readFileSync(join(pkg, 'dist/src/server/backends/postgres.d.ts'), 'utf8')).toMatch(/from 'pg'/);
    expect(productionPackages()).toContain('@types/pg');
    expect((manifest as Manifest & { dependencies?: Record<string, string> }).dependencies).toHaveProperty('@types/pg');
  });

  /** Uses public types the way a wallet does; must compile. */
  const GOOD = `import { VssStore, VssPersister, VssClient, KeyNotFoundError, StoreError, StoreOpenError, NoSuchKeyError, deriveVssKeys } from 'ldk-vss';
import type { VssStoreOptions, VssClientConfig, VssPersisterOptions, SyncKVStore, VssSyncStore } from 'ldk-vss';
import { startVssServer, ServerConfigError, MemoryBackend, PostgresBackend, type VssServerOptions, type StartedVssServer, type StorageBackend } from 'ldk-vss/server';
import { vss, int64ToBigInt, keyValue } from 'ldk-vss/protocol';

const client: VssClientConfig = { baseUrl: 'http://127.0.0.1:8080/vss' };
export const options: VssStoreOptions = { storeId: 'wallet-1', client, keys: { seed: new Uint8Array(64) }, writeMode: 'conditional' };
export const serverOptions: VssServerOptions = { auth: { kind: 'noop' }, backend: new MemoryBackend(), port: 0 };
export const backend: StorageBackend = new MemoryBackend();

export async function roundTrip(seed: Uint8Array): Promise<Uint8Array | undefined> {
  const server: StartedVssServer = await startVssServer(serverOptions);
  const store = await VssStore.open({ ...options, client: { baseUrl: server.url }, keys: { seed } });
  try {
    const sync: VssSyncStore = store.toSyncStore({ deadlineMs: 1000 });
    const view: SyncKVStore = sync;
    view.list('monitors', '');
    sync.close();
    return await store.read('monitors', '', 'chan');
  } catch (error) {
    if (error instanceof KeyNotFoundError || error instanceof StoreOpenError) return undefined;
    const typed: StoreError | ServerConfigError | NoSuchKeyError = error as StoreError;
    throw typed;
  } finally {
    await store.close();
    await server.close();
  }
}

export function persisterFor(store: VssStore, context: Omit<VssPersisterOptions, 'store'>): VssPersister {
  return new VssPersister({ ...context, store });
}
export const pool: Promise<number> = PostgresBackend.open({ url: 'postgres://localhost/vss' }).then((b) => b.pool.totalCount);
export const sigs: Uint8Array = deriveVssKeys(new Uint8Array(64)).sigsAuthSecretKey;
export const version: bigint = int64ToBigInt(vss.GetObjectResponse.decode(new Uint8Array(0)).value?.version);
export const item: vss.KeyValue = keyValue('k', 0n);
export const raw = new VssClient(client.baseUrl);
`;

  /** Each line marked with the error TypeScript must report on it. */
  const BAD = `import { VssStore, VssPersister } from 'ldk-vss';
import { PgPoolDriver } from 'ldk-vss/server'; // TS2305: internal, not exported
import { loadServeConfig } from 'ldk-vss/dist/src/server/config.js'; // TS2307: not in the exports map
export const store = await VssStore.open({ storeId: 'w', client: { baseUrl: 8080 }, keys: { seed: new Uint8Array(64) } }); // TS2322
export const persister = new VssPersister({ store }); // TS2345
export const missing: string = store.read('a', '', 'k'); // TS2322
export { PgPoolDriver, loadServeConfig };
`;

  function expectedErrors(source: string): string[] {
    return source.split('\n').flatMap((line, index) => [...line.matchAll(/\/\/ (TS\d+)/g)].map((m) => `${index + 1} ${m[1]}`));
  }

  it('a strict nodenext consumer (ES2022 lib, no DOM) compiles against them, and its deliberate type errors are reported', async () => {
    writeFileSync(join(consumer, 'good.ts'), GOOD);
    writeFileSync(join(consumer, 'bad.ts'), BAD);
    writeFileSync(
      join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022'], types: ['node'], strict: true, noEmit: true, skipLibCheck: false },
        files: ['good.ts', 'bad.ts'],
      }),
    );
    const result = await run(process.execPath, [TSC, '-p', 'tsconfig.json', '--pretty', 'false'], consumer);
    const found = diagnostics(result.stdout);
    expect(result.code, result.stdout).not.toBe(0);
    expect(found.filter((d) => d.file === 'good.ts').map((d) => d.text)).toEqual([]);
    // The package's own declarations are checked too (skipLibCheck: false); other packages' are theirs.
    expect(found.filter((d) => d.file.includes('node_modules/ldk-vss/')).map((d) => d.text)).toEqual([]);
    const bad = found.filter((d) => d.file === 'bad.ts');
    expect(bad.map((d) => `${d.line} ${d.code}`).sort()).toEqual(expectedErrors(BAD).sort());
  });

  it('a bundler-resolution consumer (a browser or React Native build) compiles the same file', async () => {
    writeFileSync(join(consumer, 'good.ts'), GOOD);
    const result = await run(
      process.execPath,
      [TSC, '--module', 'esnext', '--moduleResolution', 'bundler', '--target', 'es2022', '--strict', '--noEmit', '--skipLibCheck', '--types', 'node', '--pretty', 'false', 'good.ts'],
      consumer,
    );
    expect(result.stdout).toBe('');
    expect(result.code).toBe(0);
  });
});
