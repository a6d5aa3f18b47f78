/**
 * Request batching against a model: many concurrent requests of every kind (gets, single-item
 * puts with versions 0, -1 and right or wrong compare-and-set versions, multi-item puts with
 * global_version and delete_items, deletes, lists) from two users and four store ids over a
 * small key space, sent over HTTP (raw protobuf) to the real server. Every answer must be the
 * one some sequential execution would have given (linearizability): each request takes effect
 * at one instant between its sending and its answer, so a request answered before another was
 * sent comes first.
 *
 * The requests run in rounds: within a round they are sent together (with small random delays,
 * so some real-time order exists inside a round too), and a round ends when every answer is in.
 * The table is then read directly, and the checker searches, per (user, store id) (independent
 * objects, so linearizability can be checked for each alone), for an order of the round's
 * requests that respects real-time order, explains every answer (200, 404, 409, 400, values,
 * versions, list contents and creation order) and ends in exactly the state read. That state
 * starts the next round. The search places a request that changes nothing (a read, a refused
 * write) as soon as its answer matches the current state, which is always safe; only writes
 * that took effect (and deletes, which answer 200 either way) are permuted, with memoisation.
 *
 * What the workload aims at: writes of one key meeting in one batch window (the keys are few and
 * skewed), creates of one absent key racing (every fifth round; exactly one must win), wrong
 * versions failing inside batches, keys that need quoting in PostgreSQL's array syntax (`NULL`,
 * `""`, quotes, backslashes, commas, braces), empty values and values too big for a batch, and
 * inserts PostgreSQL refuses (a key too wide for its index entry, SQLSTATE 54000), which fail
 * their whole batch statement: its other requests are retried alone and must get the answers
 * the model gives them.
 *
 * Cases: PGlite as served (its statements run on the server's thread, so over HTTP no batch ever
 * forms there), PGlite with every statement yielding to the event loop first (requests queue and
 * batch as on a database elsewhere), and PostgreSQL when TEST_DATABASE_URL is set. On PostgreSQL
 * creation order is checked up to requests that overlapped in time (see OrderCheck): that
 * ordering is not linearizable on the reference server either.
 *
 * Seeded: MODEL_SEED=<n> repeats a run's random choices (timing, and so the versions and keys
 * derived from the state, may differ); MODEL_ROUNDS (default 500)
 * and MODEL_OPS (requests per round, default 28) size it. A failure prints the seed, the round,
 * the requests with their times and answers, and the states before and after.
 */
import { createHash, randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigIntToInt64, GLOBAL_VERSION_KEY, hasField, int64ToBigInt, keyValue, vss } from '../../src/protocol/index.js';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { PgliteBackend, PgliteDriver } from '../../src/server/backends/pglite.js';
import { PostgresBackend } from '../../src/server/backends/postgres.js';
import { BATCH_VALUE_LIMIT, SqlBackend } from '../../src/server/backends/sql-backend.js';
import type { SqlDriver } from '../../src/server/backends/sql-driver.js';
import { backendCase, newIdentity, send, type Identity, type RawResponse } from './helpers.js';

const SEED = Number(process.env.MODEL_SEED ?? randomInt(2 ** 31));
const ROUNDS = Number(process.env.MODEL_ROUNDS ?? 500);
const OPS_PER_ROUND = Number(process.env.MODEL_OPS ?? 28);

// ---------------------------------------------------------------------------------------
// Seeded randomness

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** Picks by weight: [[weight, value], …]. */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    const total = choices.reduce((sum, [w]) => sum + w, 0);
    let r = this.next() * total;
    for (const [w, value] of choices) {
      if ((r -= w) < 0) return value;
    }
    return choices[choices.length - 1][1];
  }
}

// ---------------------------------------------------------------------------------------
// The model

/** A value as the model keeps it: hex when short, else its length and digest. */
const hex = (bytes: Uint8Array) =>
  bytes.length <= 64 ? Buffer.from(bytes).toString('hex') : `${bytes.length}B:${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}`;

interface Row {
  key: string;
  version: bigint;
  /** Hex of the value. */
  value: string;
  /** The request of the current round that created the row (undefined: created in an earlier round). */
  createdBy?: number;
}

/** One (user, store id): its keys in creation order (oldest first) and the global-version row apart. */
interface State {
  rows: readonly Row[];
  gv?: { version: bigint; value: string };
}

const EMPTY_STATE: State = { rows: [] };

/** The state as the table shows it: rows in creation order, or sorted by key (`byKey`, order ignored). */
function stateKey(state: State, byKey = false): string {
  const rows = byKey ? [...state.rows].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)) : state.rows;
  const text = rows.map((row) => `${JSON.stringify(row.key)}=${row.version}:${row.value}`).join(' ');
  return `[${text}] gv=${state.gv ? `${state.gv.version}:${state.gv.value}` : '-'}`;
}

/** stateKey plus which request created each row: what the rest of the search depends on. */
function memoKey(state: State): string {
  return `${stateKey(state)} by ${state.rows.map((row) => row.createdBy ?? '-').join(',')}`;
}

function lookup(state: State, key: string): { version: bigint; value: string } | undefined {
  return key === GLOBAL_VERSION_KEY ? state.gv : state.rows.find((row) => row.key === key);
}

