/**
 * A data directory for the embedded backend that cannot be created or used fails start-up at
 * once with one clear reason naming the directory, holds no lock, and leaves nothing behind.
 * The /proc cases run in child processes: before the fix, Node's recursive mkdir spun forever
 * on a thread of the process that called it, which a test cannot stop from inside.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DATA_DIR_LOCK_FILE } from '../../src/server/backends/data-dir-lock.js';
import { PgliteBackend, PgliteStartError } from '../../src/server/backends/pglite.js';
import { SERVER_ENV_VARS } from '../../src/server/config.js';
import { startVssServer } from '../../src/server/server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'src/cli.ts');
const PGLITE_MODULE = fileURLToPath(new URL('../../src/server/backends/pglite.ts', import.meta.url));
const SERVER_MODULE = fileURLToPath(new URL('../../src/server/server.ts', import.meta.url));
/** User and group `nobody`: a root test run drops to it, as root may write into any directory. */
const NOBODY = 65534;

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function scratchDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ldk-vss-data-dir-'));
  dirs.push(dir);
  return dir;
}

/** Runs a child to its end and returns its exit code and output; a child still running after 45 s is killed so the test fails instead of hanging. */
async function runChild(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  // Not a timing assertion: a child spinning forever is ended so that the test can fail.
  const guard = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(guard);
  return { code, stdout, stderr };
}

interface Outcome {
  name?: string;
  message?: string;
  opened?: true;
}

/**
 * `PgliteBackend.open` and `startVssServer` on `dataDir` in a child process (as `nobody` when
 * `asNobody` and the test runs as root), each outcome as JSON.
 */
async function openInChild(dataDir: string, asNobody = false): Promise<{ open: Outcome; server: Outcome }> {
  const script = `import { PgliteBackend } from ${JSON.stringify(PGLITE_MODULE)};
    import { startVssServer } from ${JSON.stringify(SERVER_MODULE)};
    if (${asNobody} && process.getuid() === 0) { process.setgid(${NOBODY}); process.setuid(${NOBODY}); }
    const outcome = (promise) => promise.then(async (opened) => { await opened.close(); return { opened: true }; }, (e) => ({ name: e.name, message: e.message }));
    const dataDir = process.argv[1];
    const result = { open: await outcome(PgliteBackend.open({ dataDir, lockWaitMs: 0 })) };
    result.server = await outcome(startVssServer({ backend: { kind: 'pglite', dataDir }, auth: { kind: 'noop' }, logLevel: 'silent' }));
    process.stdout.write(JSON.stringify(result));
    process.exit(0);`;
  const { code, stdout, stderr } = await runChild(['--import', 'tsx', '--input-type=module', '-e', script, dataDir]);
  expect(code, `child output: ${stdout} ${stderr}`).toBe(0);
  return JSON.parse(stdout) as { open: Outcome; server: Outcome };
}

/** The environment of a spawned `ldk-vss serve`: nothing from the developer's shell, this data directory. */
function cliEnv(dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SERVER_ENV_VARS) delete env[name];
  return { ...env, VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_AUTH: 'noop', VSS_DATA_DIR: dataDir, VSS_LOG_LEVEL: 'off' };
}

const PROC_MESSAGE =
  "data directory /proc/vssdata cannot be created: ENOENT: no such file or directory, mkdir '/proc/vssdata' (/proc exists but holds no new directories: a virtual file system such as /proc?)";

describe('a data directory under /proc (its parent exists but takes no new directories)', () => {
  it('PgliteBackend.open and startVssServer fail at once with PgliteStartError naming the directory, instead of never settling', async () => {
    const result = await openInChild('/proc/vssdata');
    expect(result.open).toEqual({ name: 'PgliteStartError', message: PROC_MESSAGE });
    expect(result.server).toEqual({ name: 'PgliteStartError', message: PROC_MESSAGE });
    expect(existsSync('/proc/vssdata')).toBe(false);
  });

  it('a directory deeper below /proc names the level that failed', async () => {
    const result = await openInChild('/proc/self/vss/data');
    expect(result.open).toEqual({
      name: 'PgliteStartError',
      message:
        "data directory /proc/self/vss/data cannot be created: ENOENT: no such file or directory, mkdir '/proc/self/vss' (/proc/self exists but holds no new directories: a virtual file system such as /proc?)",
    });
  });

  it('ldk-vss serve: exit 1 with one line naming VSS_DATA_DIR, the directory and the reason; /proc itself: not empty, and holds no database', async () => {
    const [below, itself] = await Promise.all([
      runChild(['--import', 'tsx', CLI, 'serve'], cliEnv('/proc/vssdata')),
      runChild(['--import', 'tsx', CLI, 'serve'], cliEnv('/proc')),
    ]);
    expect(below.code).toBe(1);
    expect(below.stderr.trim().split('\n')).toEqual([`ldk-vss: cannot start on pglite /proc/vssdata from VSS_DATA_DIR: ${PROC_MESSAGE}`]);
    expect(itself.code).toBe(1);
    expect(itself.stderr.trim().split('\n')).toHaveLength(1);
    expect(itself.stderr.trim()).toMatch(
      /^ldk-vss: cannot start on pglite \/proc from VSS_DATA_DIR: data directory \/proc is not empty but holds no ldk-vss \(PostgreSQL\) database \(found: .+\): refusing to create one among other files; use an empty or new directory$/,
    );
  });
});

