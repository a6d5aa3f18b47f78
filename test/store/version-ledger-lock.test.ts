/**
 * The file version ledger's lock: one open store per ledger file. A second store on the same
 * file, in this process or in another, is refused with VersionLedgerLockedError naming the file
 * and the holder (two writers drop each other's records); a holder that died (SIGKILL, a reboot,
 * a pid reused by another process) does not lock the wallet out; a holder that cannot be checked
 * (another host or container) holds the lock while it renews it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { fileVersionLedger, StoreOpenError, VssStore, versionId } from '../../src/store/index.js';
import { VersionLedgerLockedError } from '../../src/store/version-ledger.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHILD = join(ROOT, 'test', 'store', 'helpers', 'ledger-lock-child.ts');

const dirs: string[] = [];
const children: ChildProcessWithoutNullStreams[] = [];
function tempFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-ledger-lock-'));
  dirs.push(dir);
  return join(dir, 'versions.log');
}
afterEach(() => {
  vi.useRealTimers();
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const a = versionId('store', 'key-a');

/** The fields of a lock file, to write one as another (dead, foreign) holder would have. */
function lockFields(path: string): Map<string, string> {
  const [, ...rows] = readFileSync(`${path}.lock`, 'utf8').trim().split('\n');
  return new Map(rows.map((r) => [r.slice(0, r.indexOf(' ')), r.slice(r.indexOf(' ') + 1)]));
}
function writeLock(path: string, fields: Map<string, string>): void {
  writeFileSync(`${path}.lock`, ['ldk-vss-ledger-lock 1', ...Array.from(fields, ([k, v]) => `${k} ${v}`)].join('\n') + '\n');
}
/** This process's own lock fields (taken by a ledger opened and closed for the purpose). */
async function ownLockFields(): Promise<Map<string, string>> {
  const probe = tempFile();
  const ledger = fileVersionLedger(probe, { fsync: false });
  await ledger.load();
  const fields = lockFields(probe);
  await ledger.close?.();
  return fields;
}

function spawnChild(mode: 'hold' | 'try', path: string): { child: ChildProcessWithoutNullStreams; line: Promise<string> } {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, mode, path], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const line = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
    });
    child.on('exit', (code) => reject(new Error(`child exited ${code} before a line: ${err}`)));
  });
  return { child, line };
}

describe('two stores on one ledger file in one process', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0, logLevel: 'silent' });
  });
  afterAll(async () => {
    await server?.close();
  });
  const open = (path: string) => VssStore.open({ storeId: 'wallet', client: { baseUrl: server.url, retry: 'none' }, keys: { seed: new Uint8Array(64).fill(3) }, versionLedger: path });

  it('the second open is refused with VersionLedgerLockedError naming the file and the holder; the first keeps recording; after close the next open works', async () => {
    const path = tempFile();
    const first = await open(path);
    await first.write('m', '', 'k', Uint8Array.of(1));

    const second = await open(path).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(VersionLedgerLockedError);
    expect(second).toBeInstanceOf(StoreOpenError);
    const locked = second as VersionLedgerLockedError;
    expect(locked.path).toBe(path);
    expect(locked.lockPath).toBe(`${path}.lock`);
    expect(locked.holder.pid).toBe(process.pid);
    expect(locked.message).toContain(`version ledger ${path} is in use by another open store`);
    expect(locked.message).toContain(`held by pid ${process.pid}`);

    // The refused open released nothing it did not hold: the first store still holds the lock
    // and records, and a third open is refused too.
    await first.write('m', '', 'k', Uint8Array.of(2));
    await expect(open(path)).rejects.toBeInstanceOf(VersionLedgerLockedError);

    await first.close();
    expect(existsSync(`${path}.lock`)).toBe(false);
    const third = await open(path);
    expect(await third.read('m', '', 'k')).toEqual(Uint8Array.of(2));
    await third.close();
  });
});

