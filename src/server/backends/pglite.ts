/**
 * Embedded PostgreSQL (PGlite, WebAssembly) running the same schema, migrations and SQL as
 * the PostgreSQL backend: the zero-setup default of `ldk-vss serve`. One in-process
 * connection; PGlite queues concurrent queries and transactions itself.
 */
import { MemoryFS, messages, PGlite, protocol, types } from '@electric-sql/pglite';
import { NodeFS } from '@electric-sql/pglite/nodefs';
import { existsSync, fsyncSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DATA_DIR_LOCK_FILE, DataDirInUseError, lockDataDir, REFRESH_EVERY_MS, STALE_AFTER_MS, type DataDirLock } from './data-dir-lock.js';
import { migrate, type MigrationOutcome } from './migrations.js';
import { checkMaxValueSize, SqlBackend, type SqlBackendOptions } from './sql-backend.js';
import type { SqlDriver, SqlQuery, SqlResult, SqlSession } from './sql-driver.js';

/**
 * The largest value the embedded database stores by default (`maxValueSize`): the default
 * request body limit, the largest size measured to work whatever came before. PostgreSQL runs in
 * WebAssembly memory that cannot grow past 2 GiB and never shrinks, and a put needs about five
 * times the value there (Bind message, parameter, tuple, TOAST's compression attempt). Measured
 * with PGlite 0.5.16: a fresh instance stored 256 and 320 MiB (memory at 1.4-1.7 GiB), but after
 * a 400 MiB put had failed a 256 MiB put failed too, with "out of memory": a 500 that clients
 * retry in vain, each retry holding the event loop for seconds. 128 MiB still worked then. A
 * server whose body limit is raised above this refuses larger values with a 413 naming the limit.
 */
export const PGLITE_MAX_VALUE_SIZE = 128 * 1024 * 1024;

export interface PgliteBackendOptions extends SqlBackendOptions {
  /** Directory for the database files; undefined keeps everything in memory. */
  dataDir?: string;
  /** An already created PGlite instance to use instead (the backend takes ownership and closes it). */
  db?: PGlite;
  /**
   * How long to wait for a data-directory lock whose holder cannot be checked by pid (another
   * container, e.g. this one before a restart) to be refreshed or go stale. Default: long enough
   * for it to go stale (see data-dir-lock.ts).
   */
  lockWaitMs?: number;
}

const BYTEA_OID = 17;
const BYTEA_ARRAY_OID = 1001;