interface PutItemSpec {
  key: string;
  version: bigint;
  value: Uint8Array;
}

type Request =
  | { kind: 'get'; key: string }
  | { kind: 'put'; globalVersion?: bigint; items: PutItemSpec[]; deletes: Array<{ key: string; version: bigint }>; tooWide?: boolean }
  | { kind: 'delete'; key: string; version: bigint }
  | { kind: 'list'; prefix?: string };

/** What the model decides a put does in `state`: 400 (invalid whatever the state), 409, or the next state. */
function applyPut(state: State, request: Extract<Request, { kind: 'put' }>, creator = -1): { status: 400 } | { status: 409 } | { status: 200; next: State } {
  if (request.tooWide) return { status: 400 };
  const keys = [...request.items.map((item) => item.key), ...(request.globalVersion === undefined ? [] : [GLOBAL_VERSION_KEY]), ...request.deletes.map((d) => d.key)];
  if (new Set(keys).size !== keys.length) return { status: 400 };
  let rows = [...state.rows];
  let gv = state.gv;
  const write = (key: string, version: bigint, value: string): boolean => {
    const current = key === GLOBAL_VERSION_KEY ? gv : rows.find((row) => row.key === key);
    let next: { version: bigint; value: string };
    if (version === -1n) next = { version: 1n, value };
    else if (version === 0n) {
      if (current) return false;
      next = { version: 1n, value };
    } else {
      if (!current || current.version !== version) return false;
      next = { version: version + 1n, value };
    }
    if (key === GLOBAL_VERSION_KEY) gv = next;
    else if (current) rows = rows.map((row) => (row.key === key ? { ...row, ...next } : row));
    // A new key is the newest: creation order within a request is request order.
    else rows.push({ key, ...next, createdBy: creator });
    return true;
  };
  for (const item of request.items) if (!write(item.key, item.version, hex(item.value))) return { status: 409 };
  if (request.globalVersion !== undefined && !write(GLOBAL_VERSION_KEY, request.globalVersion, '')) return { status: 409 };
  for (const item of request.deletes) {
    const current = item.key === GLOBAL_VERSION_KEY ? gv : rows.find((row) => row.key === item.key);
    // A delete item on a missing key, or with another version, is a conflict (even with -1).
    if (!current || (item.version !== -1n && current.version !== item.version)) return { status: 409 };
    if (item.key === GLOBAL_VERSION_KEY) gv = undefined;
    else rows = rows.filter((row) => row.key !== item.key);
  }
  return { status: 200, next: { rows, gv } };
}

/** DeleteObject: idempotent, a wrong version changes nothing. */
function applyDelete(state: State, request: Extract<Request, { kind: 'delete' }>): State {
  const current = lookup(state, request.key);
  if (!current || (request.version !== -1n && current.version !== request.version)) return state;
  if (request.key === GLOBAL_VERSION_KEY) return { rows: state.rows, gv: undefined };
  return { rows: state.rows.filter((row) => row.key !== request.key), gv: state.gv };
}

// ---------------------------------------------------------------------------------------
// Observed answers

type Answer =
  | { kind: 'get'; status: 200; version: bigint; value: string; key: string }
  | { kind: 'get'; status: 404 }
  | { kind: 'put'; status: 200 | 409 | 400 }
  | { kind: 'delete'; status: 200 }
  | { kind: 'list'; status: 200; keys: Array<{ key: string; version: bigint }>; globalVersion: bigint };

interface Operation {
  /** Index within the round, for messages. */
  id: number;
  request: Request;
  answer: Answer;
  /** performance.now() just before sending and just after the whole answer arrived. */
  start: number;
  end: number;
}

/**
 * A request as the checker sees it. A list is two steps, as the server runs it: the global
 * version is read by one statement and the keys by the next (as in the reference), so each has
 * its own instant; the keys come after the global version.
 */
interface Step {
  op: Operation;
  part: 'whole' | 'list-gv' | 'list-keys';
  /** Steps that must be placed before this one: answered before it was sent, or its list's first step. */
  before: bigint;
  /** Whether it can change the state (otherwise it is placed as soon as its answer matches). */
  effectful: boolean;
}

function isEffectful(op: Operation): boolean {
  return (op.request.kind === 'put' && op.answer.status === 200) || op.request.kind === 'delete';
}

/**
 * How creation order is checked. `exact`: listings and the table show keys exactly in the order
 * the chosen sequence created them. `overlap`: two keys whose creating requests overlapped in
 * time may appear in either order. On PostgreSQL a creation number is drawn when the row is
 * inserted and becomes visible at commit, and concurrent statements commit in any order: a
 * listing can show a key created later without one whose number is lower (the reference server
 * does the same; it is not a batching matter). Keys from earlier rounds keep their exact order,
 * and are older than every key created in the round; a key created by a request that was answered
 * before another's was sent is older than that one's.
 */
type OrderCheck = 'exact' | 'overlap';

interface Checker {
  order: OrderCheck;
  /** Operations of the round by id (for their times). */
  ops: ReadonlyMap<number, Operation>;
}

