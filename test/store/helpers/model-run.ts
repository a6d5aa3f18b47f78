/**
 * One seeded run of the store model test: a random sequence of write / writeBatch / remove /
 * read / list over a few keys, several in flight at once, through a transport that loses
 * replies, fails before sending, answers 5xx, delivers requests late or slowly. Afterwards the
 * run is checked against what the store promises (docs/store.md "Ordering", "Conditional
 * writes", "Atomic batches"). Every check returns violations as text; the test asserts none.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { deriveVssKeys } from '../../../src/crypto/index.js';
import { nodeHttpFetch, type FetchFunction, type RetrySettings } from '../../../src/client/index.js';
import { startVssServer } from '../../../src/server/index.js';
import {
  ConcurrentWriterError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreIOError,
  VssStore,
  type VersionChange,
  type VersionLedger,
} from '../../../src/store/index.js';
import { MemoryLedger } from './memory-ledger.js';
import { DEFAULT_FAULT_WEIGHTS, directFetch, FaultyTransport, KeyBook, LoggingBackend, Pool, Rng, type AppliedMutation, type LateBudget, type ModelKey } from './model-transport.js';

export const MODEL_SEED_BYTES = new Uint8Array(64).map((_, i) => (i * 29 + 7) & 0xff);

const MODEL_KEYS: readonly ModelKey[] = [
  { name: 'a/k0', primaryNamespace: 'a', secondaryNamespace: '', key: 'k0' },
  { name: 'a/k1', primaryNamespace: 'a', secondaryNamespace: '', key: 'k1' },
  { name: 'a/k2', primaryNamespace: 'a', secondaryNamespace: '', key: 'k2' },
  { name: 'b.s/k0', primaryNamespace: 'b', secondaryNamespace: 's', key: 'k0' },
  { name: 'b.s/k1', primaryNamespace: 'b', secondaryNamespace: 's', key: 'k1' },
];
const NAMESPACES: ReadonlyArray<readonly [string, string]> = [
  ['a', ''],
  ['b', 's'],
];

/** The keys one run uses. */
class Universe {
  readonly byName = new Map<string, ModelKey>();
  get keys(): ModelKey[] {
    return [...this.byName.values()];
  }
  add(key: ModelKey): string {
    this.byName.set(key.name, key);
    return key.name;
  }
  nameOf(primaryNamespace: string, secondaryNamespace: string, key: string): string {
    return this.keys.find((k) => k.primaryNamespace === primaryNamespace && k.secondaryNamespace === secondaryNamespace && k.key === key)?.name ?? `${primaryNamespace}.${secondaryNamespace}/${key}`;
  }
  inNamespace(ns: number): ModelKey[] {
    const [primary, secondary] = NAMESPACES[ns];
    return this.keys.filter((k) => k.primaryNamespace === primary && k.secondaryNamespace === secondary);
  }
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** A key's state: its value, or null when absent. */
type State = string | null;
const show = (s: State | undefined) => (s === null ? 'absent' : s === undefined ? '?' : JSON.stringify(s));

type Planned =
  | { kind: 'write'; writer: number; key: string }
  | { kind: 'batch'; writer: number; keys: string[] }
  | { kind: 'remove'; writer: number; key: string }
  | { kind: 'read'; writer: number; key: string }
  | { kind: 'list'; writer: number; ns: number };

interface OpRecord {
  id: number;
  writer: number;
  kind: Planned['kind'];
  keys: string[];
  /** For mutations, the state each key gets from it (null: removed). */
  states: State[];
  ns?: number;
  issuedAt: number;
  settledAt?: number;
  outcome: 'pending' | 'ok' | 'failed';
  error?: unknown;
  /** A read's value (null: KeyNotFoundError), a list's key names. */
  result?: State | string[];
}

const isMutation = (op: OpRecord) => op.kind === 'write' || op.kind === 'batch' || op.kind === 'remove';
const describeOp = (op: OpRecord) =>
  `#${op.id} w${op.writer} ${op.kind}(${op.kind === 'list' ? NAMESPACES[op.ns ?? 0].join('.') : op.keys.map((k, i) => (isMutation(op) ? `${k}=${show(op.states[i])}` : k)).join(', ')})`;
const describeError = (error: unknown) => `${(error as Error)?.name ?? 'Error'}: ${(error as Error)?.message ?? String(error)}`;

/**
 * The lateness the store can handle, for writes and removes alike: a late request lands
 * within the next two requests of the writer on its keys (after the read-back, before the
 * next compare-and-set). Later landings can undo acknowledged state, which VSS versions
 * cannot fence (a re-created key restarts at version 1): a failed create lands after an
 * acknowledged remove (a read then sees it), a failed write lands on the re-created key, a
 * remove deletes the re-created key (RollbackDetectedError). Two requests are the most that
 * is safe: with three, a remove whose first attempt went late and whose retry succeeded
 * (the store never hears of the late copy) can land after the next create (seed 655).
 * The store recognises its own late writes at the next write or remove of the key;
 * MODEL_LATE=anytime shows the rest.
 */
export const BOUNDED_LATE: LateBudget = Object.freeze({ write: 2, remove: 2 });

export interface ScenarioOptions {
  seed: number;
  writers: 1 | 2;
  /** 'direct': in-process, exactly reproducible. 'http': the real server on loopback. */
  transport: 'direct' | 'http';
  operations: number;
  /**
   * Whether removes are planned. Two writers with removes break the store's promise whatever
   * it does: VSS restarts a re-created key at version 1, so a compare-and-set on a version one
   * writer saw can pass on the other writer's new object (see the report of the model test).
   */
  removes: boolean;
  /** How late a 'late' request may land (see LateBudget); undefined: any time. */
  late: LateBudget | undefined;
}

export interface ScenarioResult {
  violations: string[];
  trace: string[];
  stats: {
    ok: number;
    failed: number;
    conflicts: number;
    faults: Record<string, number>;
    lateLandings: number;
  };
}

/** The operations of a run; without `removes`, no remove is planned. */
function plan(rng: Rng, count: number, writers: number, removes: boolean, universe: Universe): Planned[] {
  for (const key of MODEL_KEYS) universe.add(key);
  const names = MODEL_KEYS.map((k) => k.name);
  const planned: Planned[] = [];
  for (let i = 0; i < count; i++) {
    const writer = rng.int(writers);
    const kind = rng.weighted({ write: 35, batch: 15, remove: removes ? 15 : 0, read: 25, list: 10 });
    switch (kind) {
      case 'batch': {
        const free = [...names];
        const keys: string[] = [];
        const size = 2 + rng.int(2);
        while (keys.length < size) keys.push(free.splice(rng.int(free.length), 1)[0]);
        planned.push({ kind, writer, keys });
        break;
      }
      case 'list':
        planned.push({ kind, writer, ns: rng.int(NAMESPACES.length) });
        break;
      default:
        planned.push({ kind, writer, key: rng.pick(names) });
    }
  }
  return planned;
}

/** Runs one seed and checks it; never throws for a broken promise of the store (that is a violation). */
export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const { seed, writers } = options;
  const planRng = new Rng(seed, 1);
  const driverRng = new Rng(seed, 2);
  let now = 0;
  const clock = () => ++now;
  const trace: string[] = [];
  const live = process.env.MODEL_TRACE === '1';
  const log = (line: string) => {
    trace.push(`${now} ${line}`);
    if (live) process.stderr.write(`${now} ${line}\n`);
  };
  const universe = new Universe();
  const planned = plan(planRng, options.operations, writers, options.removes, universe);
  const secrets = deriveVssKeys(MODEL_SEED_BYTES);
  const book = new KeyBook(universe.keys, secrets.dataEncryptionKey, secrets.obfuscationMasterKey);
  const writerOfRequest = new AsyncLocalStorage<number>();
  const backend = new LoggingBackend(book, clock, log, () => writerOfRequest.getStore());
  const pool = new Pool(driverRng);
  const storeId = `model-${seed}`;
  const faultRate = 0.1 + planRng.next() * 0.35;
  const slowRate = 0.2 + planRng.next() * 0.4;
  const retry: RetrySettings = { baseDelayMs: 1, maxAttempts: 1 + planRng.int(4), maxTotalDelayMs: 1_000, maxJitterMs: 0 };
  log(`seed ${seed}: ${writers} writer(s), ${options.transport}, fault rate ${faultRate.toFixed(2)}, slow ${slowRate.toFixed(2)}, ${retry.maxAttempts} attempt(s) per request`);