function serializeBytea(value: unknown): string {
  if (!(value instanceof Uint8Array)) throw new TypeError('bytea parameter must be a Uint8Array');
  return `\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
}

/**
 * bytea results through PGlite's own API arrive as hex text: its conversion walks the value byte
 * by byte in JavaScript (minutes for 100 MiB), Buffer's native hex codec takes milliseconds.
 * (PgliteDriver sends bytea parameters and reads bytea columns in binary; these only cover values
 * of another shape, such as bytea[] columns.) Installed on the instance, for PgliteDriver and for
 * anyone using `backend.db` directly.
 */
function installByteaCodec(db: PGlite): void {
  db.serializers[BYTEA_OID] = serializeBytea;
  db.serializers[BYTEA_ARRAY_OID] = (values: unknown) => types.arraySerializer(values, serializeBytea, BYTEA_ARRAY_OID);
  db.parsers[BYTEA_OID] = (text: string) => Buffer.from(text.slice(2), 'hex');
}

function isByteArrayList(value: unknown): value is readonly Uint8Array[] {
  return Array.isArray(value) && value.every((element) => element instanceof Uint8Array);
}

/**
 * A one-dimensional bytea[] in PostgreSQL's binary array format (dimensions, element type, then
 * each element's length and bytes), so array values are neither hex-encoded here nor parsed
 * character by character by the server's array_in.
 */
function encodeByteaArray(values: readonly Uint8Array[]): Uint8Array {
  // An empty array has no dimensions.
  const header = Buffer.alloc(values.length === 0 ? 12 : 20);
  header.writeInt32BE(values.length === 0 ? 0 : 1, 0); // dimensions
  header.writeInt32BE(0, 4); // no NULL elements
  header.writeUInt32BE(BYTEA_OID, 8);
  if (values.length > 0) {
    header.writeInt32BE(values.length, 12);
    header.writeInt32BE(1, 16); // lower bound
  }
  const parts: Uint8Array[] = [header];
  for (const value of values) {
    const length = Buffer.alloc(4);
    length.writeInt32BE(value.byteLength, 0);
    parts.push(length, value);
  }
  return Buffer.concat(parts);
}

/** What a prepared statement needs to bind parameters and name its result columns. */
interface StatementShape {
  paramTypes: readonly number[];
  /** Column names and type OIDs; empty for statements without a result set. */
  fields: ReadonlyArray<{ name: string; dataTypeID: number }>;
  /** Result format code per column (see resultFormats); undefined when every column is text. */
  resultFormats: readonly number[] | undefined;
}

const TEXT_FORMAT = 0;
const BINARY_FORMAT = 1;

/**
 * bytea columns come back in binary, everything else as text. As text, a bytea value arrives as
 * hex twice its size, which had to be received, held as a string and decoded: for a 64 MiB get,
 * 2.7 s of 5.1 s (PostgreSQL itself took 0.6 s). In binary it is the value's own bytes, handed
 * out as a view of the one copy taken from PGlite's reply. The other columns (versions, keys,
 * sizes, counts) stay in text, whose parsing by type PGlite already does.
 */
function resultFormats(fields: StatementShape['fields']): readonly number[] | undefined {
  if (!fields.some((field) => field.dataTypeID === BYTEA_OID)) return undefined;
  return fields.map((field) => (field.dataTypeID === BYTEA_OID ? BINARY_FORMAT : TEXT_FORMAT));
}

/** The last field of a Bind message asking for every column in text, as the serializer writes it: no format codes. */
const ALL_TEXT_RESULTS = [0, 0];

/**
 * A Bind message from pg-protocol's serializer, which can only ask for all columns in one
 * format, with its result format codes replaced by one per column; in parts, for
 * concatMessages to join in the copy it makes anyway (a parameter may be the whole value).
 */
function withResultFormats(bind: Uint8Array, formats: readonly number[]): Uint8Array[] {
  const tail = bind.length - ALL_TEXT_RESULTS.length;
  if (!ALL_TEXT_RESULTS.every((byte, i) => bind[tail + i] === byte)) throw new Error('unexpected Bind message layout');
  const codes = Buffer.alloc(2 + 2 * formats.length);
  codes.writeUInt16BE(formats.length, 0);
  formats.forEach((format, i) => codes.writeUInt16BE(format, 2 + 2 * i));
  const header = Buffer.alloc(5);
  header[0] = bind[0];
  // The length counts itself but not the type byte.
  header.writeUInt32BE(tail - 1 + codes.length, 1);
  return [header, bind.subarray(5, tail), codes];
}

/**
 * A DataRow with its fields as bytes: views into one copy of the message, decoded by `run`
 * according to each column's format. pg-protocol's parser would turn every field into a string,
 * which destroys binary values.
 */
class RawDataRow {
  constructor(readonly fields: ReadonlyArray<Uint8Array | null>) {}
}

type Reply = messages.BackendMessage | RawDataRow;

const DATA_ROW = 0x44; // 'D'
const MESSAGE_HEADER_SIZE = 5; // type byte, then a length that counts itself
const utf8 = new TextDecoder('utf-8');

function parseDataRow(message: Uint8Array): RawDataRow {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const count = view.getUint16(MESSAGE_HEADER_SIZE);
  const fields = new Array<Uint8Array | null>(count);
  let offset = MESSAGE_HEADER_SIZE + 2;
  for (let i = 0; i < count; i++) {
    const length = view.getInt32(offset);
    offset += 4;
    if (length < 0) {
      fields[i] = null;
      continue;
    }
    if (offset + length > message.byteLength) throw new Error('DataRow field runs past its message');
    fields[i] = message.subarray(offset, offset + length);
    offset += length;
  }
  return new RawDataRow(fields);
}

/**
 * Splits PGlite's reply stream into messages: DataRows become RawDataRows, copied once out of
 * WebAssembly memory (a message may span several chunks, and a chunk is only valid during the
 * callback), and every other message goes to pg-protocol's parser, which copies what it reads.
 */
class ReplySplitter {
  private readonly header = new Uint8Array(MESSAGE_HEADER_SIZE);
  private headerFilled = 0;
  /** The message being received, when it spans chunks or is a DataRow: allocated at its size. */
  private message: Uint8Array | undefined;
  private messageFilled = 0;

  constructor(
    private readonly parser: protocol.Parser,
    private readonly onReply: (reply: Reply) => void,
  ) {}

  /** True between messages: nothing of one was received without the rest. */
  get idle(): boolean {
    return this.headerFilled === 0 && this.message === undefined;
  }

  push(chunk: Uint8Array): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.message === undefined) {
        if (this.headerFilled === 0 && chunk.length - offset >= MESSAGE_HEADER_SIZE) {
          const size = 1 + new DataView(chunk.buffer, chunk.byteOffset + offset + 1, 4).getUint32(0);
          // A whole message other than a DataRow, in this chunk: parsed in place.
          if (chunk[offset] !== DATA_ROW && size >= MESSAGE_HEADER_SIZE && offset + size <= chunk.length) {
            this.parser.parse(chunk.subarray(offset, offset + size), this.onReply);
            offset += size;
            continue;
          }
        }
        const take = Math.min(MESSAGE_HEADER_SIZE - this.headerFilled, chunk.length - offset);
        this.header.set(chunk.subarray(offset, offset + take), this.headerFilled);
        this.headerFilled += take;
        offset += take;
        if (this.headerFilled < MESSAGE_HEADER_SIZE) return;
        const length = new DataView(this.header.buffer).getUint32(1);
        if (length < 4) throw new Error(`reply message of impossible length ${length}`);
        this.message = new Uint8Array(1 + length);
        this.message.set(this.header);
        this.messageFilled = MESSAGE_HEADER_SIZE;
        this.headerFilled = 0;
      }
      const take = Math.min(this.message.length - this.messageFilled, chunk.length - offset);
      this.message.set(chunk.subarray(offset, offset + take), this.messageFilled);
      this.messageFilled += take;
      offset += take;
      if (this.messageFilled === this.message.length) {
        const message = this.message;
        this.message = undefined;
        if (message[0] === DATA_ROW) this.onReply(parseDataRow(message));
        else this.parser.parse(message, this.onReply);
      }
    }
  }
}

const { serialize } = protocol;

/**
 * Statements prepared on each PGlite instance: per instance rather than per driver, because
 * prepared statements live in the database session, which every driver over that instance shares.
 */
const preparedShapes = new WeakMap<PGlite, Map<string, StatementShape>>();
/**
 * Instances on which PostgreSQL reported a PANIC or FATAL, with the error to answer from then on.
 * Either ends PostgreSQL's server or session, but PGlite hands the error back and keeps the
 * instance, whose next statement then never returns: it spins in WebAssembly, holding the event
 * loop, so HTTP, /health and even SIGTERM go unanswered (seen after a failed WAL fsync, and a
 * full disk while creating a WAL segment). Per instance, like the prepared statements.
 */
const stoppedInstances = new WeakMap<PGlite, PgliteStoppedError>();
const INSTANCE_ENDING_SEVERITIES = new Set(['PANIC', 'FATAL']);

/** The promise `stopped` hands out for an instance, and how to settle it when the instance stops. */
interface StopNotice {
  promise: Promise<PgliteStoppedError>;
  resolve: (error: PgliteStoppedError) => void;
}
const stopNotices = new WeakMap<PGlite, StopNotice>();

function stopNotice(db: PGlite): StopNotice {
  let notice = stopNotices.get(db);
  if (!notice) {
    let resolve!: (error: PgliteStoppedError) => void;
    const promise = new Promise<PgliteStoppedError>((settle) => (resolve = settle));
    stopNotices.set(db, (notice = { promise, resolve }));
  }
  return notice;
}

/** The embedded database reported a PANIC or FATAL earlier and runs no more statements. */
export class PgliteStoppedError extends Error {
  override readonly name = 'PgliteStoppedError';
}

const SYNC = serialize.sync();
const EXECUTE = serialize.execute({});

/** Concatenation of protocol messages into one buffer, so PGlite handles them in one call. */
function concatMessages(parts: readonly Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/**
 * A SqlDriver that speaks the PostgreSQL wire protocol to PGlite directly instead of going
 * through `PGlite.query`, which for every statement parses and plans the SQL again and makes
 * six calls into the WebAssembly module (Parse, Describe, Bind, Describe, Execute, Sync), each
 * with its own response parsing. Here a named statement is parsed and described once per
 * instance; every later execution is one call with Bind, Execute and Sync, PostgreSQL reuses its
 * plan, and bytea parameters and result columns travel in binary instead of hex. Statements
 * without a name (startup and migration SQL) are parsed every time, as before.
 *
 * It takes PGlite's own locks (the transaction lock, then the query lock), so it can share the
 * instance with PGlite's API; the PGlite instance must not be used through `execProtocol*`
 * elsewhere.
 */
export class PgliteDriver implements SqlDriver {
  private readonly shapes: Map<string, StatementShape>;
  /** One parser for every round trip (constructing one costs more than parsing a short reply). */
  private parser = new protocol.Parser();

  /**
   * Resolves with the error every statement fails with once PostgreSQL reported a PANIC or FATAL
   * on this instance (through any driver over it); pending while it works.
   */
  readonly stopped: Promise<PgliteStoppedError>;

  constructor(readonly db: PGlite) {
    installByteaCodec(db);
    this.stopped = stopNotice(db).promise;
    let shapes = preparedShapes.get(db);
    if (!shapes) preparedShapes.set(db, (shapes = new Map()));
    this.shapes = shapes;
  }

  query(query: SqlQuery, params?: readonly unknown[]): Promise<SqlResult> {
    return this.db._runExclusiveTransaction(async () => {
      const result = await this.db._runExclusiveQuery(() => this.run(query, params));
      await this.db.syncToFs();
      return result;
    });
  }

  transaction<T>(work: (session: SqlSession) => Promise<T>): Promise<T> {
    return this.db._runExclusiveTransaction(async () => {
      await this.db._runExclusiveQuery(() => this.simple('BEGIN'));
      const session: SqlSession = { query: (query, params) => this.db._runExclusiveQuery(() => this.run(query, params)) };
      let result: T;
      try {
        result = await work(session);
      } catch (error) {
        // A stopped instance takes no ROLLBACK; the error that stopped it says more.
        if (!stoppedInstances.has(this.db)) await this.db._runExclusiveQuery(() => this.simple('ROLLBACK'));
        throw error;
      }
      await this.db._runExclusiveQuery(() => this.simple('COMMIT'));
      await this.db.syncToFs();
      return result;
    });
  }

  async close(): Promise<void> {
    // Not a stopped instance: closing ends with a shutdown checkpoint, which PostgreSQL never
    // writes after a PANIC (its shared memory may be inconsistent). The next start recovers from
    // the WAL, as after a crash.
    if (!this.db.closed && !stoppedInstances.has(this.db)) await this.db.close();
  }

  /** Sends messages ending in Sync (or a simple query) and returns the replies; throws the first error PostgreSQL reported. */
  private async roundTrip(message: Uint8Array): Promise<Reply[]> {
    const stopped = stoppedInstances.get(this.db);
    if (stopped) throw stopped;
    await this.db._checkReady();
    const replies: Reply[] = [];
    const splitter = new ReplySplitter(this.parser, (reply) => replies.push(reply));
    let parseError: unknown;
    // Streamed, not execProtocolRaw: that one also hands every reply to PGlite's own parser,
    // which appends it to a result list only `execProtocol` ever empties. Nothing here calls
    // that, so every reply of the server's life stayed in memory, each value read as its hex
    // text (a 128 MiB get kept 256 MiB), until V8 ran out of heap and the process died (clients
    // saw a reset connection). It also copied each reply into a growing buffer before parsing.
    // The chunk is a view into WebAssembly memory; the splitter copies what it keeps.
    const onRawData = (chunk: Uint8Array): void => {
      if (parseError !== undefined) return;
      try {
        splitter.push(chunk);
      } catch (error) {
        // Thrown from here it would unwind PostgreSQL mid-statement, and PGlite swallows it.
        parseError = error ?? new Error('unparseable reply');
      }
    };
    await this.db.execProtocolRawStream(message, { syncToFs: false, onRawData });
    if (parseError === undefined && !splitter.idle) parseError = new Error('reply ended in the middle of a message');
    if (parseError !== undefined) {
      this.parser = new protocol.Parser();
      throw parseError;
    }
    const error = replies.find((reply): reply is messages.DatabaseError => reply instanceof messages.DatabaseError);
    if (error) {
      if (INSTANCE_ENDING_SEVERITIES.has(error.severity ?? '') && !stoppedInstances.has(this.db)) {
        const stopped = new PgliteStoppedError(
          `the embedded database stopped after a ${error.severity} (${error.message}) and runs no more statements: restart the server; it recovers from its write-ahead log`,
          { cause: error },
        );
        stoppedInstances.set(this.db, stopped);
        stopNotice(this.db).resolve(stopped);
      }
      throw error;
    }
    return replies;
  }

  /** A simple-protocol statement (transaction control). */
  private async simple(text: string): Promise<void> {
    await this.roundTrip(serialize.query(text));
  }

  private async shape(query: SqlQuery): Promise<StatementShape> {
    const cached = query.name === undefined ? undefined : this.shapes.get(query.name);
    if (cached) return cached;
    const name = query.name ?? '';
    const replies = await this.roundTrip(
      concatMessages([serialize.parse({ name, text: query.text }), serialize.describe({ type: 'S', name }), SYNC]),
    );
    let paramTypes: readonly number[] = [];
    let fields: StatementShape['fields'] = [];
    for (const reply of replies) {
      if (reply instanceof messages.ParameterDescriptionMessage) paramTypes = reply.dataTypeIDs;
      else if (reply instanceof messages.RowDescriptionMessage) fields = reply.fields.map((f) => ({ name: f.name, dataTypeID: f.dataTypeID }));
    }
    const shape = { paramTypes, fields, resultFormats: resultFormats(fields) };
    if (query.name !== undefined) this.shapes.set(query.name, shape);
    return shape;
  }

  private async run(query: SqlQuery, params: readonly unknown[] = []): Promise<SqlResult> {
    const shape = await this.shape(query);
    const values = params.map((param, i): string | Uint8Array | null => {
      if (param === null || param === undefined) return null;
      // bytea goes in binary: no hex text twice the value's size to build and decode.
      if (shape.paramTypes[i] === BYTEA_OID && param instanceof Uint8Array) return param;
      if (shape.paramTypes[i] === BYTEA_ARRAY_OID && isByteArrayList(param)) return encodeByteaArray(param);
      const serializer = this.db.serializers[shape.paramTypes[i]];
      return serializer ? String(serializer(param)) : String(param);
    });
    const bind = serialize.bind({ statement: query.name ?? '', values });
    const formats = shape.resultFormats;
    const replies = await this.roundTrip(concatMessages([...(formats ? withResultFormats(bind, formats) : [bind]), EXECUTE, SYNC]));
    const rows: Array<Record<string, unknown>> = [];
    let rowCount = 0;
    for (const reply of replies) {
      if (reply instanceof RawDataRow) {
        const row: Record<string, unknown> = {};
        reply.fields.forEach((bytes, i) => {
          const field = shape.fields[i];
          if (bytes === null) row[field.name] = null;
          // A Buffer, as the hex parser returned: the value's own bytes, not a copy.
          else if (formats?.[i] === BINARY_FORMAT) row[field.name] = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
          else {
            const text = utf8.decode(bytes);
            const parser = this.db.parsers[field.dataTypeID];
            row[field.name] = parser ? parser(text, field.dataTypeID) : text;
          }
        });
        rows.push(row);
      } else if (reply instanceof messages.CommandCompleteMessage) {
        // "INSERT 0 3", "UPDATE 2", "SELECT 1": the last number is the row count.
        const count = /(\d+)$/.exec(reply.text);
        rowCount = count ? Number(count[1]) : 0;
      }
    }
    return { rows, rowCount };
  }
}

type EmscriptenOptions = Parameters<MemoryFS['init']>[1];

/** The part of Emscripten's in-memory file system that the growth policy below changes. */
interface MemfsGrowth {
  expandFileStorage(node: { contents: Uint8Array | null }, capacity: number): void;
}

/** Capacity factor for in-memory files that outgrow their buffer (Emscripten's own: 1.125 above 1 MiB). */
const MEMFS_GROWTH = 1.5;

/**
 * The in-memory file system with fewer, larger buffer reallocations. Emscripten grows a file past
 * 1 MiB by 12.5 % at a time, copying the whole file into a fresh zeroed buffer each time; the
 * table holding values (TOAST) grows with every write, because PGlite runs no autovacuum, so a
 * busy in-memory server spent about a tenth of its CPU in these copies and the page faults of
 * the new buffers. Growing by half as much again costs at most a third of a file's buffer in
 * unused capacity. Only for PGlite without a data directory (on disk, files are real files).
 */
class GrowingMemoryFS extends MemoryFS {
  override async init(pg: PGlite, options: EmscriptenOptions): Promise<{ emscriptenOpts: EmscriptenOptions }> {
    const { emscriptenOpts } = await super.init(pg, options);
    const growFaster = (mod: { MEMFS: unknown }) => {
      const memfs = mod.MEMFS as MemfsGrowth;
      const expand = memfs.expandFileStorage.bind(memfs);
      memfs.expandFileStorage = (node, capacity) => {
        const current = node.contents?.length ?? 0;
        expand(node, current >= capacity ? capacity : Math.max(capacity, Math.floor(current * MEMFS_GROWTH)));
      };
    };
    return { emscriptenOpts: { ...emscriptenOpts, preRun: [...(emscriptenOpts.preRun ?? []), growFaster] } };
  }
}

/** The part of Emscripten's Node file system (NODEFS) that the durability fix below changes. */
interface NodefsStreams {
  stream_ops: { fsync?: (stream: { nfd?: number }) => number | undefined };
}

/**
 * PGlite's on-disk file system with working fsync. Out of the box PGlite starts PostgreSQL with
 * `-F` (fsync off), and Emscripten's NODEFS has no fsync at all, so an acknowledged write sat in
 * the operating system's cache: it survived the server process dying, not an OS crash or power
 * loss. Here every fsync/fdatasync PostgreSQL issues (WAL at commit, checkpoints, directories)
 * reaches the real file, and the server starts without `-F` (`PGLITE_START_PARAMS`), so a write
 * is on disk before the server answers. Measured cost on this machine: about 0.35 ms per commit.
 */
class SyncingNodeFS extends NodeFS {
  override async init(pg: PGlite, options: EmscriptenOptions): Promise<{ emscriptenOpts: EmscriptenOptions }> {
    const { emscriptenOpts } = await super.init(pg, options);
    const syncForReal = (mod: { NODEFS: unknown }) => {
      const nodefs = mod.NODEFS as NodefsStreams;
      nodefs.stream_ops.fsync = (stream) => {
        if (stream.nfd !== undefined) fsyncSync(stream.nfd);
        return 0;
      };
    };
    return { emscriptenOpts: { ...emscriptenOpts, preRun: [...(emscriptenOpts.preRun ?? []), syncForReal] } };
  }
}

/**
 * PGlite's own start parameters without `-F` (which turns fsync off), and WAL flushed with fsync:
 * Emscripten's fdatasync (PostgreSQL's default on Linux) is a no-op, its fsync reaches
 * `stream_ops.fsync` above.
 */
const PGLITE_START_PARAMS: string[] = [
  ...(PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams.filter((param) => param !== '-F'),
  '-c',
  'wal_sync_method=fsync',
];

/**
 * The embedded database did not start: its data directory cannot be created or written, or
 * PostgreSQL refused it. The message names the directory and carries the reason (the operating
 * system's or PostgreSQL's); `cause` is the original error.
 */
export class PgliteStartError extends Error {
  override readonly name = 'PgliteStartError';
}

/**
 * Creates the data directory and its missing parents, like `mkdir -p`; returns the directories it
 * created, innermost first. Not Node's `mkdir(…, { recursive: true })`: that never settles (one
 * libuv thread spinning at 100 % CPU, the server hanging on "creating the embedded database")
 * when a directory's parent exists but refuses it with ENOENT, as every path under /proc does
 * (`/proc/vssdata`): it steps back to the parent on ENOENT, finds it exists, and tries the child
 * again, forever (Node 20). Here a level is tried a second time only once, after its parent was
 * made or found; an ENOENT then is the answer.
 */
async function makeDataDirectory(dir: string): Promise<string[]> {
  const fail = (error: unknown, detail = '') =>
    new PgliteStartError(`data directory ${dir} cannot be created: ${(error as Error).message}${detail}`, { cause: error });
  const created: string[] = [];
  const make = async (path: string, retried: boolean): Promise<void> => {
    try {
      await mkdir(path);
      created.unshift(path);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // Already there (possibly made by another process just now): fine if it is a directory.
      if (code === 'EEXIST') return checkIsDirectory(path, dir, error);
      const parent = dirname(path);
      if (code !== 'ENOENT' || parent === path) throw fail(error);
      if (retried) throw fail(error, ` (${parent} exists but holds no new directories: a virtual file system such as /proc?)`);
      await make(parent, false);
      await make(path, true);
    }
  };
  try {
    await make(dir, false);
  } catch (error) {
    await removeEmptyDirectories(created);
    throw error instanceof PgliteStartError ? error : fail(error);
  }
  return created;
}

/** `path` (the data directory or one of its parents) exists: refuses it unless it is a directory. */
async function checkIsDirectory(path: string, dataDir: string, existsError: unknown): Promise<void> {
  const what = path === dataDir ? `data directory ${dataDir}` : `data directory ${dataDir} cannot be created: ${path}`;
  const target = await stat(path).catch((error: unknown) => error as NodeJS.ErrnoException);
  if (!(target instanceof Error)) {
    // mkdir says "file already exists", which hides that the path is not a directory.
    if (!target.isDirectory()) throw new PgliteStartError(`${what} exists but is not a directory`, { cause: existsError });
    return;
  }
  const link = await lstat(path).catch(() => undefined);
  if (link?.isSymbolicLink()) throw new PgliteStartError(`${what} is a symbolic link whose target cannot be reached: ${target.message}`, { cause: target });
  throw new PgliteStartError(`${what} exists but cannot be examined: ${target.message}`, { cause: target });
}

/**
 * What PostgreSQL keeps at the top of its data directory (PostgreSQL 18's initdb, and the files
 * of a running server). A directory holding any of them is taken for a database, complete or
 * not: PGlite 0.5.16 runs initdb in memory and then copies the result in, first `pg_wal`, then
 * `global`, the other `pg_*` directories and `base` (39 MB, most of the copy), and `PG_VERSION`
 * and the configuration files last. A first start killed or out of disk space meanwhile leaves
 * any first part of that list, which the next start completes (PGlite runs initdb again while
 * `PG_VERSION` is missing), so `PG_VERSION` alone (PGlite's own test) would refuse them. Any one
 * name counts rather than a fixed first one, so that another order in a later PGlite does not
 * refuse its interrupted first starts. (Cut off in the millisecond between `PG_VERSION` and
 * `postgresql.conf`, the directory is taken for a database by PGlite, which then fails to start.)
 */
const POSTGRES_ENTRIES = new Set([
  'PG_VERSION',
  'base',
  'global',
  'pg_commit_ts',
  'pg_dynshmem',
  'pg_logical',
  'pg_multixact',
  'pg_notify',
  'pg_replslot',
  'pg_serial',
  'pg_snapshots',
  'pg_stat',
  'pg_stat_tmp',
  'pg_subtrans',
  'pg_tblspc',
  'pg_twophase',
  'pg_wal',
  'pg_xact',
  'postgresql.conf',
  'postgresql.auto.conf',
  'pg_hba.conf',
  'pg_ident.conf',
  'postmaster.pid',
  'postmaster.opts',
]);

/**
 * Entries that do not make a directory someone else's: what file systems and desktops put into a
 * new directory by themselves (`lost+found` at the root of every new ext2/3/4 file system, the
 * usual way to give the database its own volume; macOS Finder's and Spotlight's files), and the
 * placeholders that only keep an empty directory in version control. Not every hidden file: a
 * service user's home directory holds only hidden files (`.bashrc`, `.profile`) and is not empty.
 */
const IGNORED_ENTRIES = new Set([
  'lost+found',
  // Network storage at the root of a share or volume: NetApp's snapshots, Synology's index, a
  // Windows file server's system and recycle folders.
  '.snapshot',
  '@eaDir',
  'System Volume Information',
  '$RECYCLE.BIN',
  '.DS_Store',
  '.Spotlight-V100',
  '.fseventsd',
  '.Trashes',
  '.TemporaryItems',
  '.gitkeep',
  '.keep',
]);

/** How many of a foreign directory's entries its refusal names. */
const LISTED_ENTRIES = 5;

/**
 * Refuses an existing data directory that holds files but no database: a typo such as
 * `VSS_DATA_DIR=$HOME`, or another program's directory. A new database would be created among
 * those files (PostgreSQL's own initdb refuses a non-empty directory for the same reason).
 * Accepted: an empty directory, one holding only this server's lock file (a server that crashed
 * before writing anything), and one holding any of PostgreSQL's entries (a database, or a first
 * start cut short, see POSTGRES_ENTRIES).
 */
async function refuseForeignDirectory(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (error) {
    throw new PgliteStartError(`data directory ${dir} cannot be used: its files cannot be listed: ${(error as Error).message}`, { cause: error });
  }
  if (entries.some((name) => POSTGRES_ENTRIES.has(name))) {
    await refuseOtherServersDirectory(dir, entries);
    return;
  }
  // The lock file, and the takeover file next to it that a server killed while taking over a stale lock leaves.
  const foreign = entries.filter((name) => !IGNORED_ENTRIES.has(name) && name !== DATA_DIR_LOCK_FILE && !name.startsWith(`${DATA_DIR_LOCK_FILE}.`)).sort();
  if (foreign.length === 0) return;
  const listed = foreign.slice(0, LISTED_ENTRIES).join(', ') + (foreign.length > LISTED_ENTRIES ? ` and ${foreign.length - LISTED_ENTRIES} more` : '');
  throw new PgliteStartError(
    `data directory ${dir} is not empty but holds no ldk-vss (PostgreSQL) database (found: ${listed}): ` +
      'refusing to create one among other files; use an empty or new directory',
  );
}

/** The data directory PGlite's PostgreSQL believes it runs in (its file system's mount point), as it writes it into postmaster.pid. */
const PGLITE_DATA_DIRECTORY = '/pglite/data';

/**
 * Refuses the data directory of a real PostgreSQL server (`VSS_DATA_DIR=/var/lib/postgresql/18/main`,
 * meant as "use that database"): of the same major version, PGlite would open its files as its
 * own, beside or after that server, and damage them. Such a directory holds `postmaster.opts`
 * (every start of a real server writes it) or a `postmaster.pid` naming that server's directory;
 * PGlite writes no `postmaster.opts`, and its `postmaster.pid` names its virtual /pglite/data.
 */
async function refuseOtherServersDirectory(dir: string, entries: readonly string[]): Promise<void> {
  let evidence: string | undefined;
  if (entries.includes('postmaster.opts')) evidence = 'postmaster.opts';
  else if (entries.includes('postmaster.pid')) {
    const pidFile = await readFile(join(dir, 'postmaster.pid'), 'utf8').catch(() => undefined);
    // Unreadable: PostgreSQL (PGlite's too) fails on it with its own message. A real server's
    // names its (positive) pid and its directory; PGlite's a negative pid and /pglite/data:
    // both must differ before a start of the server's own directory is refused.
    const [pid, directory] = pidFile?.split('\n') ?? [];
    if (pid !== undefined && /^[1-9]\d*$/.test(pid) && directory !== undefined && directory !== PGLITE_DATA_DIRECTORY) evidence = 'postmaster.pid';
  }
  if (evidence === undefined) return;
  throw new PgliteStartError(
    `data directory ${dir} holds the files of a PostgreSQL server (${evidence}): the embedded database would open that server's files; ` +
      'give ldk-vss a directory of its own, or point DATABASE_URL at that server',
  );
}