/** Whether `newestFirst` (rows of `state`, as a listing shows them) is an order the creation sequence allows. */
function orderAllowed(checker: Checker, state: State, newestFirst: readonly Row[]): boolean {
  const position = new Map(state.rows.map((row, i) => [row.key, i]));
  if (checker.order === 'exact') {
    return newestFirst.every((row, i) => i === 0 || (position.get(newestFirst[i - 1].key) as number) > (position.get(row.key) as number));
  }
  for (let i = 0; i < newestFirst.length; i++) {
    for (let j = i + 1; j < newestFirst.length; j++) {
      const newer = newestFirst[i];
      const older = newestFirst[j];
      if (newer.createdBy === undefined && older.createdBy !== undefined) return false;
      if (newer.createdBy === older.createdBy) {
        if ((position.get(newer.key) as number) < (position.get(older.key) as number)) return false;
      } else if (newer.createdBy !== undefined && older.createdBy !== undefined) {
        const newerOp = checker.ops.get(newer.createdBy) as Operation;
        const olderOp = checker.ops.get(older.createdBy) as Operation;
        if (newerOp.end < olderOp.start) return false;
      }
    }
  }
  return true;
}

/** Whether the keys and versions of `listed` (newest first) are those of `rows`, in an order allowed. */
function listingMatches(checker: Checker, state: State, rows: readonly Row[], listed: ReadonlyArray<{ key: string; version: bigint }>): boolean {
  const byKey = new Map(rows.map((row) => [row.key, row]));
  if (listed.length !== rows.length) return false;
  const newestFirst: Row[] = [];
  for (const entry of listed) {
    const row = byKey.get(entry.key);
    if (!row || row.version !== entry.version) return false;
    byKey.delete(entry.key);
    newestFirst.push(row);
  }
  return orderAllowed(checker, state, newestFirst);
}

/** Whether a step that changes nothing gives its observed answer in `state`. */
function readMatches(checker: Checker, step: Step, state: State): boolean {
  const { request, answer } = step.op;
  switch (request.kind) {
    case 'get': {
      const current = lookup(state, request.key);
      if (answer.kind !== 'get') return false;
      if (!current) {
        // A store that never set its global version reports version 0.
        if (request.key === GLOBAL_VERSION_KEY) return answer.status === 200 && answer.version === 0n && answer.value === '' && answer.key === request.key;
        return answer.status === 404;
      }
      return answer.status === 200 && answer.key === request.key && answer.version === current.version && answer.value === current.value;
    }
    case 'list': {
      if (answer.kind !== 'list') return false;
      if (step.part === 'list-gv') return answer.globalVersion === (state.gv?.version ?? 0n);
      const prefix = request.prefix ?? '';
      return listingMatches(checker, state, state.rows.filter((row) => row.key.startsWith(prefix)), answer.keys);
    }
    case 'put':
      return applyPut(state, request).status === answer.status;
    case 'delete':
      return false;
  }
}

/** Whether the search's final state is the one read from the table (rows oldest first). */
function endMatches(checker: Checker, state: State, observed: State): boolean {
  if (stateKey(state, true) !== stateKey(observed, true)) return false;
  return listingMatches(checker, state, state.rows, [...observed.rows].reverse());
}

/**
 * Searches for an order of `ops` (all on one user and store) that respects real time, explains
 * every answer and leads from `start` to `observed`. Returns undefined when there is one, else
 * a description of how far the search got.
 */
function linearize(start: State, observed: State, ops: readonly Operation[], order: OrderCheck): string | undefined {
  const checker: Checker = { order, ops: new Map(ops.map((op) => [op.id, op])) };
  const steps: Step[] = [];
  for (const op of ops) {
    if (op.request.kind === 'list') {
      steps.push({ op, part: 'list-gv', before: 0n, effectful: false });
      steps.push({ op, part: 'list-keys', before: 1n << BigInt(steps.length - 1), effectful: false });
    } else steps.push({ op, part: 'whole', before: 0n, effectful: isEffectful(op) });
  }
  steps.forEach((step) => {
    steps.forEach((other, j) => {
      if (other.op.end < step.op.start) step.before |= 1n << BigInt(j);
    });
  });
  const all = (1n << BigInt(steps.length)) - 1n;
  const seen = new Set<string>();
  let deepest = { placed: -1, order: [] as string[], state: start };
  const label = (step: Step) => `#${step.op.id}${step.part === 'whole' ? '' : step.part === 'list-gv' ? '(gv)' : '(keys)'}`;

  const search = (state: State, done: bigint, order: string[]): boolean => {
    // Steps that change nothing go as soon as they may and match.
    let progress = true;
    while (progress) {
      progress = false;
      steps.forEach((step, i) => {
        const bit = 1n << BigInt(i);
        if (done & bit || step.effectful || (step.before & ~done) !== 0n) return;
        if (readMatches(checker, step, state)) {
          done |= bit;
          order = [...order, label(step)];
          progress = true;
        }
      });
    }
    const placed = order.length;
    if (placed > deepest.placed) deepest = { placed, order, state };
    if (done === all) return endMatches(checker, state, observed);
    const memo = `${done.toString(36)}|${memoKey(state)}`;
    if (seen.has(memo)) return false;
    seen.add(memo);
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i];
      const bit = 1n << BigInt(i);
      if (done & bit || !step.effectful || (step.before & ~done) !== 0n) continue;
      const request = step.op.request;
      let next: State;
      if (request.kind === 'delete') next = applyDelete(state, request);
      else if (request.kind === 'put') {
        const outcome = applyPut(state, request, step.op.id);
        if (outcome.status !== 200) continue;
        next = outcome.next;
      } else continue;
      if (search(next, done | bit, [...order, label(step)])) return true;
    }
    return false;
  };
  if (search(start, 0n, [])) return undefined;
  return `no order explains the answers; the longest explainable prefix placed ${deepest.placed} of ${steps.length} steps: ${deepest.order.join(' ')}\n  state there: ${stateKey(deepest.state)}`;
}

