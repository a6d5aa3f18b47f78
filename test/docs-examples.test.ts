/**
 * Every TypeScript example in README.md and docs/*.md must compile against the current public
 * API, so that an API change that breaks an example breaks the suite instead of a reader's build.
 *
 * Each ```ts / ```typescript block becomes one virtual ES module at the repository root (so the
 * harness examples' `./harness/...` imports resolve as written), type-checked in strict mode with
 * the project's compiler options, every entry of the package's exports map (`ldk-vss`,
 * `ldk-vss/server`, `ldk-vss/store`…) mapped to the sources by `paths` (not to a possibly stale dist/; a test checks where they resolve). All
 * blocks share one program, so the sources are parsed and bound once.
 *
 * Free variables of an example (a seed, bytes, the reader's LDK objects) are declared by a
 * one-line HTML comment directly above the fence, invisible when rendered:
 *   <!-- example-prelude: declare const seed64: Uint8Array; -->
 * Several prelude lines may be stacked. A block that is deliberately not compilable is marked
 *   <!-- example-skip: why -->
 * Any other `<!-- example-...` comment is a typo and fails the suite, so a misspelt directive
 * cannot silently turn a check off.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { entrySource, moduleEntries } from './helpers/exports-map.js';

const ROOT = resolve(import.meta.dirname, '..');

/**
 * Each entry point of the package's exports map (`ldk-vss`, `ldk-vss/client`, …) and the source
 * its declarations are compiled from (`./dist/src/x/index.d.ts` from `src/x/index.ts`).
 */
const ENTRY_SOURCES: Record<string, string> = Object.fromEntries(Object.keys(moduleEntries()).map((subpath) => [`ldk-vss${subpath.slice(1)}`, entrySource(subpath)]));
const MARKDOWN_FILES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`),
];

interface Directive {
  kind: 'prelude' | 'skip';
  text: string;
  /** 1-based line of the comment in the markdown file. */
  line: number;
}

interface Example {
  /** Markdown file, relative to the repository root. */
  file: string;
  /** 1-based line of the opening fence. */
  fenceLine: number;
  code: string;
  preludes: Directive[];
  skip?: Directive;
}

const FENCE_OPEN = /^(\s*)(`{3,}|~{3,})\s*(\S*)/;
const DIRECTIVE = /^\s*<!--\s*example-(prelude|skip):\s*(.*?)\s*-->\s*$/;
const ANY_DIRECTIVE = /<!--\s*example-/;

function extract(file: string): { examples: Example[]; problems: string[] } {
  const lines = readFileSync(join(ROOT, file), 'utf8').split(/\r?\n/);
  const examples: Example[] = [];
  const problems: string[] = [];
  let pending: Directive[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const directive = DIRECTIVE.exec(line);
    if (directive) {
      pending.push({ kind: directive[1] as Directive['kind'], text: directive[2]!, line: i + 1 });
      continue;
    }
    if (ANY_DIRECTIVE.test(line)) problems.push(`${file}:${i + 1}: malformed example directive: ${line.trim()}`);
    const open = FENCE_OPEN.exec(line);
    if (!open) {
      for (const d of pending) problems.push(`${file}:${d.line}: example-${d.kind} is not directly above a code block`);
      pending = [];
      continue;
    }
    const [, indent, fence, lang] = open;
    // The closing fence: same character, at least as long, nothing after it.
    let end = i + 1;
    const close = new RegExp(`^\\s*${fence![0] === '`' ? '`' : '~'}{${fence!.length},}\\s*$`);
    while (end < lines.length && !close.test(lines[end]!)) end++;
    const body = lines.slice(i + 1, end).map((l) => (l.startsWith(indent!) ? l.slice(indent!.length) : l.trimStart()));
    const isTs = lang === 'ts' || lang === 'typescript';
    if (isTs) {
      const skips = pending.filter((d) => d.kind === 'skip');
      if (skips.length > 1) problems.push(`${file}:${skips[1]!.line}: more than one example-skip`);
      for (const s of skips) if (s.text === '') problems.push(`${file}:${s.line}: example-skip needs a reason`);
      if (skips.length > 0 && pending.some((d) => d.kind === 'prelude')) {
        problems.push(`${file}:${i + 1}: a skipped example has a prelude`);
      }
      examples.push({ file, fenceLine: i + 1, code: body.join('\n'), preludes: pending.filter((d) => d.kind === 'prelude'), skip: skips[0] });
    } else {
      for (const d of pending) problems.push(`${file}:${d.line}: example-${d.kind} above a \`${lang || 'plain'}\` block, not a ts block`);
    }
    pending = [];
    i = end;
  }
  for (const d of pending) problems.push(`${file}:${d.line}: example-${d.kind} is not directly above a code block`);
  return { examples, problems };
}

const extracted = MARKDOWN_FILES.map(extract);
const examples = extracted.flatMap((e) => e.examples);
const extractionProblems = extracted.flatMap((e) => e.problems);
const checked = examples.filter((e) => !e.skip);

function virtualPath(example: Example): string {
  return join(ROOT, `__docs_example__${example.file.replace(/[^A-Za-z0-9]/g, '_')}_L${example.fenceLine}.mts`);
}

/** The virtual module's text: preludes, the block, and `export {}` so every block is an ES module. */
function moduleText(example: Example): string {
  return [...example.preludes.map((p) => p.text), example.code, 'export {};', ''].join('\n');
}