/** Removes directories (innermost first) as long as they are empty; a failed start leaves no new empty directories behind. */
async function removeEmptyDirectories(directories: readonly string[]): Promise<void> {
  for (const directory of directories) {
    // Not empty (PostgreSQL wrote files before it failed) or already gone: leave the rest alone.
    if (!(await rmdir(directory).then(() => true, () => false))) return;
  }
}

/**
 * Emscripten's numbers for the file-system errors a data directory can meet. PGlite lets its
 * file system's `ErrnoError` escape from `PGlite.create` (a full disk while the database is
 * created, say), an object with only that number: no message, no stack.
 */
const EMSCRIPTEN_ERRNO: Record<number, string> = {
  2: 'EACCES (permission denied)',
  10: 'EBUSY (resource busy)',
  19: 'EDQUOT (disk quota exceeded)',
  20: 'EEXIST (file exists)',
  22: 'EFBIG (file too large)',
  29: 'EIO (input/output error)',
  31: 'EISDIR (is a directory)',
  33: 'EMFILE (too many open files)',
  37: 'ENAMETOOLONG (file name too long)',
  41: 'ENFILE (too many open files in system)',
  44: 'ENOENT (no such file or directory)',
  51: 'ENOSPC (no space left on device)',
  54: 'ENOTDIR (not a directory)',
  55: 'ENOTEMPTY (directory not empty)',
  63: 'EPERM (operation not permitted)',
  69: 'EROFS (read-only file system)',
};