describe('a data directory that cannot be created', () => {
  it('below a regular file: PgliteStartError with the directory and ENOTDIR', async () => {
    const file = join(await scratchDir(), 'a-file');
    await writeFile(file, 'not a directory');
    for (const dataDir of [join(file, 'data'), join(file, 'deeper', 'data')]) {
      const error = await PgliteBackend.open({ dataDir }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PgliteStartError);
      expect((error as Error).message).toBe(`data directory ${dataDir} cannot be created: ENOTDIR: not a directory, mkdir '${dataDir}'`);
      expect((error as Error).cause).toMatchObject({ code: 'ENOTDIR' });
    }
  });

  it('a symbolic link to nowhere (the directory itself, or one of its parents) says so; once its target exists the database starts there', async () => {
    const scratch = await scratchDir();
    const target = join(scratch, 'unmounted');
    const link = join(scratch, 'link');
    await symlink(target, link);
    const itself = await PgliteBackend.open({ dataDir: link }).catch((e: unknown) => e);
    expect(itself).toBeInstanceOf(PgliteStartError);
    expect((itself as Error).message).toBe(`data directory ${link} is a symbolic link whose target cannot be reached: ENOENT: no such file or directory, stat '${link}'`);
    const below = await PgliteBackend.open({ dataDir: join(link, 'data') }).catch((e: unknown) => e);
    expect(below).toBeInstanceOf(PgliteStartError);
    expect((below as Error).message).toBe(
      `data directory ${join(link, 'data')} cannot be created: ${link} is a symbolic link whose target cannot be reached: ENOENT: no such file or directory, stat '${link}'`,
    );
    expect(existsSync(target)).toBe(false);

    await mkdir(target);
    const backend = await PgliteBackend.open({ dataDir: link });
    try {
      expect(await readdir(target)).toContain(DATA_DIR_LOCK_FILE);
    } finally {
      await backend.close();
    }
  });

  it('a name too long (ENAMETOOLONG): the parents created on the way are removed again', async () => {
    const scratch = await scratchDir();
    const dataDir = join(scratch, 'new', 'deeper', 'a'.repeat(300));
    const error = await PgliteBackend.open({ dataDir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toBe(`data directory ${dataDir} cannot be created: ENAMETOOLONG: name too long, mkdir '${dataDir}'`);
    expect(await readdir(scratch)).toEqual([]);
  });

  it('an empty path: PgliteStartError instead of mkdir\'s bare "ENOENT … mkdir \'\'"', async () => {
    const error = await PgliteBackend.open({ dataDir: '' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toBe('data directory is an empty path: give a directory, or no dataDir for an in-memory database');
    const server = await startVssServer({ backend: { kind: 'pglite', dataDir: '' }, auth: { kind: 'noop' }, logLevel: 'silent' }).catch((e: unknown) => e);
    expect(server).toBeInstanceOf(PgliteStartError);
  });
});

describe('a data directory in which no file can be created', () => {
  it('fails with PgliteStartError naming the directory and EACCES, and leaves the directory empty', async () => {
    const scratch = await scratchDir();
    const dataDir = join(scratch, 'read-only');
    await mkdir(dataDir);
    // Readable and searchable for `nobody` (a root run drops to it), writable for no one but root.
    await chmod(scratch, 0o755);
    await chmod(dataDir, 0o555);
    const result = await openInChild(dataDir, true);
    const message = `data directory ${dataDir} cannot be used: could not take its lock file: EACCES: permission denied, open '${join(dataDir, DATA_DIR_LOCK_FILE)}'`;
    expect(result.open).toEqual({ name: 'PgliteStartError', message });
    expect(result.server).toEqual({ name: 'PgliteStartError', message });
    expect(await readdir(dataDir)).toEqual([]);
  });
});

describe('directories created by a failed start', () => {
  it('are removed when the new data directory cannot be listed', async () => {
    const scratch = await scratchDir();
    // Writable by `nobody`, so that the child can create (and remove) `new` in it.
    await chmod(scratch, 0o777);
    const dataDir = join(scratch, 'new', 'data');
    // umask 0o477: new directories are 0o300 (writable and searchable, not readable by their owner),
    // so mkdir of both levels succeeds and only listing the data directory fails.
    const script = `import { PgliteBackend } from ${JSON.stringify(PGLITE_MODULE)};
      if (process.getuid() === 0) { process.setgid(${NOBODY}); process.setuid(${NOBODY}); }
      process.umask(0o477);
      const result = await PgliteBackend.open({ dataDir: process.argv[1], lockWaitMs: 0 }).then(async (b) => { await b.close(); return { opened: true }; }, (e) => ({ name: e.name, message: e.message }));
      process.stdout.write(JSON.stringify(result));
      process.exit(0);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dataDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    expect(await new Promise<number | null>((resolve) => child.on('close', resolve)), stderr).toBe(0);
    expect(JSON.parse(stdout)).toEqual({
      name: 'PgliteStartError',
      message: `data directory ${dataDir} cannot be used: its files cannot be listed: EACCES: permission denied, scandir '${dataDir}'`,
    });
    // Neither `new/data` nor `new` is left behind.
    expect(await readdir(scratch)).toEqual([]);
  });
});
