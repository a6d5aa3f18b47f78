/**
 * A device-local record of the key versions this device last saw on the server, so that a
 * server which went back in time (restored from an old backup, lost recent writes) is
 * detected at the next open instead of silently handing back old channel state.
 *
 * Versions are keyed by an opaque id (a hash of store id and store key), so the ledger
 * reveals neither keys nor contents.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { base64urlnopad } from '@scure/base';
import { StoreOpenError } from './errors.js';

/** One key's new last-seen version; `null` means the key is known to be gone. */
export interface VersionChange {
  id: string;
  version: bigint | null;
}

/**
 * Where last-seen versions are kept. `record` must be durable when it resolves (the store
 * acknowledges a write only afterwards). `recordSync` is required to use the store's
 * synchronous API. Implement it over any local storage, or use `fileVersionLedger`.
 */
export interface VersionLedger {
  /** Everything recorded so far (an empty map on a new device). */
  load(): Promise<ReadonlyMap<string, bigint>>;
  record(changes: readonly VersionChange[]): Promise<void>;
  recordSync?(changes: readonly VersionChange[]): void;
  close?(): Promise<void> | void;
  /**
   * True if `record` applies its changes in call order, whatever the timing of the promises it
   * returns (e.g. it writes synchronously, as `fileVersionLedger` does). Otherwise the store
   * makes a record of a key wait for the unfinished records of that key (see ordered-ledger.ts).
   */
  readonly recordsInCallOrder?: boolean;
}

const utf8 = new TextEncoder();

/** The ledger id of a store key: 128 bits of SHA-256(storeId ‖ 0x00 ‖ storeKey), base64url. */
export function versionId(storeId: string, storeKey: string): string {
  return base64urlnopad.encode(sha256(utf8.encode(`${storeId}\u0000${storeKey}`)).subarray(0, 16));
}

const HEADER = 'ldk-vss-versions 1';
const ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;

type Fs = typeof import('node:fs');

function nodeFs(): Fs {
  const fs = (globalThis.process as { getBuiltinModule?: (id: string) => unknown } | undefined)?.getBuiltinModule?.('node:fs') as Fs | undefined;
  if (!fs) throw new TypeError('fileVersionLedger needs Node.js (node:fs); supply your own VersionLedger elsewhere');
  return fs;
}

export interface FileVersionLedgerOptions {
  /** fdatasync after every append (default true): a write is acknowledged only once recorded. */
  fsync?: boolean;
}

/** Who holds a ledger's lock, as its lock file says. */
export interface VersionLedgerLockHolder {
  pid: number;
  host: string;
  /** When the holder took the lock (ISO 8601). */
  since: string;
}

/**
 * The version ledger file is in use by another open store: another process (a wallet started
 * twice), or another store of this process. Two writers would drop each other's records (a
 * compaction rewrites the file from one instance's memory), weakening rollback detection.
 */
export class VersionLedgerLockedError extends StoreOpenError {
  constructor(
    readonly path: string,
    readonly lockPath: string,
    readonly holder: VersionLedgerLockHolder,
    unverifiable: boolean,
  ) {
    super(
      `version ledger ${path} is in use by another open store: its lock ${lockPath} is held by pid ${holder.pid} on ${holder.host} since ${holder.since}. ` +
        'Close that store first (is the wallet running twice?). ' +
        (unverifiable
          ? `That process cannot be checked from here (another host or container); its lock expires ${LOCK_LEASE_MS / 1000} s after it stops renewing it, or delete ${lockPath} if it does not run.`
          : `Delete ${lockPath} only if that process is not a wallet using this ledger.`),
    );
  }
}

/** A lock whose holder cannot be checked (other host or pid namespace) is stale once unrenewed this long. */
const LOCK_LEASE_MS = 60_000;
/** How often a holder renews its lock (the lock file's mtime). */
const LOCK_RENEW_MS = 10_000;
const LOCK_HEADER = 'ldk-vss-ledger-lock 1';

/** What tells this process apart from any other one, then or later, as far as the OS allows. */
interface ProcessIdentity {
  pid: number;
  host: string;
  /** Linux: `id:<boot_id>`; elsewhere `t:<boot time in s>` (approximate). */
  boot: string;
  /** Linux: the pid namespace (`pid:[…]`), `-` elsewhere: pids of two namespaces are not comparable. */
  pidns: string;
  /** Linux: the process start time from /proc (clock ticks since boot), `-` elsewhere: tells a reused pid apart. */
  start: string;
}

