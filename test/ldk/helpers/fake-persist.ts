/**
 * Drives a VssPersister the way ChainMonitor does, without real channels: the persister's LDK
 * callbacks are captured when it builds its `Persist`, monitors and updates are stand-ins that
 * only serialize, and a stand-in ChainMonitor records every `channel_monitor_updated` call
 * (with what the server held at that moment). A store whose operations wait until the test
 * settles them gives exact control over what is in flight.
 */
import { vi } from 'vitest';
import * as ldk from 'lightningdevkit';
import { VssPersister, monitorName, silentLogger, updateKey, type VssPersisterOptions } from '../../../src/ldk/index.js';
import type { AsyncKVStore, KeyValueWrite, StoreKey } from '../../../src/store/types.js';
import { MemoryKVStore, MemoryServer } from './memory-store.js';

type PersistCallbacks = Parameters<typeof ldk.Persist.new_impl>[0];

/** A channel's funding outpoint, distinct per `n`. */
export function outpoint(n: number): ldk.OutPoint {
  return ldk.OutPoint.constructor_new(Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? n : i)), n % 7);
}

/** Stand-in for a ChannelMonitor: only what the persister calls while queueing. */
function fakeMonitor(latest: bigint): ldk.ChannelMonitor {
  return { get_latest_update_id: () => latest, write: () => Uint8Array.of(0xaa, Number(latest & 0xffn)) } as unknown as ldk.ChannelMonitor;
}

function fakeUpdate(id: bigint): ldk.ChannelMonitorUpdate {
  return { get_update_id: () => id, write: () => Uint8Array.of(0xbb, Number(id & 0xffn)) } as unknown as ldk.ChannelMonitorUpdate;
}

export interface Completion {
  monitor: string;
  updateId: bigint;
  /** Whether the server held the delta (or a full monitor at least this new) when LDK was told. */
  durable: boolean;
}

/** One operation held until the test settles it. */
export interface HeldOp {
  op: 'write' | 'remove' | 'batch';
  keys: StoreKey[];
  settle(err?: Error): Promise<void>;
}

/**
 * A store over a MemoryServer whose writes, removes and batches wait for `settle()` (reads and
 * lists go straight through). `auto` settles every operation at once (successfully) instead.
 */
export class HeldStore implements AsyncKVStore {
  readonly held: HeldOp[] = [];
  readonly inner: MemoryKVStore;
  auto = false;
  readonly writeBatch?: (writes: readonly KeyValueWrite[]) => Promise<void>;

  constructor(
    readonly server: MemoryServer = new MemoryServer(),
    options: { atomicBatches?: boolean } = {},
  ) {
    this.inner = new MemoryKVStore(server);
    if (options.atomicBatches) {
      this.writeBatch = (writes) =>
        this.hold('batch', writes.map((w) => ({ primaryNamespace: w.primaryNamespace, secondaryNamespace: w.secondaryNamespace, key: w.key })), async () => {
          for (const w of writes) await this.inner.write(w.primaryNamespace, w.secondaryNamespace, w.key, w.value);
        });
    }
  }

  private hold(op: HeldOp['op'], keys: StoreKey[], apply: () => Promise<void>): Promise<void> {
    if (this.auto) return apply();
    return new Promise<void>((resolve, reject) => {
      this.held.push({
        op,
        keys,
        settle: async (err) => {
          this.held.splice(this.held.indexOf(entry), 1);
          if (err) reject(err);
          else {
            await apply();
            resolve();
          }
          // Let the persister react before the test goes on.
          await drain();
        },
      });
      const entry = this.held[this.held.length - 1];
    });
  }

  /** The held operations touching `key` (in `monitor_updates/<monitor>/<key>` or `monitors//<key>`). */
  heldFor(key: string): HeldOp[] {
    return this.held.filter((h) => h.keys.some((k) => k.key === key));
  }