// ---------------------------------------------------------------------------------------
// The checker on hand-written histories: it must refuse what no order explains

describe('the linearizability checker', () => {
  const v = (text: string) => Buffer.from(text);
  const put = (id: number, start: number, end: number, key: string, version: bigint, value: string, status: 200 | 409 = 200): Operation => ({
    id,
    request: { kind: 'put', items: [{ key, version, value: v(value) }], deletes: [] },
    answer: { kind: 'put', status },
    start,
    end,
  });
  const get = (id: number, start: number, end: number, key: string, found?: { version: bigint; value: string }): Operation => ({
    id,
    request: { kind: 'get', key },
    answer: found ? { kind: 'get', status: 200, key, version: found.version, value: hex(v(found.value)) } : { kind: 'get', status: 404 },
    start,
    end,
  });
  const list = (id: number, start: number, end: number, keys: string[]): Operation => ({
    id,
    request: { kind: 'list' },
    answer: { kind: 'list', status: 200, keys: keys.map((key) => ({ key, version: 1n })), globalVersion: 0n },
    start,
    end,
  });
  const rows = (...entries: Array<[string, string]>): State => ({ rows: entries.map(([key, value]) => ({ key, version: 1n, value: hex(v(value)) })) });

  it('refuses a read of a value older than a write answered before the read was sent, and accepts it when they overlap', () => {
    const start = rows(['a', 'old']);
    const end = rows(['a', 'new']);
    expect(linearize(start, end, [put(0, 0, 1, 'a', -1n, 'new'), get(1, 2, 3, 'a', { version: 1n, value: 'old' })], 'exact')).toMatch(/no order/);
    expect(linearize(start, end, [put(0, 0, 2, 'a', -1n, 'new'), get(1, 1, 3, 'a', { version: 1n, value: 'old' })], 'exact')).toBeUndefined();
  });

  it('refuses two winning creates of one key, a 409 no state explains, and an end state no order reaches', () => {
    const racing = [put(0, 0, 5, 'a', 0n, 'x'), put(1, 0, 5, 'a', 0n, 'y')];
    expect(linearize(EMPTY_STATE, rows(['a', 'y']), racing, 'exact')).toMatch(/no order/);
    expect(linearize(EMPTY_STATE, rows(['a', 'y']), [racing[0], { ...racing[1], answer: { kind: 'put', status: 409 } }], 'exact')).toMatch(/no order/);
    expect(linearize(EMPTY_STATE, rows(['a', 'x']), [racing[0], { ...racing[1], answer: { kind: 'put', status: 409 } }], 'exact')).toBeUndefined();
    // A compare-and-set against a version the key never had cannot have applied.
    expect(linearize(rows(['a', 'x']), { rows: [{ key: 'a', version: 4n, value: hex(v('z')) }] }, [put(0, 0, 1, 'a', 3n, 'z')], 'exact')).toMatch(/no order/);
  });

  it('checks creation order exactly, or up to requests that overlapped', () => {
    // b's create overlapped a's; a listing saw b without a, yet the table numbers a first.
    const ops = [put(0, 0, 10, 'a', 0n, 'a'), put(1, 1, 5, 'b', 0n, 'b'), list(2, 6, 7, ['b'])];
    const end = rows(['a', 'a'], ['b', 'b']);
    expect(linearize(EMPTY_STATE, end, ops, 'exact')).toMatch(/no order/);
    expect(linearize(EMPTY_STATE, end, ops, 'overlap')).toBeUndefined();
    // Had a's create been answered before b's was sent, b would have to be the newer.
    const sequential = [put(0, 0, 1, 'a', 0n, 'a'), put(1, 2, 3, 'b', 0n, 'b')];
    expect(linearize(EMPTY_STATE, rows(['b', 'b'], ['a', 'a']), sequential, 'overlap')).toMatch(/no order/);
    expect(linearize(EMPTY_STATE, rows(['a', 'a'], ['b', 'b']), sequential, 'overlap')).toBeUndefined();
    // Keys from earlier rounds are older than any key created now, in either mode.
    expect(linearize(rows(['old', 'o']), rows(['old', 'o'], ['a', 'a']), [put(0, 0, 1, 'a', 0n, 'a'), list(1, 0, 2, ['old', 'a'])], 'overlap')).toMatch(/no order/);
  });
});

// ---------------------------------------------------------------------------------------
// The workload

/** Keys that need quoting in PostgreSQL's array syntax, or sort apart from ASCII, next to plain ones. */
const KEYS = ['a', 'b', 'NULL', '', 'q"\\,{} x', 'é🙂', 'a_%'];
const PREFIXES = [undefined, '', 'a', 'a_', 'N', 'q"\\', 'é'];

