/**
 * The browser and React Native entry points, `ldk-vss/client` and `ldk-vss/store`, as a wallet's
 * bundler sees them: each is bundled with esbuild (nothing external) for the browser and with
 * React Native's resolution settings, from the TypeScript sources and from a compiled build
 * resolved through the package's exports map; no bundle may hold a Node built-in. The package
 * root, which carries the LDK layer (lightningdevkit's WASM loaded with Node modules), must NOT
 * bundle for a browser: that is why the two entries exist.
 *
 * Then the bundles run where no Node global exists (a `node:vm` context holding only web globals)
 * against a real server: building is not enough, a stray `process` or `Buffer` only fails there.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import vm from 'node:vm';
import * as esbuild from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startVssServer, type StartedVssServer } from '../src/server/index.js';
import { VssStore } from '../src/store/index.js';
import { entrySource } from './helpers/exports-map.js';

const ROOT = resolve(import.meta.dirname, '..');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

/** The TypeScript source an exports-map entry is compiled from, as an absolute path. */
function sourceOf(subpath: string): string {
  return join(ROOT, entrySource(subpath));
}

const BROWSER_ENTRIES = ['./client', './store'] as const;

/** A browser build, as Vite or webpack would do it for a web wallet. */
const BROWSER: esbuild.BuildOptions = { platform: 'browser' };
/**
 * React Native's resolution (Metro): no Node platform, the `react-native` and `browser` fields and
 * conditions first. esbuild's `neutral` platform assumes nothing about built-ins, so a Node one fails.
 */
const REACT_NATIVE: esbuild.BuildOptions = {
  platform: 'neutral',
  mainFields: ['react-native', 'browser', 'module', 'main'],
  conditions: ['react-native', 'browser', 'import'],
};

const NODE_BUILTINS = new Set(builtinModules);
function isNodeBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || NODE_BUILTINS.has(specifier) || NODE_BUILTINS.has(specifier.split('/')[0]!);
}

interface Bundle {
  text: string;
  warnings: string[];
  /** Modules left as imports in the output (none expected: nothing is external). */
  imports: string[];
  inputs: string[];
}

async function bundle(entry: esbuild.BuildOptions, settings: esbuild.BuildOptions, format: esbuild.Format = 'esm'): Promise<Bundle> {
  const result = await esbuild.build({
    ...entry,
    ...settings,
    bundle: true,
    write: false,
    format,
    target: 'es2022',
    metafile: true,
    logLevel: 'silent',
    ...(format === 'iife' ? { globalName: 'LdkVss' } : {}),
  });
  const [output] = Object.values(result.metafile.outputs);
  return {
    text: result.outputFiles![0]!.text,
    warnings: result.warnings.map((w) => `${w.location?.file ?? ''}: ${w.text}`),
    imports: output!.imports.map((i) => i.path),
    inputs: Object.keys(result.metafile.inputs),
  };
}

function fromSource(subpath: string): esbuild.BuildOptions {
  return { entryPoints: [sourceOf(subpath)], absWorkingDir: ROOT };
}

/** Module loads a bundle could still perform at run time: `import … from`, `import()`, `require()`. */
function nodeLoads(text: string): string[] {
  const found = [
    ...text.matchAll(/\bfrom\s*["']([^"']+)["']/g),
    ...text.matchAll(/\bimport\s*\(\s*["']([^"']+)["']\s*\)/g),
    ...text.matchAll(/\brequire\s*\(\s*["']([^"']+)["']\s*\)/g),
    ...text.matchAll(/^\s*import\s*["']([^"']+)["']/gm),
  ].map((m) => m[1]!);
  return found.filter(isNodeBuiltin);
}

function expectBrowserSafe(result: Bundle): void {
  expect(result.imports).toEqual([]);
  expect(result.inputs.filter(isNodeBuiltin)).toEqual([]);
  expect(nodeLoads(result.text)).toEqual([]);
  // The LDK layer and its bindings stay out of these entries.
  expect(result.inputs.filter((input) => input.includes('lightningdevkit') || input.includes('src/ldk/'))).toEqual([]);
}