function emscriptenFileSystemError(error: unknown): string | undefined {
  const { name, errno } = (error ?? {}) as { name?: unknown; errno?: unknown };
  if (name !== 'ErrnoError' || typeof errno !== 'number') return undefined;
  return `file system error ${EMSCRIPTEN_ERRNO[errno] ?? `errno ${errno} (Emscripten numbering)`}`;
}

/**
 * PostgreSQL's own account of a failed start. PGlite reports one only as "PGlite failed to
 * initialize properly", a WebAssembly "Aborted()" or a bare ErrnoError, while PostgreSQL logged
 * why: a data directory from another major version, a damaged pg_control, a file this user may
 * not open. Only its error lines are kept, only while starting, and only the last few.
 */
class StartupLog {
  private readonly lines: string[] = [];
  private starting = true;

  readonly onStderr = (text: string): boolean => {
    if (this.starting) {
      const line = /\b((?:PANIC|FATAL|ERROR|DETAIL|HINT):)\s+(.*)$/.exec(text) ?? /^((?:postgres|initdb):)\s+(.*)$/.exec(text);
      if (line) this.lines.push(`${line[1]} ${line[2]}`);
      if (this.lines.length > 8) this.lines.shift();
    }
    return false;
  };

  started(): void {
    this.starting = false;
    this.lines.length = 0;
  }

