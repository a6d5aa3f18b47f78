/**
 * An existing data directory that holds files but no database (`VSS_DATA_DIR=$HOME`, another
 * program's directory) is refused with one line, and nothing is written into it. Everything the
 * embedded backend legitimately finds in its directory is still accepted: nothing, our own lock
 * file, a database (with a stray file next to it), a fresh volume's `lost+found`, and what a
 * first start that was cut short leaves (PGlite copies the new database in, `pg_wal` first and
 * `PG_VERSION` near the end).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { watch } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
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
/** User and group `nobody`: a root test run drops to it, as root may read any directory. */
const NOBODY = 65534;

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of dirs) {
    await chmod(dir, 0o755).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
});

async function scratchDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ldk-vss-foreign-dir-'));
  dirs.push(dir);
  return dir;
}

const put = (backend: PgliteBackend, key: string) =>
  backend.put('user', { storeId: 's', transactionItems: [{ key, version: 0n, value: new Uint8Array([1, 2, 3]) }], deleteItems: [] });

/** Opens the database in `dataDir`, writes and reads a key, and closes it: the directory works. */
async function expectUsable(dataDir: string, key = 'k'): Promise<void> {
  const backend = await PgliteBackend.open({ dataDir, lockWaitMs: 0 });
  try {
    await put(backend, key);
    expect((await backend.get('user', 's', key))?.version).toBe(1n);
  } finally {
    await backend.close();
  }
}

let template: Promise<string> | undefined;
/** A database created (and closed) once for this file, with one key `kept`: copies of it are fast. */
function databaseTemplate(): Promise<string> {
  template ??= (async () => {
    const dir = join(await scratchDir(), 'db');
    const backend = await PgliteBackend.open({ dataDir: dir });
    await put(backend, 'kept');
    await backend.close();
    return dir;
  })();
  return template;
}