describe('a ledger held by another process', () => {
  it('is refused while the holder runs, naming its pid, and taken over once the holder is killed with SIGKILL', async () => {
    const path = tempFile();
    const holder = spawnChild('hold', path);
    const held = await holder.line;
    const pid = Number(held.split(' ')[1]);
    expect(held).toBe(`held ${holder.child.pid}`);

    const refused = await fileVersionLedger(path).load().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(VersionLedgerLockedError);
    expect((refused as VersionLedgerLockedError).holder.pid).toBe(pid);
    expect((refused as Error).message).toContain(`held by pid ${pid}`);

    // A crash leaves the lock file behind; it must not lock the wallet out.
    const exited = new Promise((resolve) => holder.child.on('exit', resolve));
    holder.child.kill('SIGKILL');
    await exited;
    expect(existsSync(`${path}.lock`)).toBe(true);
    const ledger = fileVersionLedger(path);
    expect(await ledger.load()).toEqual(new Map([[versionId('lock', 'k'), 5n]]));
    expect(lockFields(path).get('pid')).toBe(String(process.pid));
    await ledger.close?.();
  });

  it('another process is refused while this one holds the ledger, and opens once it is closed', async () => {
    const path = tempFile();
    const ledger = fileVersionLedger(path);
    await ledger.load();
    const refused = await spawnChild('try', path).line;
    expect(refused).toMatch(new RegExp(`^refused VersionLedgerLockedError version ledger ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use .* held by pid ${process.pid} `));
    await ledger.close?.();
    expect(await spawnChild('try', path).line).toBe('opened');
  });
});

describe('stale and unverifiable locks', () => {
  // Only Linux tells a reused pid apart (by its start time in /proc); elsewhere the field is "-".
  it.runIf(process.platform === 'linux')('a lock naming this very pid but another process start (a pid reused, as in a restarted container) is taken over', async () => {
    const fields = await ownLockFields();
    expect(fields.get('start')).toMatch(/^\d+$/);
    const path = tempFile();
    fields.set('start', String(Number(fields.get('start')) + 1));
    fields.set('token', 'previous-incarnation');
    writeLock(path, fields);
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    expect(lockFields(path).get('token')).not.toBe('previous-incarnation');
    await ledger.close?.();
  });

  it('a lock from before a reboot is taken over even though its pid runs now', async () => {
    const fields = await ownLockFields();
    const path = tempFile();
    fields.set('boot', fields.get('boot')!.startsWith('id:') ? 'id:00000000-0000-0000-0000-000000000000' : 't:1000');
    fields.set('token', 'before-reboot');
    writeLock(path, fields);
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    expect(lockFields(path).get('token')).not.toBe('before-reboot');
    await ledger.close?.();
  });

  it('a lock of another host is held while renewed, and taken over once it has not been renewed for a minute', async () => {
    const fields = await ownLockFields();
    const path = tempFile();
    fields.set('host', 'other-machine');
    fields.set('pid', '4242');
    fields.set('token', 'foreign');
    writeLock(path, fields);
    const refused = await fileVersionLedger(path, { fsync: false }).load().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(VersionLedgerLockedError);
    expect((refused as Error).message).toMatch(/held by pid 4242 on other-machine .*cannot be checked from here/);
    expect(lockFields(path).get('token')).toBe('foreign');

    const old = new Date(Date.now() - 61_000);
    utimesSync(`${path}.lock`, old, old);
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    expect(lockFields(path).get('token')).not.toBe('foreign');
    await ledger.close?.();
  });

  it('the holder renews its lock, and once another process took it over it records nothing more and leaves that lock in place at close', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const path = tempFile();
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    const old = new Date(Date.now() - 50_000);
    utimesSync(`${path}.lock`, old, old);
    vi.advanceTimersByTime(10_000);
    // Renewed: another host would see it alive for another lease.
    expect(Date.now() - (await import('node:fs')).statSync(`${path}.lock`).mtimeMs).toBeLessThan(50_000);

    // Another host took it over (this process had stalled past the lease).
    const fields = lockFields(path);
    fields.set('host', 'other-machine');
    fields.set('token', 'usurper');
    writeLock(path, fields);
    vi.advanceTimersByTime(10_000);
    expect(() => ledger.recordSync!([{ id: a, version: 1n }])).toThrow(/lost the lock .*another store took it over/);
    await ledger.close?.();
    expect(lockFields(path).get('token')).toBe('usurper');
  });

  it('a lock file deleted by hand while held is put back at the next renewal, and the holder keeps recording', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const path = tempFile();
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    const token = lockFields(path).get('token');
    rmSync(`${path}.lock`);
    vi.advanceTimersByTime(10_000);
    expect(lockFields(path).get('token')).toBe(token);
    ledger.recordSync!([{ id: a, version: 1n }]);
    await expect(fileVersionLedger(path).load()).rejects.toBeInstanceOf(VersionLedgerLockedError);
    await ledger.close?.();
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it('a lock file that is not an ldk-vss lock refuses the open and is left untouched', async () => {
    const path = tempFile();
    writeFileSync(`${path}.lock`, 'something else\n');
    const refused = await fileVersionLedger(path).load().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(StoreOpenError);
    expect((refused as Error).message).toMatch(/not an ldk-vss lock/);
    expect(readFileSync(`${path}.lock`, 'utf8')).toBe('something else\n');
  });
});