  let server: Awaited<ReturnType<typeof startVssServer>> | undefined;
  let baseUrl = 'http://model.invalid/vss';
  let innerFetch: (writer: number) => FetchFunction;
  if (options.transport === 'direct') {
    const direct = directFetch(backend);
    innerFetch = (writer) => (url, init) => writerOfRequest.run(writer, () => direct(url, init));
  } else {
    server = await startVssServer({ backend, auth: { kind: 'noop' }, port: 0, host: '127.0.0.1' });
    baseUrl = server.url;
    const http = nodeHttpFetch();
    innerFetch = () => http;
  }

  const transports: FaultyTransport[] = [];
  const stores: VssStore[] = [];
  const ledger = new MemoryLedger();
  const violations: string[] = [];
  const ops: OpRecord[] = [];
  let pending = 0;
  try {
    for (let w = 0; w < writers; w++) {
      const transport = new FaultyTransport(`w${w}`, innerFetch(w), new Rng(seed, 10 + w), pool, { rate: faultRate, slowRate, late: options.late, weights: DEFAULT_FAULT_WEIGHTS }, book, log);
      transport.enabled = false; // opening is not under test here
      transports.push(transport);
      stores.push(
        await VssStore.open({
          storeId,
          client: { baseUrl, retry },
          clientRuntime: { fetch: transport.fetch, sleep: pool.sleep },
          keys: { seed: MODEL_SEED_BYTES },
          // The single writer's ledger is checked at the end: it must never claim more than the server holds.
          ...(w === 0 && writers === 1 ? { versionLedger: ledger } : {}),
        }),
      );
      transport.enabled = true;
    }

    const issue = (p: Planned) => {
      const id = ops.length;
      const store = stores[p.writer];
      const valueOf = (key: string) => `w${p.writer}-op${id}-${key}`;
      const op: OpRecord = {
        id,
        writer: p.writer,
        kind: p.kind,
        keys: p.kind === 'batch' ? p.keys : p.kind === 'list' ? [] : [p.key],
        states: [],
        ...(p.kind === 'list' ? { ns: p.ns } : {}),
        issuedAt: clock(),
        outcome: 'pending',
      };
      if (p.kind === 'write' || p.kind === 'batch') op.states = op.keys.map(valueOf);
      if (p.kind === 'remove') op.states = [null];
      ops.push(op);
      log(`issue ${describeOp(op)}`);
      const k = (name: string) => universe.byName.get(name)!;
      let promise: Promise<unknown>;
      switch (p.kind) {
        case 'write':
          promise = store.write(k(p.key).primaryNamespace, k(p.key).secondaryNamespace, k(p.key).key, utf8.encode(op.states[0]!));
          break;
        case 'batch':
          promise = store.writeBatch(
            p.keys.map((name, i) => ({
              primaryNamespace: k(name).primaryNamespace,
              secondaryNamespace: k(name).secondaryNamespace,
              key: k(name).key,
              value: utf8.encode(op.states[i]!),
            })),
          );
          break;
        case 'remove':
          promise = store.remove(k(p.key).primaryNamespace, k(p.key).secondaryNamespace, k(p.key).key, false);
          break;
        case 'read':
          promise = store.read(k(p.key).primaryNamespace, k(p.key).secondaryNamespace, k(p.key).key).then(
            (value) => {
              op.result = fromUtf8.decode(value);
            },
            (error: unknown) => {
              if (!(error instanceof KeyNotFoundError)) throw error;
              op.result = null;
            },
          );
          break;
        case 'list': {
          const [primary, secondary] = NAMESPACES[p.ns];
          promise = store.list(primary, secondary).then((names) => {
            op.result = names.map((name) => universe.nameOf(primary, secondary, name));
          });
          break;
        }
      }
      pending += 1;
      promise.then(
        () => {
          op.outcome = 'ok';
          op.settledAt = clock();
          pending -= 1;
          log(`ok ${describeOp(op)}${op.result !== undefined ? ` -> ${Array.isArray(op.result) ? `[${op.result.join(', ')}]` : show(op.result)}` : ''}`);
        },
        (error: unknown) => {
          op.outcome = 'failed';
          op.error = error;
          op.settledAt = clock();
          pending -= 1;
          log(`failed ${describeOp(op)}: ${describeError(error)}`);
        },
      );
    };

    // The driver: at every quiet moment, issue the next few operations (in one synchronous
    // stretch, so queued writes can supersede each other) or release one held event.
    const quiet = options.transport === 'direct' ? () => new Promise<void>((r) => setImmediate(r)) : () => new Promise<void>((r) => setTimeout(r, 1));
    let next = 0;
    let idle = 0;
    pool.driving = true;
    for (;;) {
      await quiet();
      if (next < planned.length && (pool.size === 0 || driverRng.chance(0.4))) {
        const wave = 1 + driverRng.int(3);
        for (let i = 0; i < wave && next < planned.length; i++) issue(planned[next++]);
        idle = 0;
        continue;
      }
      if (pool.size > 0) {
        log(`release ${pool.releaseOne()}`);
        idle = 0;
        continue;
      }
      const inFlight = transports.reduce((n, t) => n + t.inFlight.size, 0);
      if (pending === 0 && inFlight === 0) break;
      // In-process, everything runs on microtasks: a quiet moment with an operation still
      // pending and nothing held is a promise that will never settle.
      if (options.transport === 'direct' && ++idle > 5) {
        violations.push(`hang: ${ops.filter((o) => o.outcome === 'pending').map(describeOp).join('; ')} never settled, with nothing left to deliver`);
        break;
      }
    }
    pool.driving = false;
    for (const t of transports) {
      await Promise.all([...t.inFlight]);
      t.enabled = false;
    }
    if (violations.length > 0) return finish();

    // ------------------------------------------------------------------ checks
    const allowedErrors = (op: OpRecord): Array<abstract new (...args: never[]) => Error> => {
      if (writers === 1) return [StoreIOError];
      // Two writers: conflicts are expected; a read or list may see the other writer's delete
      // of a key this one knew as a rollback (docs/store.md, "Rollback detection").
      return op.kind === 'read' || op.kind === 'list' ? [StoreIOError, ConcurrentWriterError, RollbackDetectedError] : [StoreIOError, ConcurrentWriterError];
    };
    for (const op of ops) {
      if (op.outcome !== 'failed') continue;
      if (!allowedErrors(op).some((type) => op.error instanceof type)) violations.push(`${describeOp(op)} failed with ${describeError(op.error)}`);
    }

    const fresh = await openFresh(storeId, baseUrl, options.transport === 'direct' ? innerFetch(99) : undefined);
    const finalState = new Map<string, State>();
    for (const k of universe.keys) {
      finalState.set(k.name, await readState(fresh, k));
    }
    await fresh.close();
    log(`final: ${universe.keys.map((k) => `${k.name}=${show(finalState.get(k.name))}`).join(', ')}`);

    if (writers === 1) {
      violations.push(...checkSingleWriter(universe, ops, finalState));
      violations.push(...(await followUp(universe, stores[0], ledger, storeId, baseUrl, options.transport === 'direct' ? innerFetch(99) : undefined, finalState)));
    } else {
      violations.push(...checkNoSilentOverwrite(ops, backend.applied));
      violations.push(...checkAcknowledgedLanded(universe, ops, backend.applied));
    }
    return finish();
  } finally {
    for (const store of stores) await store.close().catch(() => undefined);
    await server?.close();
  }

