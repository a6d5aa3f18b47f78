/**
 * One server per embedded data directory. PGlite keeps no lock of its own: two processes on one
 * directory both start, each with its own view of the database, and the writes one of them
 * acknowledged are gone once the other's pages win. A lock file in the directory (created
 * exclusively, naming its holder with a random token) refuses the second server instead.
 *
 * A server that crashed leaves its lock file behind, so a lock counts as stale when its holder
 * is provably gone: in this pid namespace on this host, no process has its pid; anywhere else
 * (another host sharing the volume, another container's pid namespace, a container restarted
 * with a new one), and for this very process (another thread of it may hold the lock, or a
 * previous process had the same pid), when the holder has not refreshed it for STALE_AFTER_MS.
 * A lock not refreshed for STALE_SAME_HOST_AFTER_MS is stale even if a process with its pid
 * exists (after a reboot the pid belongs to someone else).
 *
 * Taking over a stale lock is serialised by a second, short-lived lock file: two servers
 * starting together after a crash cannot both delete the stale lock and both create their own.
 *
 * A holder that cannot be checked by pid can be waited for (`waitMs`): a refresh seen meanwhile
 * proves it alive (refused at once), otherwise its lock goes stale and is taken over. A
 * container restarted after a crash gets a new pid namespace, so this is how it starts again
 * by itself instead of failing until the old lock is 30 s old.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, readlink, realpath, rm, stat, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const DATA_DIR_LOCK_FILE = 'ldk-vss.lock';
const TAKEOVER_SUFFIX = '.takeover';
/** How often the holder refreshes the lock file's modification time. */
export const REFRESH_EVERY_MS = 5_000;
/** A lock whose holder cannot be checked by pid, not refreshed for this long, is stale. */
export const STALE_AFTER_MS = 30_000;
/** A lock not refreshed for this long is stale even if a process with its pid exists. */
export const STALE_SAME_HOST_AFTER_MS = 300_000;

/** The data directory is used by another running server. */
export class DataDirInUseError extends Error {
  override readonly name = 'DataDirInUseError';
}

export interface DataDirLock {
  readonly path: string;
  /** Stops refreshing and deletes the lock file, if it is still this holder's. */
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  host: string;
  /** The pid namespace (Linux), so a pid is only checked where it means the same process. */
  pidNamespace?: string;
  token: string;
  since: string;
}

/** Tokens of the locks this thread holds, by lock path (other threads are judged by refresh age). */
const heldHere = new Map<string, string>();

export interface LockDataDirOptions {
  /** How long to wait for a holder that cannot be checked by pid to refresh or go stale (default 0). */
  waitMs?: number;
  /** How often to look while waiting (default 1 s). */
  pollMs?: number;
  /** Called once when waiting starts. */
  onWait?: (description: string) => void;
}

