/**
 * Shared setup of the end-to-end harness tests: a real VSS server (embedded PGlite unless a
 * test needs the memory backend's snapshots), wallets whose stores are real VssStore clients
 * opened from seed + store id, and the invariants every test checks after a crash.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startVssServer, type BackendOption, type StartedVssServer } from '../../../src/server/index.js';
import { WalletFleet } from '../../../harness/wallets.js';
import { vssStoreOpener, type VssWalletOptions } from '../../../harness/vss-wallet.js';
import { channelView, waitChannelSettled } from '../../../harness/wallet-ops.js';
import type { OpenedChannel } from '../../../harness/network.js';
import type { CrashableStore } from '../../../harness/crash-store.js';

export async function startServer(backend: BackendOption = 'pglite'): Promise<StartedVssServer> {
  return startVssServer({ backend, logLevel: 'silent' });
}

/**
 * The file's VSS server on embedded PGlite: started before its tests, closed after them (after
 * the file's own afterAll hooks, which run first). Returns the server once started.
 */
export function useE2eServer(): () => StartedVssServer {
  let server: StartedVssServer | undefined;
  beforeAll(async () => {
    server = await startServer('pglite');
  });
  afterAll(async () => {
    await server?.close();
  });
  return () => {
    if (!server) throw new Error('the e2e server is not started (use it inside a test)');
    return server;
  };
}

export interface Pair {
  fleet: WalletFleet;
  channel: OpenedChannel;
}

export interface OpenPairOptions {
  pushMsat?: bigint;
  zeroConf?: boolean;
  wallet?: Partial<VssWalletOptions>;
  mode?: 'vss-persister' | 'ldk-sync';
  /**
   * One atomic batch per step (default true, the production path): the manager and the monitor
   * updates it covers in one request. `false`: the manager first, then each monitor write.
   */
  atomicBatches?: boolean;
}

/**
 * Wallets A and B on `serverUrl`, connected, with one channel A->B (B was pushed `pushMsat`).
 */
export async function openPair(serverUrl: string, options: OpenPairOptions = {}): Promise<Pair> {
  const fleet = await WalletFleet.create(vssStoreOpener({ serverUrl, ...options.wallet }), {
    storeIdPrefix: `e2e-${randomBytes(4).toString('hex')}`,
    atomicBatches: options.atomicBatches,
  });
  await fleet.addWallet('A', { mode: options.mode });
  await fleet.addWallet('B', { mode: options.mode });
  await fleet.connect('A', 'B');
  const channel = await fleet.openChannel('A', 'B', { pushMsat: options.pushMsat ?? 300_000_000n, zeroConf: options.zeroConf });
  return { fleet, channel };
}

/** How the writes of a fleet's wallets travelled, over every incarnation. */
export interface RequestTally {
  /** Atomic batches that became durable. */
  batches: number;
  /** Batches that carried a ChannelManager and at least one monitor update. */
  managerWithUpdates: number;
  /** Largest number of monitor updates one batch carried. */
  maxUpdatesInOneBatch: number;
  /** Monitor updates durable inside a batch with a manager / written on their own. */
  updatesWithManager: number;
  updatesAlone: number;
}

/** Starts counting request shapes for every current and future wallet of `fleet`. */
export function tallyRequests(fleet: WalletFleet, names: readonly string[] = ['A', 'B']): RequestTally {
  const tally: RequestTally = { batches: 0, managerWithUpdates: 0, maxUpdatesInOneBatch: 0, updatesWithManager: 0, updatesAlone: 0 };
  const watched = new WeakSet<CrashableStore>();
  const watch = (store: CrashableStore): void => {
    if (watched.has(store)) return;
    watched.add(store);
    let seen = store.batches.length;
    store.onWrite((w) => {
      if (w.kind === 'monitor-update' && w.batchSeq === undefined) tally.updatesAlone++;
      // Each batch is complete in `store.batches` once its first write is reported.
      for (; seen < store.batches.length; seen++) {
        const kinds = store.batches[seen].items.map((i) => i.kind);
        const updates = kinds.filter((k) => k === 'monitor-update').length;
        tally.batches++;
        tally.maxUpdatesInOneBatch = Math.max(tally.maxUpdatesInOneBatch, updates);
        if (kinds.includes('manager')) {
          if (updates > 0) tally.managerWithUpdates++;
          tally.updatesWithManager += updates;
        } else {
          tally.updatesAlone += updates;
        }
      }
    });
  };
  for (const name of names) watch(fleet.wallet(name).store);
  fleet.onWallet((w) => watch(w.store));
  return tally;
}

/**
 * The money invariants after anything happened: the channel is open and usable, no HTLC is
 * in flight, both sides agree on both balances, A's balance moved by exactly the payments
 * the receivers claimed, every claimed payment was reported sent, and nobody closed.
 */
export async function expectConsistent(pair: Pair, initialOutboundA: bigint): Promise<void> {
  const { fleet, channel } = pair;
  const a = fleet.node('A');
  const b = fleet.node('B');
  await waitChannelSettled(fleet.net, a, b, channel, { timeoutMs: 30_000 });
  // The sender learns of success through the reestablished channel: let it settle.
  await fleet.net.waitFor(() => fleet.ledger.inconsistencies().length === 0, { timeoutMs: 10_000, what: 'ledger consistent' }).catch(() => {});
  expect(fleet.ledger.inconsistencies()).toEqual([]);
  const expectedA = initialOutboundA - fleet.ledger.claimedMsat('A', 'B') + fleet.ledger.claimedMsat('B', 'A');
  expect(channelView(a, channel)!.outboundMsat).toBe(expectedA);
  expect(fleet.ledger.closures).toEqual([]);
}