/** Every file below `dir` with its size and content digest stand-in (bytes), to show nothing changed. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    result[path.slice(dir.length)] = entry.isFile() ? (await readFile(path)).toString('base64') : 'directory';
  }
  return result;
}

const refusal = (dir: string, found: string) =>
  `data directory ${dir} is not empty but holds no ldk-vss (PostgreSQL) database (found: ${found}): ` +
  'refusing to create one among other files; use an empty or new directory';

describe('an existing directory that holds files but no database', () => {
  it('is refused with PgliteStartError naming it and what it holds; nothing is written into it, no lock is left', async () => {
    const dir = await scratchDir();
    await writeFile(join(dir, 'notes.txt'), 'mine');
    await mkdir(join(dir, 'Documents'));
    await writeFile(join(dir, 'Documents', 'letter.txt'), 'mine too');
    const before = await snapshot(dir);
    const modified = (await stat(dir)).mtimeMs;

    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toBe(refusal(dir, 'Documents, notes.txt'));
    expect(await snapshot(dir)).toEqual(before);
    // Not even a lock file created and deleted again.
    expect((await stat(dir)).mtimeMs).toBe(modified);

    const server = await startVssServer({ backend: { kind: 'pglite', dataDir: dir }, auth: { kind: 'noop' }, logLevel: 'silent' }).catch((e: unknown) => e);
    expect(server).toBeInstanceOf(PgliteStartError);
    expect(await snapshot(dir)).toEqual(before);
  });

  it('names the first few of many entries and how many there are', async () => {
    const dir = await scratchDir();
    for (const name of ['f', 'e', 'd', 'c', 'b', 'a', 'g']) await writeFile(join(dir, name), name);
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect((error as Error).message).toBe(refusal(dir, 'a, b, c, d, e and 2 more'));
    expect((await readdir(dir)).sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
  });

  it("a home directory with only hidden files (a service user's) is refused too, even next to our lock file", async () => {
    const dir = await scratchDir();
    await writeFile(join(dir, '.bashrc'), '');
    await writeFile(join(dir, '.profile'), '');
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect((error as Error).message).toBe(refusal(dir, '.bashrc, .profile'));
    // A lock file does not make the rest ours (an old server may have locked the wrong directory).
    await writeFile(join(dir, DATA_DIR_LOCK_FILE), 'left behind');
    const again = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect((again as Error).message).toBe(refusal(dir, '.bashrc, .profile'));
    expect((await readdir(dir)).sort()).toEqual(['.bashrc', '.profile', DATA_DIR_LOCK_FILE]);
    expect(await readFile(join(dir, DATA_DIR_LOCK_FILE), 'utf8')).toBe('left behind');
  });

  it('ldk-vss serve: exit 1 with one line naming VSS_DATA_DIR, the directory and what to do', async () => {
    const dir = await scratchDir();
    await writeFile(join(dir, 'other-program.db'), 'not ours');
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of SERVER_ENV_VARS) delete env[name];
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], {
      cwd: ROOT,
      env: { ...env, VSS_BIND_ADDRESS: '127.0.0.1:0', VSS_AUTH: 'noop', VSS_DATA_DIR: dir, VSS_LOG_LEVEL: 'off' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    // Not a timing assertion: a server that starts anyway serves until stopped, and the test must fail, not hang.
    const guard = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(guard);
    expect(code).toBe(1);
    expect(stderr.trim().split('\n')).toEqual([`ldk-vss: cannot start on pglite ${dir} from VSS_DATA_DIR: ${refusal(dir, 'other-program.db')}`]);
    expect(await readdir(dir)).toEqual(['other-program.db']);
  });

  it('a directory whose entries cannot be listed is refused with the reason, and left as it was', async () => {
    const scratch = await scratchDir();
    const dir = join(scratch, 'unlistable');
    await mkdir(dir);
    await chmod(scratch, 0o755);
    // Writable and searchable, not readable: for `nobody` when the test runs as root, else for us.
    await chmod(dir, 0o333);
    const script = `import { PgliteBackend } from ${JSON.stringify(PGLITE_MODULE)};
      if (process.getuid() === 0) { process.setgid(${NOBODY}); process.setuid(${NOBODY}); }
      const result = await PgliteBackend.open({ dataDir: process.argv[1], lockWaitMs: 0 }).then(async (b) => { await b.close(); return { opened: true }; }, (e) => ({ name: e.name, message: e.message }));
      process.stdout.write(JSON.stringify(result));
      process.exit(0);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    expect(await new Promise<number | null>((resolve) => child.on('close', resolve))).toBe(0);
    expect(JSON.parse(stdout)).toEqual({
      name: 'PgliteStartError',
      message: `data directory ${dir} cannot be used: its files cannot be listed: EACCES: permission denied, scandir '${dir}'`,
    });
    await chmod(dir, 0o755);
    expect(await readdir(dir)).toEqual([]);
  });
});

describe("another PostgreSQL server's data directory", () => {
  // What a real server's directory holds besides the database: postmaster.opts from its first
  // start, and while it runs (or after a crash) a postmaster.pid naming its pid and directory.
  // PGlite writes neither of those (its pid file names its own virtual /pglite/data).
  it.each([
    ['postmaster.opts (written by every start of a real server)', { 'postmaster.opts': '/usr/lib/postgresql/18/bin/postgres "-D" "/var/lib/postgresql/18/main"\n' }],
    ['a postmaster.pid of a real server (its own pid and directory)', { 'postmaster.pid': '4242\n/var/lib/postgresql/18/main\n1795620000\n5432\n/var/run/postgresql\n*\n' }],
  ])('is refused (%s): the embedded database would open the other server\'s files; nothing is written', async (_name, files) => {
    const dir = join(await scratchDir(), 'main');
    await cp(await databaseTemplate(), dir, { recursive: true });
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
    const before = await snapshot(dir);
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toBe(
      `data directory ${dir} holds the files of a PostgreSQL server (${Object.keys(files)[0]}): the embedded database would open that server's files; ` +
        'give ldk-vss a directory of its own, or point DATABASE_URL at that server',
    );
    expect(await snapshot(dir)).toEqual(before);
  });

  it('a first start cut short between PG_VERSION and postgresql.conf fails saying so and how to get out', async () => {
    const dir = join(await scratchDir(), 'cut');
    await cp(await databaseTemplate(), dir, { recursive: true });
    // What PGlite copies in after PG_VERSION.
    for (const name of ['postgresql.conf', 'postgresql.auto.conf', 'pg_hba.conf', 'pg_ident.conf']) await rm(join(dir, name), { force: true });
    const error = await PgliteBackend.open({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PgliteStartError);
    expect((error as Error).message).toBe(
      `data directory ${dir}: embedded PostgreSQL did not start: postgres: could not access the server configuration file "/pglite/data/postgresql.conf": No such file or directory` +
        ` (${dir} has PG_VERSION but no postgresql.conf: a first start of the embedded database cut short at its very end leaves this;` +
        ' if the server never started on this directory it holds no data: delete the directory and start again)',
    );
  });

  it("a crashed embedded database's own postmaster.pid (naming /pglite/data) is still accepted", async () => {
    const dir = join(await scratchDir(), 'db');
    await cp(await databaseTemplate(), dir, { recursive: true });
    await writeFile(join(dir, 'postmaster.pid'), '-42\n/pglite/data\n1795624688\n5432\n\n\n       20         1\n');
    const backend = await PgliteBackend.open({ dataDir: dir });
    try {
      expect((await backend.get('user', 's', 'kept'))?.version).toBe(1n);
    } finally {
      await backend.close();
    }
  });
});

describe('directories that are still accepted', () => {
  it('a new directory (and its parents), and an existing empty one', async () => {
    const scratch = await scratchDir();
    await expectUsable(join(scratch, 'new', 'data'));
    const empty = join(scratch, 'empty');
    await mkdir(empty);
    await expectUsable(empty);
  });

  it('a fresh volume: only lost+found, storage appliances\' snapshot and index folders, and desktop or version-control leftovers', async () => {
    const dir = await scratchDir();
    await mkdir(join(dir, 'lost+found'));
    // What a NAS puts at the root of a share or volume (NetApp, Synology, a Windows file server).
    for (const name of ['.snapshot', '@eaDir', 'System Volume Information', '$RECYCLE.BIN']) await mkdir(join(dir, name));
    await writeFile(join(dir, '.DS_Store'), '');
    await writeFile(join(dir, '.gitkeep'), '');
    await expectUsable(dir);
    expect(await readdir(dir)).toContain('PG_VERSION');
  });

  it('an existing database, also with a file of the user next to it', async () => {
    const dir = join(await scratchDir(), 'db');
    await cp(await databaseTemplate(), dir, { recursive: true });
    await writeFile(join(dir, 'README'), 'the VSS database');
    const backend = await PgliteBackend.open({ dataDir: dir });
    try {
      expect((await backend.get('user', 's', 'kept'))?.version).toBe(1n);
    } finally {
      await backend.close();
    }
  });

  it("a directory holding only the lock file of a server that crashed before creating anything", async () => {
    const dir = await scratchDir();
    // A child that has exited: its pid is gone from this host, so its lock is taken over at once.
    const gone = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => gone.on('exit', resolve));
    const pidNamespace = await readlink('/proc/self/ns/pid').catch(() => undefined);
    await writeFile(join(dir, DATA_DIR_LOCK_FILE), JSON.stringify({ pid: gone.pid, host: hostname(), pidNamespace, token: 'crashed', since: '2026-01-01T00:00:00Z' }));
    await expectUsable(dir);
  });

  it('what a first start killed with SIGKILL right after it began copying the database in leaves: the next start completes it', async () => {
    const dir = await scratchDir();
    const script = `import { PgliteBackend } from ${JSON.stringify(PGLITE_MODULE)};
      await PgliteBackend.open({ dataDir: process.argv[1] });`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], { cwd: ROOT, stdio: 'ignore' });
    children.push(child);
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    // pg_wal is the first thing PGlite writes (after our lock file).
    const watcher = watch(dir, (_event, name) => {
      if (name === 'pg_wal') child.kill('SIGKILL');
    });
    try {
      expect(await exited).toBe('SIGKILL');
    } finally {
      watcher.close();
    }
    const left = await readdir(dir);
    expect(left).toContain('pg_wal');
    expect(left).toContain(DATA_DIR_LOCK_FILE);
    await expectUsable(dir);
    expect(await readdir(dir)).toContain('PG_VERSION');
  });

  it('a first start cut short before PG_VERSION (everything PGlite copies before it, as a full disk leaves it): the next start completes it', async () => {
    const dir = join(await scratchDir(), 'partial');
    await cp(await databaseTemplate(), dir, { recursive: true });
    // PGlite 0.5.16 copies PG_VERSION and the configuration files last; base/ before them.
    for (const name of ['PG_VERSION', 'postgresql.conf', 'postgresql.auto.conf', 'pg_hba.conf', 'pg_ident.conf', 'pg_logical', 'pg_xact', 'pg_stat_tmp', 'pg_stat', 'pg_tblspc', 'pg_replslot']) {
      await rm(join(dir, name), { recursive: true, force: true });
    }
    await expectUsable(dir, 'new');
    expect(await readdir(dir)).toContain('PG_VERSION');
  });
});