describe('the browser entries bundle without Node', () => {
  it('the exports map offers ldk-vss/client and ldk-vss/store, compiled from src/client-entry.ts and src/store-entry.ts', () => {
    expect(sourceOf('./client')).toBe(join(ROOT, 'src/client-entry.ts'));
    expect(sourceOf('./store')).toBe(join(ROOT, 'src/store-entry.ts'));
  });

  for (const subpath of BROWSER_ENTRIES) {
    for (const [name, settings] of [['a browser', BROWSER], ['React Native', REACT_NATIVE]] as const) {
      it(`ldk-vss${subpath.slice(1)} bundles for ${name} from the sources: no errors, no warnings, no Node built-in`, async () => {
        const result = await bundle(fromSource(subpath), settings);
        expect(result.warnings).toEqual([]);
        expectBrowserSafe(result);
        expect(result.text).toMatch(/\bVssClient\b/);
        if (subpath === './store') expect(result.text).toMatch(/\bVssStore\b/);
      });
    }
  }

  it('the package root does not bundle for a browser: only the LDK layer needs Node', async () => {
    const failure = await bundle({ entryPoints: [join(ROOT, 'src/index.ts')], absWorkingDir: ROOT }, BROWSER).then(
      () => undefined,
      (error: unknown) => error as esbuild.BuildFailure,
    );
    expect(failure, 'bundling the package root for a browser succeeded').toBeDefined();
    const errors = failure!.errors.map((e) => ({ file: e.location?.file ?? '', text: e.text }));
    expect(errors.length).toBeGreaterThan(0);
    for (const error of errors) expect(error.text).toMatch(/^Could not resolve "(node:[a-z/_]+|crypto)"/);
    // Every one of them comes from the LDK layer or lightningdevkit's bindings, none from the
    // protocol, crypto, client or store modules that the browser entries hold.
    expect(errors.filter((e) => !/^(src\/ldk\/|node_modules\/lightningdevkit\/)/.test(e.file))).toEqual([]);
    expect(errors.map((e) => e.file)).toEqual(expect.arrayContaining(['src/ldk/wasm.ts', 'node_modules/lightningdevkit/bindings.mjs']));
  });

  it('the check itself spots a Node built-in left in a bundle', () => {
    expect(nodeLoads('import { x } from "node:events";')).toEqual(['node:events']);
    expect(nodeLoads('const fs = require("fs");')).toEqual(['fs']);
    expect(nodeLoads('await import("node:worker_threads")')).toEqual(['node:worker_threads']);
    // Names of built-ins as data (`process.getBuiltinModule("node:http")`) load nothing by themselves.
    expect(nodeLoads('globalThis.process?.getBuiltinModule?.("node:http")')).toEqual([]);
  });
});

