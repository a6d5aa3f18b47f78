/**
 * One server per embedded data directory. PGlite keeps no lock of its own: two processes on one
 * directory both start, each with its own view of the database, and the writes one of them
 * acknowledged are gone once the other's pages win. A lock file in the directory (created
 * exclusively) refuses the second server instead.
 *
 * A server that crashed leaves its lock file behind, so a lock counts as stale when its holder
 * is provably gone: on this host, no process with its pid (or it names this very process, which
 * does not hold it: a restarted container reusing pid 1); on another host (a shared volume, a
 * recreated container), when the holder has not refreshed it for STALE_AFTER_MS.
 */
import { open, readFile, rm, stat, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const DATA_DIR_LOCK_FILE = 'ldk-vss.lock';
/** How often the holder refreshes the lock file's modification time. */
export const REFRESH_EVERY_MS = 5_000;
/** A lock from another host not refreshed for this long is stale. */
export const STALE_AFTER_MS = 30_000;

/** The data directory is used by another running server. */
export class DataDirInUseError extends Error {
  override readonly name = 'DataDirInUseError';
}

export interface DataDirLock {
  readonly path: string;
  /** Stops refreshing and deletes the lock file. */
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  host: string;
  since: string;
}

/** Lock files this process holds: a second backend in the same process is refused too. */
const heldHere = new Set<string>();

export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const path = join(dir, DATA_DIR_LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await tryCreate(path)) return held(path);
    const found = await inspect(path);
    if (found === 'vanished') continue;
    if (!found.stale) {
      const { holder, ageMs } = found;
      const who = holder ? `process ${holder.pid} on ${holder.host} (since ${holder.since})` : 'another process';
      throw new DataDirInUseError(
        `data directory ${dir} is in use by ${who}, lock refreshed ${Math.round(ageMs / 1000)} s ago: two servers on one embedded ` +
          `database lose each other's writes. Stop that server or use another VSS_DATA_DIR; a lock left by a server that is gone ` +
          `is taken over by itself (at once on this host, after ${STALE_AFTER_MS / 1000} s from another)`,
      );
    }
    await rm(path, { force: true });
  }
  throw new DataDirInUseError(`data directory ${dir}: another server keeps taking its lock (${path}); is one restarting in a loop?`);
}

async function tryCreate(path: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(path, 'wx');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    const holder: Holder = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
    await handle.writeFile(JSON.stringify(holder));
    await handle.sync();
  } finally {
    await handle.close();
  }
  return true;
}

function held(path: string): DataDirLock {
  heldHere.add(path);
  const refresh = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, REFRESH_EVERY_MS);
  refresh.unref();
  return {
    path,
    async release() {
      if (!heldHere.delete(path)) return;
      clearInterval(refresh);
      await rm(path, { force: true });
    },
  };
}

async function inspect(path: string): Promise<'vanished' | { stale: boolean; holder: Holder | undefined; ageMs: number }> {
  let text: string;
  let ageMs: number;
  try {
    [text, ageMs] = await Promise.all([readFile(path, 'utf8'), stat(path).then((s) => Date.now() - s.mtimeMs)]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'vanished';
    throw error;
  }
  const holder = parseHolder(text);
  if (heldHere.has(path)) return { stale: false, holder, ageMs };
  // Unreadable (a crash while it was being written) or from another host: judged by its age.
  if (!holder || holder.host !== hostname()) return { stale: ageMs > STALE_AFTER_MS, holder, ageMs };
  return { stale: holder.pid === process.pid || !processExists(holder.pid), holder, ageMs };
}

function parseHolder(text: string): Holder | undefined {
  try {
    const value = JSON.parse(text) as Partial<Holder>;
    if (typeof value.pid === 'number' && typeof value.host === 'string' && typeof value.since === 'string') return value as Holder;
  } catch {
    // fall through
  }
  return undefined;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