  function finish(): ScenarioResult {
    const faults: Record<string, number> = {};
    for (const line of trace) {
      const m = /: (fail-unsent|drop-reply|5xx-unsent|5xx-applied|502-proxy|late|slow)$/.exec(line);
      if (m) faults[m[1]] = (faults[m[1]] ?? 0) + 1;
    }
    return {
      violations,
      trace,
      stats: {
        ok: ops.filter((o) => o.outcome === 'ok').length,
        failed: ops.filter((o) => o.outcome === 'failed').length,
        conflicts: ops.filter((o) => o.error instanceof ConcurrentWriterError).length,
        faults,
        lateLandings: trace.filter((l) => l.includes('late request lands')).length,
      },
    };
  }
}

function openFresh(storeId: string, baseUrl: string, fetchFn: FetchFunction | undefined, ledger?: VersionLedger): Promise<VssStore> {
  return VssStore.open({
    storeId,
    client: { baseUrl, retry: 'none' },
    ...(fetchFn ? { clientRuntime: { fetch: fetchFn } } : {}),
    keys: { seed: MODEL_SEED_BYTES },
    ...(ledger ? { versionLedger: ledger } : {}),
  });
}

async function readState(store: VssStore, k: ModelKey): Promise<State> {
  try {
    return fromUtf8.decode(await store.read(k.primaryNamespace, k.secondaryNamespace, k.key));
  } catch (error) {
    if (error instanceof KeyNotFoundError) return null;
    throw error;
  }
}