  /** The error PGlite.create threw, with PostgreSQL's reason when it logged one. */
  explain(error: unknown, dataDir: string | undefined): unknown {
    const fileSystemError = emscriptenFileSystemError(error);
    const reasons = fileSystemError === undefined ? this.lines : [...this.lines, fileSystemError];
    if (reasons.length === 0) return error;
    const where = dataDir === undefined ? 'in-memory database' : `data directory ${dataDir}`;
    return new PgliteStartError(`${where}: embedded PostgreSQL did not start: ${reasons.join('; ')}${dataDir === undefined ? '' : cutShortHint(dataDir)}`, { cause: error });
  }
}

/**
 * A first start copies the new database in with `PG_VERSION` just before `postgresql.conf` (see
 * POSTGRES_ENTRIES); cut short between the two, the directory looks like a database to PGlite,
 * which then fails on the missing configuration, at every start. Nothing was ever stored in such
 * a directory, but a user's own database could lack its configuration too, so this only says so.
 */
function cutShortHint(dataDir: string): string {
  if (!existsSync(join(dataDir, 'PG_VERSION')) || existsSync(join(dataDir, 'postgresql.conf'))) return '';
  return (
    ` (${dataDir} has PG_VERSION but no postgresql.conf: a first start of the embedded database cut short at its very end leaves this;` +
    ' if the server never started on this directory it holds no data: delete the directory and start again)'
  );
}