interface Partition {
  name: string;
  identity: Identity;
  storeId: string;
  /** A key that fits the character limits but, with this store id, not one index entry: every insert of it is refused (400). */
  wideKey?: string;
  state: State;
}

/** `length` characters from outside the BMP (4 bytes each in UTF-8), not compressible. */
function widest(rng: Rng, length: number): string {
  return Array.from({ length }, () => String.fromCodePoint(0x20000 + rng.int(0x10000))).join('');
}

let valueCounter = 0;
/** A value no other write uses (so the read state tells which write it came from), sometimes with awkward bytes or empty. */
function freshValue(rng: Rng, round: number): Uint8Array {
  if (rng.chance(0.04)) return new Uint8Array(0);
  const tag = Buffer.from(`r${round}v${valueCounter++}`);
  // Now and then too big for a batch (BATCH_VALUE_LIMIT): written alone, and read back by a second statement after a batched get.
  if (rng.chance(0.005)) return Buffer.concat([tag, Buffer.alloc(BATCH_VALUE_LIMIT + 1 + rng.int(1000), tag[tag.length - 1])]);
  if (!rng.chance(0.2)) return tag;
  const awkward = [0x00, 0x5c, 0x22, 0x2c, 0x7b, 0x7d, 0xff, 0x27, 0x0a];
  return Buffer.concat([tag, Buffer.from(Array.from({ length: 1 + rng.int(6) }, () => rng.pick(awkward)))]);
}

/** A version for a conditional write of `key`: mostly right as of the round's start, sometimes stale or invented. */
function guessVersion(rng: Rng, state: State, key: string): bigint {
  // The same draws whatever the state, so a seed makes the same choices however a round went.
  const [right, nearby, up, invented] = [rng.chance(0.6), rng.chance(0.5), rng.chance(0.5), BigInt(1 + rng.int(4))];
  const current = lookup(state, key)?.version;
  if (current !== undefined && right) return current;
  if (current !== undefined && nearby) return current + (up ? 1n : -1n) || 5n;
  return invented;
}

function randomRequest(rng: Rng, round: number, partition: Partition, avoid: string | undefined): Request {
  const state = partition.state;
  const keys = KEYS.filter((key) => key !== avoid);
  // Skewed towards the first keys, so writes of one key often meet in one batch window.
  const key = () => (rng.chance(0.4) ? keys[0] : rng.chance(0.05) ? GLOBAL_VERSION_KEY : rng.pick(keys));
  // Compare-and-set (right or wrong) about half the time, else an unconditional write or a create.
  const singleVersion = (k: string) => (rng.chance(0.45) ? guessVersion(rng, state, k) : rng.chance(0.5) ? -1n : 0n);
  const kind = rng.weighted<string>([
    [20, 'get'],
    [38, 'single'],
    [4, 'gv-only'],
    [12, 'multi'],
    [12, 'delete'],
    [10, 'list'],
    [partition.wideKey ? 4 : 0, 'wide'],
  ]);
  switch (kind) {
    case 'get':
      return { kind: 'get', key: partition.wideKey && rng.chance(0.05) ? partition.wideKey : key() };
    case 'single': {
      const k = key();
      const request: Request = { kind: 'put', items: [{ key: k, version: singleVersion(k), value: freshValue(rng, round) }], deletes: [] };
      // A global version makes it a transaction; usually a single-item put is one batched statement.
      if (rng.chance(0.08)) request.globalVersion = guessVersion(rng, state, GLOBAL_VERSION_KEY);
      return request;
    }
    case 'gv-only':
      // No items: the global-version row is the one statement (batched like any single-item put).
      return { kind: 'put', globalVersion: rng.chance(0.2) ? rng.pick([-1n, 0n]) : (state.gv?.version ?? 0n), items: [], deletes: [] };
    case 'multi': {
      const chosen = new Set<string>();
      const count = 2 + rng.int(2);
      for (let i = 0; i < count * 3 && chosen.size < count; i++) chosen.add(key());
      const all = [...chosen];
      // Now and then a repeated key, which the server refuses (400).
      if (rng.chance(0.05)) all.push(all[0]);
      const deleteCount = rng.chance(0.4) ? 1 : 0;
      const items = all.slice(0, all.length - deleteCount).map((k) => ({ key: k, version: singleVersion(k), value: freshValue(rng, round) }));
      const deletes = all.slice(all.length - deleteCount).map((k) => ({ key: k, version: rng.chance(0.4) ? -1n : guessVersion(rng, state, k) }));
      const request: Request = { kind: 'put', items, deletes };
      if (rng.chance(0.4)) request.globalVersion = rng.chance(0.8) ? (state.gv?.version ?? 0n) : rng.pick([-1n, 0n, 7n]);
      return request;
    }
    case 'delete': {
      const k = key();
      return { kind: 'delete', key: k, version: rng.chance(0.4) ? -1n : guessVersion(rng, state, k) };
    }
    case 'list':
      return { kind: 'list', prefix: rng.pick(PREFIXES) };
    default:
      // An insert PostgreSQL refuses (SQLSTATE 54000): it fails its batch, whose other requests must be unaffected.
      return { kind: 'put', items: [{ key: partition.wideKey as string, version: rng.pick([-1n, 0n]), value: freshValue(rng, round) }], deletes: [], tooWide: true };
  }
}