/** Markdown line of a 0-based line of the virtual module. */
function markdownLine(example: Example, moduleLine: number): number {
  const preludeLines = example.preludes.length;
  if (moduleLine < preludeLines) return example.preludes[moduleLine]!.line;
  return example.fenceLine + 1 + (moduleLine - preludeLines);
}

interface Checked {
  program: ts.Program;
  options: ts.CompilerOptions;
  host: ts.CompilerHost;
  byPath: Map<string, Example>;
}

let compiled: Checked | undefined;

/** One program for all blocks, built on first use. */
function compile(): Checked {
  if (compiled) return compiled;
  const config = ts.readConfigFile(join(ROOT, 'tsconfig.json'), (p) => ts.sys.readFile(p));
  if (config.error) throw new Error(ts.flattenDiagnosticMessageText(config.error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, ROOT);
  const options: ts.CompilerOptions = {
    ...parsed.options,
    strict: true,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    baseUrl: ROOT,
    paths: Object.fromEntries(Object.entries(ENTRY_SOURCES).map(([name, source]) => [name, [source]])),
  };
  const byPath = new Map(checked.map((e) => [virtualPath(e), e]));
  const texts = new Map(checked.map((e) => [virtualPath(e), moduleText(e)]));
  const host = ts.createCompilerHost(options, true);
  const { fileExists, readFile, getSourceFile } = host;
  host.fileExists = (p) => texts.has(p) || fileExists.call(host, p);
  host.readFile = (p) => texts.get(p) ?? readFile.call(host, p);
  host.getSourceFile = (p, languageVersion, onError, shouldCreate) => {
    const text = texts.get(p);
    if (text !== undefined) return ts.createSourceFile(p, text, languageVersion, true);
    return getSourceFile.call(host, p, languageVersion, onError, shouldCreate);
  };
  const program = ts.createProgram({ rootNames: [...byPath.keys()], options, host });
  compiled = { program, options, host, byPath };
  return compiled;
}

function format(example: Example, diagnostic: ts.Diagnostic): string {
  const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n  ');
  if (diagnostic.file && diagnostic.start !== undefined) {
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    const source = diagnostic.file.text.split('\n')[line]?.trim() ?? '';
    return `${example.file}:${markdownLine(example, line)}: TS${diagnostic.code}: ${message}\n  > ${source}`;
  }
  return `${example.file} (block at line ${example.fenceLine}): TS${diagnostic.code}: ${message}`;
}

describe('TypeScript examples in README.md and docs/*.md', () => {
  it('are found, and every example directive is well-formed and attached to a ts block', () => {
    expect(extractionProblems).toEqual([]);
    // Cross-check the extractor with a plain line count, so a parsing slip cannot quietly turn
    // into "nothing to check" for a file.
    for (const file of MARKDOWN_FILES) {
      const fences = readFileSync(join(ROOT, file), 'utf8')
        .split(/\r?\n/)
        .filter((line) => /^\s*(`{3,}|~{3,})\s*(ts|typescript)(\s.*)?$/.test(line)).length;
      expect(examples.filter((e) => e.file === file).length, file).toBe(fences);
    }
    expect(examples.filter((e) => e.file === 'README.md').length).toBeGreaterThanOrEqual(4);
    expect(checked.length).toBeGreaterThanOrEqual(10);
  });

  it('resolve ldk-vss and its other entry points to the sources, not to dist/', () => {
    const { program, options, host, byPath } = compile();
    const expected = ENTRY_SOURCES;
    expect(Object.keys(expected).sort()).toEqual(['ldk-vss', 'ldk-vss/client', 'ldk-vss/protocol', 'ldk-vss/server', 'ldk-vss/store']);
    expect(expected['ldk-vss/server']).toBe('src/server/index.ts');
    const seen = new Set<string>();
    for (const path of byPath.keys()) {
      const sourceFile = program.getSourceFile(path)!;
      for (const statement of sourceFile.statements) {
        if (!ts.isImportDeclaration(statement) || !ts.isStringLiteral(statement.moduleSpecifier)) continue;
        const name = statement.moduleSpecifier.text;
        if (name !== 'ldk-vss' && !name.startsWith('ldk-vss/')) continue;
        const mode = program.getModeForUsageLocation(sourceFile, statement.moduleSpecifier);
        const module = ts.resolveModuleName(name, path, options, host, undefined, undefined, mode).resolvedModule;
        expect(module && relative(ROOT, module.resolvedFileName), name).toBe(expected[name]);
        seen.add(name);
      }
    }
    expect(seen).toContain('ldk-vss');
    expect(seen).toContain('ldk-vss/server');
    expect(seen).toContain('ldk-vss/store');
  });

  it('compile with no global or option errors', () => {
    const { program } = compile();
    const messages = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map((d) =>
      ts.flattenDiagnosticMessageText(d.messageText, '\n'),
    );
    expect(messages).toEqual([]);
  });

  for (const example of examples) {
    const name = `${example.file}:${example.fenceLine}`;
    if (example.skip) {
      it.skip(`${name} (example-skip: ${example.skip.text})`, () => {});
      continue;
    }
    it(`${name} type-checks`, () => {
      const { program } = compile();
      const sourceFile = program.getSourceFile(virtualPath(example))!;
      const diagnostics = [...program.getSyntacticDiagnostics(sourceFile), ...program.getSemanticDiagnostics(sourceFile)];
      const messages = diagnostics.map((d) => format(example, d));
      expect(messages, `the example at ${name} does not compile against the current API`).toEqual([]);
    });
  }
});