export async function lockDataDir(dir: string, options: LockDataDirOptions = {}): Promise<DataDirLock> {
  const path = join(await realpath(dir), DATA_DIR_LOCK_FILE);
  const me: Holder = { pid: process.pid, host: hostname(), pidNamespace: await ownPidNamespace(), token: randomBytes(16).toString('hex'), since: new Date().toISOString() };
  const deadline = Date.now() + (options.waitMs ?? 0);
  let waitingSince: number | undefined;
  for (let attempt = 0; attempt < 1_000; attempt++) {
    if (await tryCreate(path, me)) return held(path, me.token);
    const found = await inspect(path, me);
    if (found === 'vanished') continue;
    if (found.stale) {
      if (await takeOver(path, found.text, me)) return held(path, me.token);
      // Another server is taking the stale lock over right now: look again shortly.
      await sleep(50);
      continue;
    }
    // Refreshed since we began waiting: its holder is alive.
    const refreshed = waitingSince !== undefined && found.refreshedAt > waitingSince;
    if (!found.judgedByAge || refreshed || Date.now() >= deadline) throw inUse(dir, path, found);
    if (waitingSince === undefined) {
      waitingSince = found.refreshedAt;
      options.onWait?.(`data directory ${dir} is locked by ${describeHolder(found.holder)}, which cannot be checked from here; waiting up to ${Math.ceil((deadline - Date.now()) / 1000)} s for it to be refreshed (in use) or to go stale (taken over)`);
    }
    await sleep(options.pollMs ?? 1_000);
  }
  throw new DataDirInUseError(`data directory ${dir}: could not take its lock (${path}); another server keeps taking it`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function describeHolder(holder: Holder | undefined): string {
  return holder ? `process ${holder.pid} on ${holder.host} (since ${holder.since})` : 'another process';
}

function inUse(dir: string, path: string, found: Inspection): DataDirInUseError {
  const { holder, ageMs } = found;
  // A holder checked by pid is refused while any process has that pid: say what to do when it
  // is not a server at all (a crashed server's pid taken by another process), not only "wait".
  const reused =
    holder && !found.judgedByAge
      ? `; if process ${holder.pid} is not an ldk-vss server (the pid of a crashed one, reused), delete ${path} (or it is taken over after ${STALE_SAME_HOST_AFTER_MS / 60_000} minutes without a refresh)`
      : '';
  return new DataDirInUseError(
    `data directory ${dir} is in use by ${describeHolder(holder)}, lock refreshed ${Math.round(ageMs / 1000)} s ago: two servers on one embedded ` +
      `database lose each other's writes. Stop that server or use another VSS_DATA_DIR; a lock left by a server that is gone ` +
      `is taken over by itself (at once when its process is gone from this host and pid namespace, otherwise after ${STALE_AFTER_MS / 1000} s without a refresh)${reused}`,
  );
}

/** Creates the lock file exclusively; false if it exists. */
async function tryCreate(path: string, me: Holder): Promise<boolean> {
  let handle;
  try {
    handle = await open(path, 'wx');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    await handle.writeFile(JSON.stringify(me));
    await handle.sync();
  } finally {
    await handle.close();
  }
  return true;
}

/**
 * Replaces a stale lock whose content is `staleText`, holding the takeover lock meanwhile; false
 * if another server holds the takeover lock or the lock changed since it was judged stale.
 */
async function takeOver(path: string, staleText: string, me: Holder): Promise<boolean> {
  const takeoverPath = path + TAKEOVER_SUFFIX;
  if (!(await tryCreate(takeoverPath, me))) {
    // A takeover that died half-way leaves its file: judged by age alone (it lives milliseconds).
    const age = await stat(takeoverPath).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (age > STALE_AFTER_MS) await rm(takeoverPath, { force: true });
    return false;
  }
  try {
    const now = await readFile(path, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (now !== undefined && now !== staleText) return false; // renewed or replaced meanwhile
    await rm(path, { force: true });
    return await tryCreate(path, me);
  } finally {
    await rm(takeoverPath, { force: true });
  }
}

function held(path: string, token: string): DataDirLock {
  heldHere.set(path, token);
  const refresh = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, REFRESH_EVERY_MS);
  refresh.unref();
  return {
    path,
    async release() {
      if (heldHere.get(path) !== token) return;
      heldHere.delete(path);
      clearInterval(refresh);
      // Delete only our own lock (never one another server created after judging ours stale).
      const text = await readFile(path, 'utf8').catch(() => undefined);
      if (text !== undefined && parseHolder(text)?.token === token) await rm(path, { force: true });
    },
  };
}

interface Inspection {
  stale: boolean;
  /** Its holder cannot be checked by pid: only its refreshes tell whether it is alive. */
  judgedByAge: boolean;
  holder: Holder | undefined;
  ageMs: number;
  /** The lock file's modification time (ms): when its holder last refreshed it. */
  refreshedAt: number;
  text: string;
}

async function inspect(path: string, me: Holder): Promise<'vanished' | Inspection> {
  let text: string;
  let refreshedAt: number;
  try {
    [text, refreshedAt] = await Promise.all([readFile(path, 'utf8'), stat(path).then((s) => s.mtimeMs)]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'vanished';
    throw error;
  }
  const ageMs = Date.now() - refreshedAt;
  const holder = parseHolder(text);
  const result = (stale: boolean, judgedByAge: boolean): Inspection => ({ stale, judgedByAge, holder, ageMs, refreshedAt, text });
  if (heldHere.has(path)) return result(false, false);
  // Unreadable (a crash while it was being written), a pid that means nothing here, or this
  // process's own pid (another thread of it, or an earlier process that had the same pid).
  if (!holder || holder.host !== me.host || holder.pidNamespace !== me.pidNamespace || holder.pid === process.pid) {
    return result(ageMs > STALE_AFTER_MS, true);
  }
  return result(!processExists(holder.pid) || ageMs > STALE_SAME_HOST_AFTER_MS, false);
}

function parseHolder(text: string): Holder | undefined {
  try {
    const value = JSON.parse(text) as Partial<Holder>;
    if (typeof value.pid === 'number' && typeof value.host === 'string' && typeof value.token === 'string' && typeof value.since === 'string') {
      return value as Holder;
    }
  } catch {
    // fall through
  }
  return undefined;
}

/** This process's pid namespace (`pid:[4026531836]` on Linux), undefined where there is none to read. */
async function ownPidNamespace(): Promise<string | undefined> {
  return readlink('/proc/self/ns/pid').catch(() => undefined);
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