interface LockRecord extends ProcessIdentity {
  since: string;
  token: string;
}

function readOr(read: () => string, fallback: string): string {
  try {
    return read().trim();
  } catch {
    return fallback;
  }
}

/** Field 22 of /proc/<pid>/stat (start time), or undefined if there is no such process. */
function linuxStartTime(fs: Fs, pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function currentProcess(fs: Fs): ProcessIdentity {
  const os = globalThis.process.getBuiltinModule?.('node:os') as typeof import('node:os');
  const pid = globalThis.process.pid;
  const linux = globalThis.process.platform === 'linux';
  const bootId = linux ? readOr(() => fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'), '') : '';
  return {
    pid,
    // One word in the lock file (a host name has no spaces, but nothing stops one).
    host: os.hostname().replace(/\s/g, '_') || '-',
    boot: bootId ? `id:${bootId}` : `t:${Math.round(Date.now() / 1000 - os.uptime())}`,
    pidns: linux ? readOr(() => fs.readlinkSync('/proc/self/ns/pid'), '-') : '-',
    start: (linux && linuxStartTime(fs, pid)) || '-',
  };
}

function formatLock(record: LockRecord): string {
  return [LOCK_HEADER, ...(['pid', 'host', 'boot', 'pidns', 'start', 'since', 'token'] as const).map((k) => `${k} ${record[k]}`)].join('\n') + '\n';
}

function parseLock(text: string): LockRecord | undefined {
  const [header, ...rows] = text.split('\n');
  if (header !== LOCK_HEADER) return undefined;
  const fields = new Map(rows.filter((r) => r !== '').map((r) => [r.slice(0, r.indexOf(' ')), r.slice(r.indexOf(' ') + 1)]));
  const pid = Number(fields.get('pid'));
  const [host, boot, pidns, start, since, token] = ['host', 'boot', 'pidns', 'start', 'since', 'token'].map((k) => fields.get(k));
  if (!Number.isSafeInteger(pid) || pid <= 0 || !host || !boot || !pidns || !start || !since || !token) return undefined;
  return { pid, host, boot, pidns, start, since, token };
}

/**
 * Whether the process a lock names still runs. On its own host and pid namespace this is
 * checked (a reused pid is told apart by its start time on Linux); a lock from before a reboot
 * is dead; one from another host or container cannot be checked and lives while renewed.
 */
function holderState(fs: Fs, me: ProcessIdentity, lock: LockRecord, mtimeMs: number): 'alive' | 'dead' | 'unverifiable' {
  const leased = Date.now() - mtimeMs > LOCK_LEASE_MS ? 'dead' : 'unverifiable';
  if (lock.host !== me.host) return leased;
  if (lock.boot !== me.boot) {
    // Boot times derived from the uptime drift by a few seconds (and with clock changes).
    const [a, b] = [lock.boot, me.boot].map((boot) => (boot.startsWith('t:') ? Number(boot.slice(2)) : Number.NaN));
    if (!(Math.abs(a - b) < 120)) return 'dead';
  }
  if (lock.pidns !== me.pidns) return leased;
  if (lock.start !== '-' && me.start !== '-') return linuxStartTime(fs, lock.pid) === lock.start ? 'alive' : 'dead';
  try {
    globalThis.process.kill(lock.pid, 0);
    return 'alive';
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === 'ESRCH' ? 'dead' : 'alive';
  }
}

function randomHex(): string {
  return Array.from(globalThis.crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * A `VersionLedger` in one local file: an append-only log of `<id> <version>` lines
 * (`-` for deleted), compacted when it grows to several times its live size. Appends are
 * synchronous so records land in exactly the order they were made, from both the async and
 * the sync API. A torn last line (crash mid-append) is ignored; any other malformed content
 * fails the open (fail closed; delete the file deliberately to reset the device's memory).
 * An append that fails (a full disk) fails the record and is cut back, so the file stays
 * readable; compaction replaces the file atomically (temp file, fsync, rename, directory
 * fsync) and, being only an optimisation, never fails a record. One file per store, used by
 * one open store at a time: `load` (or the first record) takes `<path>.lock` and `close`
 * releases it; a second instance, in this process or another, fails with
 * `VersionLedgerLockedError` (a second writer's compaction would drop the first one's records).
 * A lock left by a process that died (SIGKILL, crash, reboot) is taken over.
 */
export function fileVersionLedger(path: string, options: FileVersionLedgerOptions = {}): VersionLedger {
  const fsync = options.fsync ?? true;
  let live = new Map<string, bigint>();
  let lines = 0;
  let fd: number | undefined;
  // Bytes of complete records in the open file: where an append that failed must be cut back to.
  let end = 0;
  // Set when an append failed: the file may end in part of it, to be cut off before the next.
  let cutTo: number | undefined;
  // No compaction before the log holds this many lines (raised when one fails, see compact).
  let compactFrom = 1000;
  // The file was created or replaced and its directory entry is not known durable yet.
  let directoryUnsynced = false;
  const lockPath = `${path}.lock`;
  // The token of the lock this instance holds, while it holds it.
  let lockToken: string | undefined;
  let renewTimer: ReturnType<typeof setInterval> | undefined;
  // Set when the lock was found taken over (a holder that could not renew it for a whole lease).
  let lockLost = false;

  /** Writes all of `data` (a write may take only part of it, e.g. what still fits on the disk). */
  const writeAll = (fs: Fs, handle: number, data: Buffer): void => {
    for (let done = 0; done < data.length; ) done += fs.writeSync(handle, data, done, data.length - done);
  };

  /** Writes `body` as the whole of a new file (`flag` 'w' or 'wx'), on disk before it returns when fsync is on. */
  const writeWholeFile = (fs: Fs, file: string, flag: 'w' | 'wx', body: string): void => {
    const handle = fs.openSync(file, flag);
    try {
      writeAll(fs, handle, Buffer.from(body, 'utf8'));
      if (fsync) fs.fdatasyncSync(handle);
    } finally {
      fs.closeSync(handle);
    }
  };

  /**
   * Makes a file's creation or replacement itself durable: fsync of a file does not cover its
   * directory entry, and losing a rename after a crash would bring back the old log without
   * the removes recorded since (a false rollback alarm). Windows cannot open a directory.
   */
  const syncDirectory = (fs: Fs): void => {
    if (!fsync || globalThis.process?.platform === 'win32') return;
    const dir = (globalThis.process.getBuiltinModule?.('node:path') as typeof import('node:path')).dirname(path);
    const dirFd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  };

  /**
   * Takes the lock file (`<path>.lock`): written whole under a temporary name, then hard-linked
   * into place, which fails if the lock exists (so nobody ever reads a half-written lock). A
   * lock whose holder is gone (killed, crashed, rebooted) is taken over.
   */
  const lock = (fs: Fs): void => {
    if (lockToken !== undefined) return;
    const me = currentProcess(fs);
    const record: LockRecord = { ...me, since: new Date().toISOString(), token: randomHex() };
    const body = formatLock(record);
    for (let attempt = 0; ; attempt++) {
      const tmp = `${lockPath}.${me.pid}.${randomHex()}`;
      writeWholeFile(fs, tmp, 'wx', body);
      let taken = false;
      try {
        fs.linkSync(tmp, lockPath);
        taken = true;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST') {
          // A file system without hard links: an exclusive create is as exclusive, only its
          // content is briefly incomplete for a concurrent reader.
          if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS' && code !== 'EOPNOTSUPP') throw error;
          try {
            fs.writeFileSync(lockPath, body, { flag: 'wx' });
            taken = true;
          } catch (createError) {
            if ((createError as NodeJS.ErrnoException).code !== 'EEXIST') throw createError;
          }
        }
      } finally {
        fs.rmSync(tmp, { force: true });
      }
      if (taken) break;
      let text: string;
      let mtimeMs: number;
      try {
        text = fs.readFileSync(lockPath, 'utf8');
        mtimeMs = fs.statSync(lockPath).mtimeMs;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 5) continue; // released meanwhile
        throw error;
      }
      const holder = parseLock(text);
      if (!holder) {
        throw new StoreOpenError(
          `version ledger ${path} is locked by ${lockPath}, which is not an ldk-vss lock (or is being written right now): ` +
            'retry, and delete it if it stays so and no wallet uses this ledger',
        );
      }
      const state = holderState(fs, me, holder, mtimeMs);
      if (state === 'dead' && attempt < 5) {
        breakStaleLock(fs, holder.token);
        continue;
      }
      throw new VersionLedgerLockedError(path, lockPath, { pid: holder.pid, host: holder.host, since: holder.since }, state === 'unverifiable');
    }
    lockToken = record.token;
    lockLost = false;
    // Renewed so that a process that cannot check this one (another container on a shared
    // volume) sees it alive; also notices a take-over by such a process after a long stall.
    renewTimer = setInterval(() => {
      try {
        if (parseLock(fs.readFileSync(lockPath, 'utf8'))?.token !== lockToken) {
          lockLost = true;
          clearInterval(renewTimer);
          return;
        }
        const now = new Date();
        fs.utimesSync(lockPath, now, now);
      } catch (error) {
        // Deleted by hand while held (stale-looking to someone): put back, so that a second
        // instance started next is still refused. If another one was quicker, the next
        // renewal finds its token and gives up.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          try {
            fs.writeFileSync(lockPath, body, { flag: 'wx' });
          } catch {
            // retried at the next renewal
          }
        }
        // anything else (a transient I/O error): try again at the next renewal
      }
    }, LOCK_RENEW_MS);
    renewTimer.unref?.();
  };

  /**
   * Removes a dead holder's lock, unless someone replaced it meanwhile: it is moved aside
   * first (atomic), and put back if it turns out not to be the dead one. Two processes both
   * finding the same dead lock then cannot remove the fresh lock one of them just took.
   */
  const breakStaleLock = (fs: Fs, staleToken: string): void => {
    const aside = `${lockPath}.stale-${randomHex()}`;
    try {
      fs.renameSync(lockPath, aside);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    const moved = parseLock(readOr(() => fs.readFileSync(aside, 'utf8'), ''));
    if (moved?.token === staleToken) {
      fs.rmSync(aside, { force: true });
      return;
    }
    try {
      fs.linkSync(aside, lockPath);
    } catch {
      // another process took the lock in between: it holds it now
    }
    fs.rmSync(aside, { force: true });
  };

  const unlock = (fs: Fs): void => {
    if (renewTimer !== undefined) clearInterval(renewTimer);
    renewTimer = undefined;
    const token = lockToken;
    lockToken = undefined;
    if (token === undefined || lockLost) return;
    // Never remove a lock this instance does not hold (taken over after a stall).
    if (parseLock(readOr(() => fs.readFileSync(lockPath, 'utf8'), ''))?.token === token) fs.rmSync(lockPath, { force: true });
  };

  const open = (fs: Fs): number => {
    if (lockToken === undefined) lock(fs);
    if (lockLost) {
      throw new Error(`lost the lock ${lockPath} on version ledger ${path}: another store took it over (this process stalled longer than its lease); reopen the store`);
    }
    if (fd === undefined) {
      if (cutTo !== undefined) fs.truncateSync(path, cutTo);
      cutTo = undefined;
      fd = fs.openSync(path, 'a');
      end = fs.fstatSync(fd).size;
      if (end === 0) {
        append(fs, fd, `${HEADER}\n`);
        directoryUnsynced = true;
      }
    }
    if (directoryUnsynced) {
      syncDirectory(fs);
      directoryUnsynced = false;
    }
    return fd;
  };

  /**
   * Appends whole lines durably, or throws with the file as before: a partial append (a full
   * disk takes what fits, and Node's writeSync reports that as success) would leave a torn
   * line that the next append continues into one line the next open refuses as corrupt.
   */
  const append = (fs: Fs, handle: number, text: string): void => {
    const data = Buffer.from(text, 'utf8');
    try {
      writeAll(fs, handle, data);
      if (fsync) fs.fdatasyncSync(handle);
    } catch (error) {
      cutTo = end;
      fd = undefined;
      try {
        fs.closeSync(handle);
        // Cut now if possible; otherwise the next open cuts (or, after a restart, `load` drops
        // the torn line).
        fs.truncateSync(path, end);
        cutTo = undefined;
      } catch {
        // the error that matters is the append's
      }
      throw error;
    }
    end += data.length;
  };

  const compact = (fs: Fs): void => {
    const tmp = `${path}.tmp`;
    const body = [HEADER, ...Array.from(live, ([id, v]) => `${id} ${v}`)].join('\n') + '\n';
    try {
      writeWholeFile(fs, tmp, 'w', body);
      const log = fd;
      fd = undefined;
      if (log !== undefined) fs.closeSync(log);
      fs.renameSync(tmp, path);
    } catch {
      // The records are durable in the log already; compacting only saves space. Failing the
      // record for it (a full disk, a directory that refuses new files) would fail every write
      // from here on. Try again once the log has doubled.
      try {
        fs.rmSync(tmp, { force: true });
      } catch {
        // nothing more to clean up with
      }
      compactFrom = 2 * lines;
      return;
    }
    lines = live.size;
    compactFrom = 1000;
    // Made durable before the next append (open), which fails if it cannot be: records
    // appended to a log whose rename a crash can undo would not be durable.
    directoryUnsynced = true;
  };

  const recordSync = (changes: readonly VersionChange[]): void => {
    if (changes.length === 0) return;
    const fs = nodeFs();
    const handle = open(fs);
    append(fs, handle, changes.map((c) => `${c.id} ${c.version === null ? '-' : c.version}`).join('\n') + '\n');
    for (const c of changes) {
      if (c.version === null) live.delete(c.id);
      else live.set(c.id, c.version);
    }
    lines += changes.length;
    if (lines > compactFrom && lines > 4 * live.size) compact(fs);
  };

  return {
    async load() {
      const fs = nodeFs();
      try {
        lock(fs);
      } catch (error) {
        if (error instanceof StoreOpenError) throw error;
        throw new StoreOpenError(`cannot lock the version ledger ${path} (${lockPath}): ${(error as Error)?.message ?? String(error)}`, { cause: error });
      }
      let text: string;
      try {
        text = fs.readFileSync(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
        throw new StoreOpenError(`cannot read the version ledger ${path}`, { cause: error });
      }
      const rows = text.split('\n');
      // A file not ending in a newline ends in a torn append: drop that partial line.
      const torn = rows[rows.length - 1];
      rows.pop();
      // The next append would continue the torn line, and the merged line would make the
      // ledger unreadable (the store refuses to open) from the run after: cut it off first,
      // once the rest is known to be a ledger (never truncate someone else's file).
      const cutTorn = (): void => {
        if (torn !== '') fs.truncateSync(path, Buffer.byteLength(text) - Buffer.byteLength(torn));
      };
      if (rows.length === 0) {
        if (!HEADER.startsWith(torn)) throw new StoreOpenError(`${path} is not an ldk-vss version ledger`);
        cutTorn();
        return new Map();
      }
      if (rows[0] !== HEADER) throw new StoreOpenError(`${path} is not an ldk-vss version ledger`);
      const map = new Map<string, bigint>();
      for (let i = 1; i < rows.length; i++) {
        const [id, version, extra] = rows[i].split(' ');
        if (!ID_PATTERN.test(id ?? '') || extra !== undefined || !/^(-|-1|\d+)$/.test(version ?? '')) {
          throw new StoreOpenError(
            `version ledger ${path} is corrupt at line ${i + 1} (not a crash mid-append, which is tolerated); ` +
              'refusing to open without the versions it holds. Restore the file from a copy, or, only if the ' +
              'server is known not to have lost writes, move it away to start a new ledger from what the server holds',
          );
        }
        if (version === '-') map.delete(id);
        else map.set(id, BigInt(version));
      }
      cutTorn();
      live = new Map(map);
      lines = rows.length - 1;
      return map;
    },
    async record(changes) {
      recordSync(changes);
    },
    recordSync,
    recordsInCallOrder: true,
    close() {
      // Holding nothing (never loaded, or the load failed before taking the lock) needs no file
      // system: without node:fs (a browser) closing after a failed open must not throw a second
      // error over the open's own.
      if (fd === undefined && lockToken === undefined && renewTimer === undefined) return;
      const fs = nodeFs();
      try {
        if (fd !== undefined) fs.closeSync(fd);
      } finally {
        fd = undefined;
        unlock(fs);
      }
    },
  };
}
