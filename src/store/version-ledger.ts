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

/**
 * A `VersionLedger` in one local file: an append-only log of `<id> <version>` lines
 * (`-` for deleted), compacted when it grows to several times its live size. Appends are
 * synchronous so records land in exactly the order they were made, from both the async and
 * the sync API. A torn last line (crash mid-append) is ignored; any other malformed content
 * fails the open (fail closed; delete the file deliberately to reset the device's memory).
 * An append that fails (a full disk) fails the record and is cut back, so the file stays
 * readable; compaction replaces the file atomically (temp file, fsync, rename, directory
 * fsync) and, being only an optimisation, never fails a record. One file per store, used by
 * one open store at a time: it is not locked, and a second instance's compaction would drop
 * the first one's records.
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

  /** Writes all of `data` (a write may take only part of it, e.g. what still fits on the disk). */
  const writeAll = (fs: Fs, handle: number, data: Buffer): void => {
    for (let done = 0; done < data.length; ) done += fs.writeSync(handle, data, done, data.length - done);
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

  const open = (fs: Fs): number => {
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
      const tmpFd = fs.openSync(tmp, 'w');
      try {
        writeAll(fs, tmpFd, Buffer.from(body, 'utf8'));
        if (fsync) fs.fdatasyncSync(tmpFd);
      } finally {
        fs.closeSync(tmpFd);
      }
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
    close() {
      if (fd !== undefined) nodeFs().closeSync(fd);
      fd = undefined;
    },
  };
}