// ---------------------------------------------------------------------------------------
// HTTP

function encode(storeId: string, request: Request): { path: string; body: Uint8Array } {
  switch (request.kind) {
    case 'get':
      return { path: '/getObject', body: vss.GetObjectRequest.encode({ storeId, key: request.key }).finish() };
    case 'put': {
      const message: vss.PutObjectRequest.$Properties = {
        storeId,
        transactionItems: request.items.map((item) => keyValue(item.key, item.version, item.value)),
        deleteItems: request.deletes.map((item) => keyValue(item.key, item.version)),
      };
      if (request.globalVersion !== undefined) message.globalVersion = bigIntToInt64(request.globalVersion);
      return { path: '/putObjects', body: vss.PutObjectRequest.encode(message).finish() };
    }
    case 'delete':
      return { path: '/deleteObject', body: vss.DeleteObjectRequest.encode({ storeId, keyValue: keyValue(request.key, request.version) }).finish() };
    case 'list': {
      const message: vss.ListKeyVersionsRequest.$Properties = { storeId };
      if (request.prefix !== undefined) message.keyPrefix = request.prefix;
      return { path: '/listKeyVersions', body: vss.ListKeyVersionsRequest.encode(message).finish() };
    }
  }
}

const ERROR_CODES: Record<number, vss.ErrorCode> = {
  400: vss.ErrorCode.INVALID_REQUEST_EXCEPTION,
  404: vss.ErrorCode.NO_SUCH_KEY_EXCEPTION,
  409: vss.ErrorCode.CONFLICT_EXCEPTION,
};

/** Decodes an answer; anything the model has no place for (a 500, a wrong error code) throws. */
function decodeAnswer(request: Request, response: RawResponse): Answer {
  const what = `${request.kind} answered ${response.status}`;
  if (response.status !== 200) {
    const error = vss.ErrorResponse.decode(response.body);
    const allowed = request.kind === 'get' ? [404] : request.kind === 'put' ? [400, 409] : [];
    if (!allowed.includes(response.status) || error.errorCode !== ERROR_CODES[response.status]) {
      throw new Error(`${what} (${vss.ErrorCode[error.errorCode]}: ${error.message})`);
    }
    return request.kind === 'get' ? { kind: 'get', status: 404 } : { kind: 'put', status: response.status as 400 | 409 };
  }
  switch (request.kind) {
    case 'get': {
      const value = vss.GetObjectResponse.decode(response.body).value;
      if (!value) throw new Error(`${what} without a value`);
      return { kind: 'get', status: 200, key: value.key ?? '', version: int64ToBigInt(value.version), value: hex(value.value ?? new Uint8Array(0)) };
    }
    case 'put':
    case 'delete':
      if (response.body.length !== 0) throw new Error(`${what} with a body`);
      return request.kind === 'put' ? { kind: 'put', status: 200 } : { kind: 'delete', status: 200 };
    case 'list': {
      const decoded = vss.ListKeyVersionsResponse.decode(response.body);
      // Every partition has fewer keys than a page: one page, its token empty, its global version present.
      if (decoded.nextPageToken !== '' || !hasField(decoded, 'globalVersion')) throw new Error(`${what}: a first and last page expected`);
      return {
        kind: 'list',
        status: 200,
        keys: decoded.keyVersions.map((kv) => ({ key: kv.key ?? '', version: int64ToBigInt(kv.version) })),
        globalVersion: int64ToBigInt(decoded.globalVersion),
      };
    }
  }
}

function describeRequest(request: Request): string {
  const v = (value: Uint8Array) => (value.length === 0 ? "''" : hex(value));
  switch (request.kind) {
    case 'get':
      return `get ${JSON.stringify(request.key)}`;
    case 'put':
      return `put${request.globalVersion === undefined ? '' : ` gv=${request.globalVersion}`} [${request.items
        .map((item) => `${JSON.stringify(item.key)}@${item.version}=${v(item.value)}`)
        .join(', ')}]${request.deletes.length ? ` delete [${request.deletes.map((d) => `${JSON.stringify(d.key)}@${d.version}`).join(', ')}]` : ''}`;
    case 'delete':
      return `delete ${JSON.stringify(request.key)}@${request.version}`;
    case 'list':
      return `list${request.prefix === undefined ? '' : ` prefix=${JSON.stringify(request.prefix)}`}`;
  }
}

function describeAnswer(answer: Answer): string {
  if (answer.kind === 'get' && answer.status === 200) return `200 ${JSON.stringify(answer.key)}@${answer.version}=${answer.value || "''"}`;
  if (answer.kind === 'list') return `200 gv=${answer.globalVersion} [${answer.keys.map((k) => `${JSON.stringify(k.key)}@${k.version}`).join(' ')}]`;
  return String(answer.status);
}

// ---------------------------------------------------------------------------------------
// The runs

/** Reads the rows of these users straight from the table, in creation order. */
type TableReader = (users: string[]) => Promise<Array<{ user_token: string; store_id: string; key: string; version: unknown; value: Uint8Array }>>;