describe('the browser entries from a compiled build, through the exports map', () => {
  let dir: string;
  /** A consumer directory whose node_modules/ldk-vss is the compiled package. */
  let consumer: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ldk-vss-browser-'));
    const pkg = join(dir, 'ldk-vss');
    // The build's settings (tsconfig.build.json), limited to the browser entries' module graph.
    const config = join(dir, 'tsconfig.json');
    writeFileSync(
      config,
      JSON.stringify({
        extends: join(ROOT, 'tsconfig.build.json'),
        compilerOptions: { rootDir: ROOT, outDir: join(pkg, 'dist'), typeRoots: [join(ROOT, 'node_modules/@types')], sourceMap: false, inlineSources: false },
        include: [],
        files: BROWSER_ENTRIES.map(sourceOf),
      }),
    );
    const result = await new Promise<{ code: number; output: string }>((done) =>
      execFile(process.execPath, [TSC, '-p', config, '--pretty', 'false'], { cwd: ROOT, timeout: 90_000 }, (error, stdout, stderr) =>
        done({ code: error ? 1 : 0, output: stdout + stderr }),
      ),
    );
    if (result.code !== 0) throw new Error(`tsc failed:\n${result.output}`);
    // As the build script does: tsc does not copy the generated protobuf module.
    cpSync(join(ROOT, 'src/protocol/generated'), join(pkg, 'dist/src/protocol/generated'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'), 'dir');
    consumer = join(dir, 'wallet');
    mkdirSync(join(consumer, 'node_modules'), { recursive: true });
    symlinkSync(pkg, join(consumer, 'node_modules/ldk-vss'), 'dir');
  }, 120_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function fromPackage(specifier: string): esbuild.BuildOptions {
    return { stdin: { contents: `export * from ${JSON.stringify(specifier)};`, resolveDir: consumer, loader: 'js' }, absWorkingDir: consumer };
  }

  for (const subpath of BROWSER_ENTRIES) {
    const specifier = `ldk-vss${subpath.slice(1)}`;
    for (const [name, settings] of [['a browser', BROWSER], ['React Native', REACT_NATIVE]] as const) {
      it(`import … from '${specifier}' bundles for ${name}: no errors, no warnings, no Node built-in`, async () => {
        const result = await bundle(fromPackage(specifier), settings);
        expect(result.warnings).toEqual([]);
        expectBrowserSafe(result);
        expect(result.inputs.some((input) => input.includes(`dist/src/${subpath.slice(2)}-entry.js`))).toBe(true);
      });
    }
  }
});

/**
 * Web globals only, as a browser page (or React Native with its polyfills) has them. A vm context
 * has its own built-ins (its own Uint8Array), while the host's fetch and TextEncoder hand out the
 * host's bytes, which `instanceof Uint8Array` in the context refuses: a page's fetch and encoder
 * belong to the page. So the context gets a fetch that copies each body chunk, and a TextEncoder
 * that copies its output, into the context's realm.
 */
function webContext(): vm.Context {
  const context = vm.createContext({
    hostFetch: fetch,
    HostTextEncoder: TextEncoder,
    // Web Crypto (getRandomValues, subtle), the same object in Node as in a browser.
    crypto: globalThis.crypto,
    TextDecoder,
    URL,
    AbortController,
    AbortSignal,
    setTimeout,
    clearTimeout,
    queueMicrotask,
  });
  vm.runInContext(
    `{
      const hostFetch = globalThis.hostFetch;
      const HostTextEncoder = globalThis.HostTextEncoder;
      delete globalThis.hostFetch;
      delete globalThis.HostTextEncoder;
      globalThis.TextEncoder = class TextEncoder {
        get encoding() { return 'utf-8'; }
        encode(text) { return new Uint8Array(new HostTextEncoder().encode(text)); }
      };
      globalThis.fetch = async (input, init) => {
        const response = await hostFetch(input, init);
        const reader = response.body.getReader();
        return {
          status: response.status,
          url: response.url,
          redirected: response.redirected,
          type: response.type,
          headers: response.headers,
          arrayBuffer: async () => new Uint8Array(await response.arrayBuffer()).buffer,
          body: {
            getReader: () => ({
              read: async () => {
                const { done, value } = await reader.read();
                return done ? { done: true } : { done: false, value: new Uint8Array(value) };
              },
              cancel: (reason) => reader.cancel(reason),
            }),
            cancel: () => reader.cancel(),
          },
        };
      };
    }`,
    context,
  );
  return context;
}

/** What the bundle's code did in the context, as JSON-safe values. */
async function runIn(context: vm.Context, code: string): Promise<unknown> {
  return JSON.parse((await vm.runInContext(`(async () => JSON.stringify(await (async () => { ${code} })()))()`, context)) as string) as unknown;
}

describe('the browser bundles run without Node globals', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ auth: { kind: 'noop' }, backend: 'memory', port: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('the context has no Node global', async () => {
    const context = webContext();
    expect(await runIn(context, `return ['process', 'Buffer', 'require', 'global', 'setImmediate'].filter((name) => typeof globalThis[name] !== 'undefined');`)).toEqual([]);
  });

  it('ldk-vss/client: put and get through VssClient, a missing key is NoSuchKeyError, encryption and key obfuscation round-trip', async () => {
    const { text } = await bundle(fromSource('./client'), BROWSER, 'iife');
    const context = webContext();
    vm.runInContext(text, context);
    const result = await runIn(
      context,
      `const { VssClient, keyValue, int64ToBigInt, NoSuchKeyError, KeyObfuscator, encryptStorable, decryptStorable, deriveVssKeys } = LdkVss;
      const client = new VssClient(${JSON.stringify(server.url)});
      const keys = deriveVssKeys(new Uint8Array(64).fill(3));
      const key = new KeyObfuscator(keys.obfuscationMasterKey).obfuscate('monitors/chan');
      await client.putObjects({ storeId: 'browser', transactionItems: [keyValue(key, 0n, encryptStorable(new Uint8Array([1, 2, 3]), 1n, keys.dataEncryptionKey))] });
      const got = await client.getObject({ storeId: 'browser', key });
      const plain = decryptStorable(got.value.value, keys.dataEncryptionKey);
      const missing = await client.getObject({ storeId: 'browser', key: 'missing' }).then(() => 'found', (error) => error instanceof NoSuchKeyError);
      return {
        value: [...plain.value],
        version: String(int64ToBigInt(got.value.version)),
        key: new KeyObfuscator(keys.obfuscationMasterKey).deobfuscate(got.value.key),
        missing,
      };`,
    );
    expect(result).toEqual({ value: [1, 2, 3], version: '1', key: 'monitors/chan', missing: true });
  });

  it('ldk-vss/store: VssStore opens, writes, reads and lists; the Node-only parts fail with a clear error', async () => {
    // An iife (no import.meta there: only the Node-only sync bridge reads it) to run as a script.
    const { text } = await bundle(fromSource('./store'), BROWSER, 'iife');
    const context = webContext();
    vm.runInContext(text, context);
    const seed = Array.from({ length: 64 }, (_, i) => i);
    const result = await runIn(
      context,
      `const { VssStore, KeyNotFoundError, StoreOpenError } = LdkVss;
      const store = await VssStore.open({ storeId: 'browser-wallet', client: { baseUrl: ${JSON.stringify(server.url)} }, keys: { seed: new Uint8Array(${JSON.stringify(seed)}) } });
      await store.write('monitors', '', 'chan', new Uint8Array([4, 5, 6]));
      const back = [...(await store.read('monitors', '', 'chan'))];
      const listed = await store.list('monitors', '');
      const missing = await store.read('monitors', '', 'nothing').then(() => 'found', (error) => error instanceof KeyNotFoundError);
      let sync;
      try { store.toSyncStore(); sync = 'opened'; } catch (error) { sync = { open: error instanceof StoreOpenError, message: error.message }; }
      await store.close();
      const ledger = await VssStore.open({ storeId: 'browser-ledger', client: { baseUrl: ${JSON.stringify(server.url)} }, keys: { seed: new Uint8Array(64) }, versionLedger: 'wallet.vss-versions' }).then(
        () => 'opened',
        (error) => ({ open: error instanceof StoreOpenError, message: error.message }),
      );
      return { back, listed, missing, sync, ledger };`,
    );
    expect(result).toEqual({
      back: [4, 5, 6],
      listed: ['chan'],
      missing: true,
      sync: { open: true, message: expect.stringMatching(/needs Node\.js worker_threads/) },
      ledger: { open: true, message: expect.stringMatching(/fileVersionLedger needs Node\.js/) },
    });
    // The Node build reads what the browser bundle wrote: same layout, same encryption.
    const store = await VssStore.open({ storeId: 'browser-wallet', client: { baseUrl: server.url }, keys: { seed: new Uint8Array(seed) } });
    try {
      expect([...(await store.read('monitors', '', 'chan'))]).toEqual([4, 5, 6]);
    } finally {
      await store.close();
    }
  });
});

describe('VssStore in Node still lifts the listener limit of its stop signal (now reached without a static node:events import)', () => {
  it('many requests in flight at once print no MaxListenersExceededWarning', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, backend: 'memory', port: 0 });
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    try {
      const store = await VssStore.open({ storeId: 'listeners', client: { baseUrl: server.url }, keys: { seed: new Uint8Array(64).fill(9) } });
      try {
        const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
        await Promise.all(keys.map((key) => store.write('ns', '', key, new Uint8Array([1]))));
        const values = await Promise.all(keys.map((key) => store.read('ns', '', key)));
        expect(values.map((value) => value[0])).toEqual(keys.map(() => 1));
      } finally {
        await store.close();
      }
      // Node emits process warnings on a later tick.
      await new Promise((done) => setImmediate(done));
      expect(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await server.close();
    }
  });
});