export class PgliteBackend extends SqlBackend {
  private constructor(
    private readonly pgliteDriver: PgliteDriver,
    options: SqlBackendOptions,
    readonly migration: MigrationOutcome,
    readonly dataDir: string | undefined,
    private readonly dataDirLock: DataDirLock | undefined,
  ) {
    super('pglite', pgliteDriver, options);
  }

  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      await this.dataDirLock?.release();
    }
  }

  get db(): PGlite {
    return this.pgliteDriver.db;
  }

  /**
   * Resolves (never rejects) once PostgreSQL reported a PANIC or FATAL: from then on every
   * operation fails with this PgliteStoppedError until a new instance is opened on the data
   * directory (after close(), which then releases its lock). Pending while the database works.
   */
  get stopped(): Promise<PgliteStoppedError> {
    return this.pgliteDriver.stopped;
  }

  static async open(options: PgliteBackendOptions = {}): Promise<PgliteBackend> {
    // Before the database starts: a bad option should not cost a start (or a data-directory lock).
    checkMaxValueSize(options.maxValueSize);
    let lock: DataDirLock | undefined;
    /** Directories this call created, innermost first: removed again if it fails (when still empty). */
    let created: string[] = [];
    // Whatever fails after the directories were made: the lock released, and what this call created removed.
    const undo = async () => {
      try {
        await lock?.release();
      } finally {
        await removeEmptyDirectories(created);
      }
    };
    if (options.db === undefined && options.dataDir !== undefined) {
      const dataDir = options.dataDir;
      // mkdir('') fails with a bare "ENOENT … mkdir ''", and resolving it would mean the working directory.
      if (dataDir === '') throw new PgliteStartError('data directory is an empty path: give a directory, or no dataDir for an in-memory database');
      created = await makeDataDirectory(dataDir);
      // Before the lock: a directory that is not ours gets no file at all, not even a lock file.
      // A refusal here may be of a directory this call just made (one it cannot list): removed too.
      await refuseForeignDirectory(dataDir).catch(async (error: unknown) => {
        await undo();
        throw error;
      });
      try {
        lock = await lockDataDir(dataDir, {
          waitMs: options.lockWaitMs ?? STALE_AFTER_MS + 2 * REFRESH_EVERY_MS,
          onWait: (message) => options.logger?.warn(message),
        });
      } catch (error) {
        await undo();
        if (error instanceof DataDirInUseError) throw error;
        // A bare "EACCES: permission denied, open '…/ldk-vss.lock'" does not say that this is the
        // data directory, in which the server cannot write.
        throw new PgliteStartError(`data directory ${dataDir} cannot be used: could not take its lock file: ${(error as Error).message}`, { cause: error });
      }
    }
    const inMemory = options.db === undefined && options.dataDir === undefined;
    // The directory the lock is in, symbolic links resolved: PGlite fails with a bare ENOENT on a
    // data directory that is a symbolic link (to a directory on another disk, say).
    const fileSystemRoot = lock === undefined ? undefined : dirname(lock.path);
    let db: PGlite;
    const log = new StartupLog();
    try {
      db =
        options.db ??
        (fileSystemRoot === undefined
          ? await PGlite.create({ fs: new GrowingMemoryFS(), onStderr: log.onStderr })
          : await PGlite.create({ fs: new SyncingNodeFS(fileSystemRoot), startParams: PGLITE_START_PARAMS, onStderr: log.onStderr }));
    } catch (error) {
      await undo();
      throw log.explain(error, options.dataDir);
    }
    log.started();
    const driver = new PgliteDriver(db);
    try {
      // New WAL segments are zero-filled by default, in 8 KiB writes that grow an in-memory file
      // (and copy it) a dozen times per 16 MiB segment. Without the zero-fill PostgreSQL writes
      // only the segment's last byte: one allocation. This changes no durability (recovery finds
      // the end of WAL by its record checksums, not by zeroes), but it is applied in memory only:
      // on disk the zero-fill reserves the segment's space before WAL must be written into it.
      if (inMemory) await driver.query({ text: 'SET wal_init_zero = off' });
      const migration = await migrate(driver);
      if (migration.from !== migration.to) options.logger?.info({ ...migration, dataDir: options.dataDir }, 'applied database migrations');
      return new PgliteBackend(driver, { ...options, maxValueSize: options.maxValueSize ?? PGLITE_MAX_VALUE_SIZE }, migration, options.dataDir, lock);
    } catch (error) {
      try {
        await driver.close();
      } finally {
        await undo();
      }
      throw error;
    }
  }
}