const SELECT_ALL = `SELECT user_token, store_id, key, version, value FROM vss_db WHERE user_token = ANY($1::text[]) ORDER BY sort_order`;

async function pause(rng: Rng): Promise<void> {
  const how = rng.weighted<string>([
    [5, 'now'],
    [3, 'immediate'],
    [2, 'timer'],
  ]);
  if (how === 'immediate') await new Promise((resolve) => setImmediate(resolve));
  else if (how === 'timer') await new Promise((resolve) => setTimeout(resolve, 1 + rng.int(3)));
}

/**
 * PGlite with the latency of a database elsewhere: every statement first yields to the event
 * loop. PGlite runs on the server's thread and finishes each statement before the next HTTP
 * request is even read, so over HTTP its requests never queue and batches never form; with this
 * they do, as on PostgreSQL. (A transaction's statements yield while it holds PGlite's
 * transaction lock, so nothing else runs inside it.)
 */
function yieldingDriver(inner: SqlDriver): SqlDriver {
  const yieldOnce = () => new Promise((resolve) => setImmediate(resolve));
  return {
    async query(query, params) {
      await yieldOnce();
      return inner.query(query, params);
    },
    transaction: (work) =>
      inner.transaction((session) =>
        work({
          async query(query, params) {
            await yieldOnce();
            return session.query(query, params);
          },
        }),
      ),
    close: () => inner.close(),
  };
}

interface ModelCase {
  title: string;
  skipReason?: string;
  order: OrderCheck;
  /** Whether batches must have formed (false where scheduling rules them out). */
  batches: boolean;
  open(): Promise<{ backend: SqlBackend; readTable: TableReader; dispose(): Promise<void> }>;
}

const pgliteReader = (backend: PgliteBackend): TableReader => async (users) =>
  (await backend.db.query<Awaited<ReturnType<TableReader>>[number]>(SELECT_ALL, [users])).rows;

const CASES: ModelCase[] = [
  {
    title: 'pglite',
    order: 'exact',
    batches: false,
    async open() {
      const opened = await backendCase('pglite').open();
      const backend = opened.backend as PgliteBackend;
      return { backend, readTable: pgliteReader(backend), dispose: () => opened.dispose() };
    },
  },
  {
    title: 'pglite with every statement yielding first (so requests queue and batch)',
    order: 'exact',
    batches: true,
    async open() {
      const opened = await backendCase('pglite').open();
      const pglite = opened.backend as PgliteBackend;
      const backend = new SqlBackend('pglite', yieldingDriver(new PgliteDriver(pglite.db)));
      return { backend, readTable: pgliteReader(pglite), dispose: () => opened.dispose() };
    },
  },
  {
    title: 'postgres',
    skipReason: backendCase('postgres').skipReason,
    order: 'overlap',
    batches: true,
    async open() {
      const opened = await backendCase('postgres').open();
      const backend = opened.backend as PostgresBackend;
      return { backend, readTable: async (users) => (await backend.pool.query(SELECT_ALL, [users])).rows, dispose: () => opened.dispose() };
    },
  },
];

