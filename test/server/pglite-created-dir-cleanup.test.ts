/**
 * A start that fails after the embedded backend created the data directory (and its parents)
 * leaves none of them behind, whichever check fails: here the listing that looks for another
 * program's files, on a directory its creator cannot read (a umask without the owner's read bit).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PGLITE_MODULE = fileURLToPath(new URL('../../src/server/backends/pglite.ts', import.meta.url));
/** User and group `nobody`: a root test run drops to it, as root may read any directory. */
const NOBODY = 65534;

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('directories created by a failed start', () => {
  it('are removed when the new data directory cannot be listed', async () => {
    const scratch = await mkdtemp(join(tmpdir(), 'ldk-vss-created-cleanup-'));
    dirs.push(scratch);
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