/** Per key, the mutations in call order (one writer: the order its queue applies them in). */
function mutationsByKey(universe: Universe, ops: readonly OpRecord[], writer?: number): Map<string, Array<{ op: OpRecord; state: State }>> {
  const byKey = new Map<string, Array<{ op: OpRecord; state: State }>>(universe.keys.map((k) => [k.name, []]));
  for (const op of ops) {
    if (!isMutation(op) || (writer !== undefined && op.writer !== writer)) continue;
    op.keys.forEach((key, i) => byKey.get(key)!.push({ op, state: op.states[i] }));
  }
  return byKey;
}

/**
 * The states a key may hold, seen in [from, until] of the logical clock: the state of the last
 * mutation that had resolved before `from` (absent if none), or that of any later mutation
 * issued before `until`. A mutation that resolved is durable, so nothing older can come back;
 * later ones may or may not have applied yet (or at all, if they failed).
 */
function statesBetween(line: ReadonlyArray<{ op: OpRecord; state: State }>, from: number, until: number): { states: State[]; last: number } {
  let last = -1;
  line.forEach((m, i) => {
    if (m.op.outcome === 'ok' && m.op.settledAt! < from) last = i;
  });
  const states: State[] = [last < 0 ? null : line[last].state];
  for (let j = last + 1; j < line.length; j++) if (line[j].op.issuedAt < until) states.push(line[j].state);
  return { states, last };
}