for (const modelCase of CASES) {
  const title = modelCase.skipReason
    ? `batching against a sequential model on ${modelCase.title} — SKIPPED: ${modelCase.skipReason}`
    : `batching against a sequential model on ${modelCase.title}`;

  describe.skipIf(modelCase.skipReason !== undefined)(title, () => {
    let opened: Awaited<ReturnType<ModelCase['open']>>;
    let server: StartedVssServer;

    beforeAll(async () => {
      opened = await modelCase.open();
      server = await startVssServer({ backend: opened.backend, port: 0 });
    });
    afterAll(async () => {
      await server?.close();
      await opened?.dispose();
    });

    it(`explains every answer by some sequential order (seed ${SEED}, ${ROUNDS} rounds of ${OPS_PER_ROUND} requests)`, { timeout: 240_000 }, async () => {
      const rng = new Rng(SEED);
      const alice = newIdentity();
      const bob = newIdentity();
      const partitions: Partition[] = [
        { name: 'alice/""', identity: alice, storeId: '', state: EMPTY_STATE },
        { name: 'alice/NULL', identity: alice, storeId: 'NULL', state: EMPTY_STATE },
        { name: 'bob/"s,{1} \\"x\\""', identity: bob, storeId: 's,{1} "x"', state: EMPTY_STATE },
        { name: 'bob/wide', identity: bob, storeId: widest(rng, 120), wideKey: widest(rng, 600), state: EMPTY_STATE },
      ];
      const users = [alice.userToken, bob.userToken];
      const before = structuredClone(opened.backend.batchStats);
      const tally = new Map<string, number>();
      const count = (what: string) => tally.set(what, (tally.get(what) ?? 0) + 1);

      for (let round = 0; round < ROUNDS; round++) {
        // Every fifth round, creates of one absent key per partition race (nothing else touches that key).
        const racing = new Map<Partition, string>();
        if (round % 5 === 4) {
          for (const partition of partitions) {
            const absent = KEYS.filter((key) => !lookup(partition.state, key));
            const choice = rng.float();
            if (absent.length > 0) racing.set(partition, absent[Math.floor(choice * absent.length)]);
          }
        }
        const planned: Array<{ partition: Partition; request: Request }> = [];
        for (let i = 0; i < OPS_PER_ROUND; i++) {
          const partition = rng.pick(partitions);
          planned.push({ partition, request: randomRequest(rng, round, partition, racing.get(partition)) });
        }
        for (const [partition, key] of racing) {
          const creates = 3 + rng.int(3);
          for (let i = 0; i < creates; i++) {
            planned.splice(rng.int(planned.length + 1), 0, { partition, request: { kind: 'put', items: [{ key, version: 0n, value: freshValue(rng, round) }], deletes: [] } });
          }
        }
        const delays = planned.map(() => rng.float());
        const operations = await Promise.all(
          planned.map(async ({ partition, request }, id) => {
            if (delays[id] > 0.5) await pause(new Rng(Math.floor(delays[id] * 2 ** 31)));
            const { path, body } = encode(partition.storeId, request);
            const start = performance.now();
            const response = await send(server.url + path, body, { headers: { authorization: partition.identity.header() } });
            const end = performance.now();
            let answer: Answer;
            try {
              answer = decodeAnswer(request, response);
            } catch (error) {
              throw new Error(`MODEL_SEED=${SEED} round ${round} ${partition.name} #${id} ${describeRequest(request)}: ${(error as Error).message}`);
            }
            count(`${request.kind} ${answer.status}`);
            return { partition, op: { id, request, answer, start, end } satisfies Operation };
          }),
        );

        // What the round left, straight from the table.
        const observed = new Map<Partition, { rows: Row[]; gv?: State['gv'] }>(partitions.map((p) => [p, { rows: [] }]));
        for (const row of await opened.readTable(users)) {
          const partition = partitions.find((p) => p.identity.userToken === row.user_token && p.storeId === row.store_id);
          if (!partition) continue;
          const state = observed.get(partition) as { rows: Row[]; gv?: State['gv'] };
          const entry = { version: BigInt(String(row.version)), value: hex(row.value) };
          if (row.key === GLOBAL_VERSION_KEY) state.gv = entry;
          else state.rows.push({ key: row.key, ...entry });
        }

        for (const partition of partitions) {
          const ops = operations.filter((o) => o.partition === partition).map((o) => o.op);
          const end = observed.get(partition) as State;
          const failure = linearize(partition.state, end, ops, modelCase.order);
          if (failure !== undefined) {
            const t0 = Math.min(...ops.map((op) => op.start));
            const lines = ops.map(
              (op) => `  #${op.id} [${(op.start - t0).toFixed(2)}–${(op.end - t0).toFixed(2)} ms] ${describeRequest(op.request)} -> ${describeAnswer(op.answer)}`,
            );
            const message = [
              `MODEL_SEED=${SEED} (${modelCase.title}) round ${round}, ${partition.name}: ${failure}`,
              `  state before: ${stateKey(partition.state)}`,
              `  state after:  ${stateKey(end)}`,
              ...lines,
            ].join('\n');
            console.error(message);
            expect.fail(message);
          }
          const raced = racing.get(partition);
          if (raced !== undefined) {
            const winners = ops.filter(
              (op) =>
                op.request.kind === 'put' &&
                op.request.items.length === 1 &&
                op.request.items[0].key === raced &&
                op.request.items[0].version === 0n &&
                op.request.globalVersion === undefined &&
                op.answer.status === 200,
            );
            expect(winners.length, `MODEL_SEED=${SEED} round ${round} ${partition.name}: racing creates of ${JSON.stringify(raced)}`).toBe(1);
            count('create races');
          }
          partition.state = end;
        }
      }

      // The run did exercise what it is meant to: every kind of answer, and batches of each kind.
      const after = opened.backend.batchStats;
      const delta = (kind: 'get' | 'unconditional' | 'create' | 'update', field: 'batches' | 'batchedRequests' | 'failedBatches') => {
        const pick = (s: typeof before) => (kind === 'get' ? s?.get[field] : s?.put[kind][field]) ?? 0;
        return pick(after) - pick(before);
      };
      const kinds = ['get', 'unconditional', 'create', 'update'] as const;
      console.info(
        `batching model on ${modelCase.title}, seed ${SEED}:`,
        Object.fromEntries([...tally].sort()),
        Object.fromEntries(kinds.map((kind) => [kind, `${delta(kind, 'batches')} batches, ${delta(kind, 'batchedRequests')} requests, ${delta(kind, 'failedBatches')} failed`])),
      );
      if (ROUNDS >= 50) {
        for (const outcome of ['get 200', 'get 404', 'put 200', 'put 409', 'put 400', 'delete 200', 'list 200', 'create races']) {
          expect(tally.get(outcome) ?? 0, outcome).toBeGreaterThan(0);
        }
      }
      if (modelCase.batches && ROUNDS >= 50) for (const kind of kinds) expect(delta(kind, 'batches'), `${kind} batches`).toBeGreaterThan(0);
      // Batches that failed on a too-wide key and were retried one by one, their other requests checked above.
      if (modelCase.batches && ROUNDS >= 200) expect(delta('create', 'failedBatches') + delta('unconditional', 'failedBatches'), 'failed write batches').toBeGreaterThan(0);
    });
  });
}