  read(p: string, s: string, k: string): Promise<Uint8Array> {
    return this.inner.read(p, s, k);
  }
  write(p: string, s: string, k: string, v: Uint8Array): Promise<void> {
    return this.hold('write', [{ primaryNamespace: p, secondaryNamespace: s, key: k }], () => this.inner.write(p, s, k, v));
  }
  remove(p: string, s: string, k: string, lazy: boolean): Promise<void> {
    return this.hold('remove', [{ primaryNamespace: p, secondaryNamespace: s, key: k }], () => this.inner.remove(p, s, k, lazy));
  }
  list(p: string, s: string): Promise<string[]> {
    return this.inner.list(p, s);
  }
  listAll(): Promise<StoreKey[]> {
    return this.inner.listAll();
  }
}

/** Lets pending promise reactions (and zero-delay timers) run. */
export async function drain(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** Whether `p` has settled after the pending reactions ran: 'resolved', its error, or 'pending'. */
export async function settled(p: Promise<unknown>): Promise<unknown> {
  let outcome: unknown = 'pending';
  p.then(
    () => (outcome = 'resolved'),
    (err: unknown) => (outcome = err),
  );
  await drain();
  return outcome;
}

/**
 * A persister attached to a recording stand-in ChainMonitor, with helpers that call its LDK
 * callbacks as ChainMonitor would.
 */
/** The LDK objects a VssPersister needs, as silent stand-ins (keys from `seedByte`). */
export function standInPersisterParts(seedByte: number) {
  const keys = ldk.KeysManager.constructor_new(new Uint8Array(32).fill(seedByte), 1n, 1);
  return {
    entropySource: keys.as_EntropySource(),
    signerProvider: keys.as_SignerProvider(),
    broadcaster: ldk.BroadcasterInterface.new_impl({ broadcast_transactions: () => {} }),
    feeEstimator: ldk.FeeEstimator.new_impl({ get_est_sat_per_1000_weight: () => 253 }),
    logger: ldk.Logger.new_impl({ log: () => {} }),
    log: silentLogger,
  };
}

export function fakePersistSetup(store: AsyncKVStore & { server?: MemoryServer; inner?: MemoryKVStore }, options: Partial<VssPersisterOptions> = {}) {
  const persister = new VssPersister({
    store,
    ...standInPersisterParts(5),
    backoff: { initialDelayMs: 1, maxDelayMs: 2 },
    ...options,
  });
  let callbacks: PersistCallbacks | undefined;
  const spy = vi.spyOn(ldk.Persist, 'new_impl').mockImplementation((impl) => {
    callbacks = impl;
    return {} as ldk.Persist;
  });
  try {
    persister.toLdkPersist();
  } finally {
    spy.mockRestore();
  }
  if (!callbacks) throw new Error('the persister did not build its Persist');
  const cb = callbacks;
  const server = store.server ?? store.inner?.server;
  const completions: Completion[] = [];
  /** Whether the server holds the delta, or a full monitor at least as new (its last byte is its latest id; ids stay below 256). */
  const durableOnServer = (name: string, id: bigint): boolean => {
    if (!server) return true;
    if (server.has('monitor_updates', name, updateKey(id))) return true;
    const full = server.get('monitors', '', name);
    return full !== undefined && BigInt(full[full.length - 1]) >= (id & 0xffn);
  };
  const chainMonitor = {
    channel_monitor_updated: (op: ldk.OutPoint, updateId: bigint) => {
      const name = monitorName(op);
      completions.push({ monitor: name, updateId, durable: durableOnServer(name, updateId) });
      return { is_ok: () => true };
    },
  } as unknown as ldk.ChainMonitor;
  persister.attach(chainMonitor);
  const ldkCalls = {
    newChannel: (n: number, latest: bigint) => cb.persist_new_channel(outpoint(n), fakeMonitor(latest)),
    update: (n: number, id: bigint) => cb.update_persisted_channel(outpoint(n), fakeUpdate(id), fakeMonitor(id)),
    chainSync: (n: number, latest: bigint) => cb.update_persisted_channel(outpoint(n), null as unknown as ldk.ChannelMonitorUpdate, fakeMonitor(latest)),
    archive: (n: number) => cb.archive_persisted_channel(outpoint(n)),
  };
  return { persister, completions, ldk: ldkCalls, name: (n: number) => monitorName(outpoint(n)) };
}