/** What one writer may find at the end: the last acknowledged state, or that of any failed mutation after it. */
function finalCandidates(line: ReadonlyArray<{ op: OpRecord; state: State }>): State[] {
  let last = -1;
  line.forEach((m, i) => {
    if (m.op.outcome === 'ok') last = i;
  });
  const states: State[] = [last < 0 ? null : line[last].state];
  for (let j = last + 1; j < line.length; j++) if (line[j].op.outcome === 'failed') states.push(line[j].state);
  return states;
}

function checkSingleWriter(universe: Universe, ops: readonly OpRecord[], finalState: ReadonlyMap<string, State>): string[] {
  const violations: string[] = [];
  const byKey = mutationsByKey(universe, ops);
  const history = (key: string) =>
    byKey
      .get(key)!
      .map((m) => `#${m.op.id}=${show(m.state)}:${m.op.outcome}`)
      .join(' ');

  // 1. The final state is the last acknowledged one, or a later failed one's.
  for (const k of universe.keys) {
    const found = finalState.get(k.name)!;
    const allowed = finalCandidates(byKey.get(k.name)!);
    if (!allowed.includes(found)) {
      violations.push(`final ${k.name} is ${show(found)}, allowed ${allowed.map(show).join(' | ')}; mutations in call order: ${history(k.name)}`);
    }
  }

  // 2. A failed batch applied all of its keys or none.
  for (const op of ops) {
    if (op.kind !== 'batch' || op.outcome !== 'failed') continue;
    const applied = op.keys.filter((key, i) => finalState.get(key) === op.states[i]);
    if (applied.length === 0) continue;
    for (const key of op.keys) {
      const line = byKey.get(key)!;
      const position = line.findIndex((m) => m.op === op);
      const found = finalState.get(key)!;
      if (!line.slice(position).some((m) => m.state === found)) {
        violations.push(
          `${describeOp(op)} failed and left ${applied.join(', ')} at its value, but ${key} is ${show(found)}, which predates the batch: a batch applied in part`,
        );
      }
    }
  }

  // 3. Reads and lists see the last acknowledged state or a newer one, never an older one.
  for (const op of ops) {
    if (op.outcome !== 'ok') continue;
    if (op.kind === 'read') {
      const { states } = statesBetween(byKey.get(op.keys[0])!, op.issuedAt, op.settledAt!);
      if (!states.includes(op.result as State)) {
        violations.push(`${describeOp(op)} returned ${show(op.result as State)}, allowed ${states.map(show).join(' | ')}; mutations: ${history(op.keys[0])}`);
      }
    }
    if (op.kind === 'list') {
      const listed = new Set(op.result as string[]);
      for (const k of universe.inNamespace(op.ns!)) {
        const { states } = statesBetween(byKey.get(k.name)!, op.issuedAt, op.settledAt!);
        const present = listed.has(k.name);
        if (!states.some((s) => (s !== null) === present)) {
          violations.push(`${describeOp(op)} ${present ? 'listed' : 'left out'} ${k.name}, allowed ${states.map(show).join(' | ')}; mutations: ${history(k.name)}`);
        }
      }
      for (const name of listed) if (!universe.byName.has(name)) violations.push(`${describeOp(op)} listed an unknown key ${name}`);
    }
  }
  return violations;
}

/**
 * Once the faults stop, the writer must carry on as if nothing happened: its reads agree with
 * a fresh instance, it writes every key without a (false) conflict, and its version ledger
 * lets the store reopen (it never recorded more than the server holds).
 */
async function followUp(
  universe: Universe,
  store: VssStore,
  ledger: MemoryLedger,
  storeId: string,
  baseUrl: string,
  fetchFn: FetchFunction | undefined,
  finalState: ReadonlyMap<string, State>,
): Promise<string[]> {
  const violations: string[] = [];
  for (const k of universe.keys) {
    try {
      const found = await readState(store, k);
      if (found !== finalState.get(k.name)) violations.push(`after the faults the writer reads ${k.name} as ${show(found)}, a fresh instance as ${show(finalState.get(k.name))}`);
    } catch (error) {
      violations.push(`after the faults the writer cannot read ${k.name}: ${describeError(error)}`);
    }
  }
  for (const k of universe.keys) {
    try {
      await store.write(k.primaryNamespace, k.secondaryNamespace, k.key, utf8.encode(`after-${k.name}`));
    } catch (error) {
      violations.push(`after the faults the writer cannot write ${k.name}: ${describeError(error)}`);
    }
  }
  await store.close();
  try {
    const reopened = await openFresh(storeId, baseUrl, fetchFn, ledger);
    for (const k of universe.keys) {
      const found = await readState(reopened, k);
      if (found !== `after-${k.name}` && !violations.some((v) => v.includes(`cannot write ${k.name}`))) {
        violations.push(`after reopening, ${k.name} is ${show(found)}, not the acknowledged ${show(`after-${k.name}`)}`);
      }
    }
    await reopened.close();
  } catch (error) {
    violations.push(`reopening with the writer's version ledger failed: ${describeError(error)}`);
  }
  return violations;
}

/**
 * Two writers: whenever the server replaced a value of one writer by the other writer's
 * mutation, that other writer must have read the value it replaced (a conditional write can
 * only pass on a version it learned by reading). Otherwise an acknowledged (or possibly
 * applied) write was silently overwritten.
 */
function checkNoSilentOverwrite(ops: readonly OpRecord[], applied: readonly AppliedMutation[]): string[] {
  const violations: string[] = [];
  const current = new Map<string, AppliedMutation>();
  for (const m of applied) {
    if (m.key === 'marker') continue;
    const previous = current.get(m.key);
    current.set(m.key, m);
    if (!previous || previous.kind !== 'put' || previous.value === null) continue;
    const owner = /^w(\d+)-/.exec(previous.value)?.[1];
    const by = m.writer;
    if (owner === undefined || by === undefined || Number(owner) === by) continue;
    const sawIt = ops.some((op) => op.kind === 'read' && op.writer === by && op.keys[0] === m.key && op.outcome === 'ok' && op.result === previous.value && op.settledAt! < m.at);
    if (!sawIt) {
      const acknowledged = ops.some((op) => op.outcome === 'ok' && op.states.includes(previous.value));
      violations.push(
        `w${by}'s ${m.kind} of ${m.key}${m.kind === 'put' ? ` (${show(m.value)})` : ''} replaced ${show(previous.value)} (${acknowledged ? 'acknowledged' : 'not acknowledged'}) ` +
          `without w${by} ever reading it`,
      );
    }
  }
  return violations;
}

/** Each writer's last acknowledged write of a key reached the server. */
function checkAcknowledgedLanded(universe: Universe, ops: readonly OpRecord[], applied: readonly AppliedMutation[]): string[] {
  const violations: string[] = [];
  const landed = new Set(applied.filter((m) => m.kind === 'put').map((m) => `${m.key}\u0000${m.value}`));
  for (const writer of [0, 1]) {
    for (const [key, line] of mutationsByKey(universe, ops, writer)) {
      const last = line.filter((m) => m.op.outcome === 'ok').at(-1);
      if (last && last.state !== null && !landed.has(`${key}\u0000${last.state}`)) {
        violations.push(`${describeOp(last.op)} resolved, but the server never applied ${key}=${show(last.state)}`);
      }
    }
  }
  return violations;
}
