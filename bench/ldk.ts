/**
 * npm run bench:ldk
 *
 * Two in-process LDK nodes (real WASM) paying each other, persisting with:
 *   (a) an in-memory persister that completes every update at once (the baseline),
 *   (b) VssPersister + VssStore over HTTP to the VSS server on the embedded backend (PGlite),
 *   (c) the same on PostgreSQL when TEST_DATABASE_URL is set.
 * The VSS server runs in a worker thread, as a separate server would.
 *
 * (b) runs both nodes on VSS (both wallets' writes share the server and this process); (b1)
 * only the paying wallet (its peer in memory, like a remote node); (b') both, but without
 * ordering monitor writes after the manager (LDK's usual lazy manager persistence).
 *
 * Reported: payments/s one at a time (every payment waits for its own round trips) and with
 * several in flight (LDK batches HTLCs into shared commitment updates), each as the ratio
 * to the baseline measured in the same run, alternating rounds so machine noise hits both;
 * bytes written per payment after 10 and after 1,000 payments; restore time of a node with
 * 20 channels and 1,000 payments, with parallel reads and with one read at a time, and in a
 * fresh process (bench/cold-restore.ts) as well as in this warm one.
 *
 * Environment: BENCH_PAYMENTS (per round, default 20), BENCH_ROUNDS (default 5),
 * BENCH_CONCURRENCY (default 5), BENCH_LONG_PAYMENTS (default 1000), BENCH_CHANNELS (default 20).
 */
import * as ldk from 'lightningdevkit';
import { randomBytes } from 'node:crypto';
import { WalletNetwork } from '../harness/network.js';
import type { WalletNode } from '../harness/node.js';
import { memoryPersistence, vssPersistence, type PersistenceFactory } from '../harness/persistence.js';
import { VssServerThread, type ThreadBackendOption } from '../harness/server-thread.js';
import { initLdk, migrateStore, readChannelMonitors } from '../src/ldk/index.js';
import { VssStore } from '../src/store/index.js';
import { supportsAtomicBatch, type AsyncKVStore, type KeyValueWrite, type StoreKey } from '../src/store/types.js';
import { coldRestore } from './cold-restore.js';
import { median } from './stats.js';
import pg from 'pg';
import { integerSetting } from '../harness/tool-settings.js';
import { cleanUpOnInterrupt } from '../harness/interrupt.js';

const PAYMENTS = integerSetting('BENCH_PAYMENTS', 20);
const ROUNDS = integerSetting('BENCH_ROUNDS', 5);
const CONCURRENCY = integerSetting('BENCH_CONCURRENCY', 5);
const LONG_PAYMENTS = integerSetting('BENCH_LONG_PAYMENTS', 1000);
const CHANNELS = integerSetting('BENCH_CHANNELS', 20);
const TARGET_RATIO = 0.5;
const AMOUNT_MSAT = 1_000n;

/** Counts the plaintext bytes handed to the store, split by what they are. */
class CountingStore implements AsyncKVStore {
  monitorBytes = 0;
  updateBytes = 0;
  managerBytes = 0;
  /** Keys written (a batch counts each of its keys). */
  writes = 0;
  /** Requests that wrote (a batch is one). */
  requests = 0;
  /** Present when the inner store has atomic batches, so the persister uses them as it would. */
  readonly writeBatch?: (writes: readonly KeyValueWrite[]) => Promise<void>;
  constructor(readonly inner: AsyncKVStore) {
    if (supportsAtomicBatch(inner)) {
      this.writeBatch = async (writes) => {
        await inner.writeBatch(writes);
        this.requests++;
        for (const w of writes) this.count(w.primaryNamespace, w.value);
      };
    }
  }
  get total(): number {
    return this.monitorBytes + this.updateBytes + this.managerBytes;
  }
  private count(p: string, v: Uint8Array): void {
    this.writes++;
    if (p === 'monitor_updates') this.updateBytes += v.length;
    else if (p === 'monitors') this.monitorBytes += v.length;
    else this.managerBytes += v.length;
  }
  read(p: string, s: string, k: string): Promise<Uint8Array> {
    return this.inner.read(p, s, k);
  }
  async write(p: string, s: string, k: string, v: Uint8Array): Promise<void> {
    await this.inner.write(p, s, k, v);
    this.requests++;
    this.count(p, v);
  }
  remove(p: string, s: string, k: string, lazy: boolean): Promise<void> {
    return this.inner.remove(p, s, k, lazy);
  }
  list(p: string, s: string): Promise<string[]> {
    return this.inner.list(p, s);
  }
  listAll(): Promise<StoreKey[]> {
    return this.inner.listAll();
  }
}

interface Setup {
  label: string;
  net: WalletNetwork;
  a: WalletNode;
  b: WalletNode;
  storeA?: CountingStore;
}

/** Wallet seeds of the stores opened here, so a restore can reopen them as a new device. */
const storeSeeds = new Map<string, Uint8Array>();

async function openStore(url: string, storeId: string): Promise<VssStore> {
  const seed = storeSeeds.get(storeId) ?? new Uint8Array(randomBytes(64));
  storeSeeds.set(storeId, seed);
  return VssStore.open({ storeId, client: { baseUrl: url }, keys: { seed } });
}

async function setup(label: string, persistence: () => Promise<{ a: PersistenceFactory; b: PersistenceFactory; storeA?: CountingStore }>, channels = 1): Promise<Setup> {
  const net = await WalletNetwork.create();
  const p = await persistence();
  const a = net.addNode({ name: 'A', persistence: p.a });
  const b = net.addNode({ name: 'B', persistence: p.b });
  net.start();
  await net.connect(a, b);
  for (let i = 0; i < channels; i++) await net.openChannel(a, b, { capacitySat: 10_000_000n, timeoutMs: 60_000 });
  return { label, net, a, b, storeA: p.storeA };
}

function vssSetup(url: string, options: { linkManager?: boolean; peerInMemory?: boolean } = {}): () => Promise<{ a: PersistenceFactory; b: PersistenceFactory; storeA: CountingStore }> {
  const linkManager = options.linkManager ?? true;
  return async () => {
    const storeA = new CountingStore(await openStore(url, `bench-a-${randomBytes(4).toString('hex')}`));
    const b = options.peerInMemory ? memoryPersistence() : vssPersistence(await openStore(url, `bench-b-${randomBytes(4).toString('hex')}`), { linkManager });
    return { a: vssPersistence(storeA, { linkManager }), b, storeA };
  };
}

/**
 * payments/s for `count` payments with up to `concurrency` in flight: a new payment starts
 * as soon as one completes (sender PaymentSent, receiver PaymentClaimed); the clock stops
 * when the last one is settled (no HTLC or monitor update pending anywhere).
 */
async function run(s: Setup, count: number, concurrency: number): Promise<number> {
  const started = performance.now();
  let sent = 0;
  const lane = async (): Promise<void> => {
    while (sent < count) {
      sent++;
      const handle = s.net.sendPayment(s.a, s.b, AMOUNT_MSAT);
      await s.net.waitForPayment(handle, { timeoutMs: 120_000 });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  await s.net.waitFor(() => s.net.quiescent(s.a, s.b), { timeoutMs: 120_000, what: 'the channel to settle' });
  return (count * 1000) / (performance.now() - started);
}

/** Alternating rounds over every setup (only the measured network pumps); median per setup. */
async function compare(setups: Setup[], concurrency: number): Promise<number[]> {
  const rates: number[][] = setups.map(() => []);
  for (const s of setups) await s.net.stop();
  for (let round = -1; round < ROUNDS; round++) {
    for (const [i, s] of setups.entries()) {
      s.net.start();
      const rate = await run(s, round < 0 ? Math.max(5, concurrency) : PAYMENTS, concurrency);
      await s.net.stop();
      if (round >= 0) rates[i].push(rate);
    }
  }
  for (const s of setups) s.net.start();
  return rates.map(median);
}

function row(cells: (string | number)[], widths: number[]): string {
  return cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
}

async function main(): Promise<void> {
  await initLdk();
  console.log(`bench:ldk  ${PAYMENTS} payments x ${ROUNDS} rounds (alternating), ${CONCURRENCY} in flight for the concurrent figure\n`);
  const pglite = await VssServerThread.start({ kind: 'pglite' });
  const pgUrl = process.env.TEST_DATABASE_URL;
  let postgres: VssServerThread | undefined;
  // This run's own database on that server, dropped at the end.
  const database = DATABASE_NAME;
  if (pgUrl) {
    const url = new URL(pgUrl);
    url.pathname = `/${database}`;
    postgres = await VssServerThread.start({ kind: 'postgres', url: url.toString(), createDatabase: true } as ThreadBackendOption);
    const server = postgres;
    dropDatabase = async () => {
      await server.close();
      const admin = new pg.Client({ connectionString: pgUrl });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`).finally(() => admin.end());
    };
  }

  const setups: Setup[] = [
    await setup('(a) memory, always Completed', async () => ({ a: memoryPersistence(), b: memoryPersistence() })),
    await setup('(b) VssPersister, HTTP, PGlite', vssSetup(pglite.url)),
    await setup('(b1) same, payer only (peer in memory)', vssSetup(pglite.url, { peerInMemory: true })),
    await setup("(b') same, unlinked from manager", vssSetup(pglite.url, { linkManager: false })),
  ];
  if (postgres) setups.push(await setup('(c) VssPersister, HTTP, PostgreSQL', vssSetup(postgres.url)));

  const sequential = await compare(setups, 1);
  const concurrent = await compare(setups, CONCURRENCY);
  const widths = [40, 14, 8, 14, 8];
  console.log(row(['persistence', 'one at a time', 'ratio', `${CONCURRENCY} in flight`, 'ratio'], widths));
  setups.forEach((s, i) => {
    console.log(
      row(
        [s.label, `${sequential[i].toFixed(1)}/s`, `${(sequential[i] / sequential[0]).toFixed(2)}x`, `${concurrent[i].toFixed(1)}/s`, `${(concurrent[i] / concurrent[0]).toFixed(2)}x`],
        widths,
      ),
    );
  });
  if (!postgres) console.log(row(['(c) PostgreSQL', 'SKIPPED (TEST_DATABASE_URL not set)'], widths));
  for (const s of setups) {
    const loops = [s.a, s.b].flatMap((n) => (n.eventLoop ? [`${n.name}: ${n.eventLoop.stats.managerWrites} manager writes (${n.eventLoop.stats.rewritesForEvents} written again for events queued during a write), ${n.eventLoop.stats.eventsHandled} events`] : []));
    if (loops.length > 0) console.log(`  ${s.label} event loops over all rounds: ${loops.join('; ')}`);
  }
  const ratioSeq = sequential[1] / sequential[0];
  const ratioB = concurrent[1] / concurrent[0];
  const verdict = (r: number): string => (r >= TARGET_RATIO ? 'met' : 'NOT met');
  console.log(
    `\n(b)/(a): ${ratioSeq.toFixed(2)}x one at a time (target >= ${TARGET_RATIO}x: ${verdict(ratioSeq)}), ${ratioB.toFixed(2)}x with ${CONCURRENCY} in flight (${verdict(ratioB)})`,
  );
  console.log(`(b1)/(a): ${(sequential[2] / sequential[0]).toFixed(2)}x one at a time, ${(concurrent[2] / concurrent[0]).toFixed(2)}x with ${CONCURRENCY} in flight (one wallet persisting, as on a phone paying a remote node)`);
  console.log("(b') lets LDK's lazy manager persistence run without ordering: fewer, later manager writes, but a crash between a monitor write and the next manager write makes LDK force-close that channel on restore.");
  for (const s of setups) await s.net.shutdown();

  // ---- bytes per payment and restore time on a long-lived node ----
  console.log(`\nlong run: ${CHANNELS} channels, ${LONG_PAYMENTS} payments (VssPersister on PGlite)`);
  const long = await setup('long', vssSetup(pglite.url), CHANNELS);
  const storeA = long.storeA!;
  // Quiescence alone does not mean the payer's store is idle: the chain-sync monitor writes of
  // the last channel opens and the manager writes that follow them (or a payment's last step)
  // land later. Both window edges wait until every write has landed and a short pause brings no
  // new one, so a window counts its own payments' writes: not the setup's, nor the previous run's.
  const settle = async (): Promise<void> => {
    for (;;) {
      const writes = storeA.writes;
      await long.net.waitFor(() => long.net.quiescent(long.a, long.b), { timeoutMs: 120_000, what: 'the channels to settle' });
      await long.a.eventLoop!.persistIfNeeded();
      await long.a.persistence.vssPersister!.flush();
      await long.net.runFor(250);
      if (storeA.writes === writes) return;
    }
  };
  const window = async (label: string): Promise<void> => {
    await settle();
    const before = { total: storeA.total, monitor: storeA.monitorBytes, update: storeA.updateBytes, manager: storeA.managerBytes, writes: storeA.writes, requests: storeA.requests };
    await run(long, 10, 1);
    await settle();
    const per = (x: number): string => `${Math.round(x / 10)} B`;
    console.log(
      `  ${label.padEnd(20)} ${per(storeA.total - before.total).padStart(8)} per payment (updates ${per(storeA.updateBytes - before.update)}, full monitors ${per(storeA.monitorBytes - before.monitor)}, manager ${per(storeA.managerBytes - before.manager)}; ${((storeA.writes - before.writes) / 10).toFixed(1)} keys written in ${((storeA.requests - before.requests) / 10).toFixed(1)} requests)`,
    );
  };
  await window('payments 1-10');
  const started = performance.now();
  await run(long, LONG_PAYMENTS - 20, CONCURRENCY);
  console.log(`  (payments 11-${LONG_PAYMENTS - 10}: ${(((LONG_PAYMENTS - 20) * 1000) / (performance.now() - started)).toFixed(1)}/s with ${CONCURRENCY} in flight)`);
  await window(`payments ${LONG_PAYMENTS - 9}-${LONG_PAYMENTS}`);

  await long.a.eventLoop!.persistIfNeeded();
  await long.a.persistence.vssPersister!.flush();
  const storeId = (storeA.inner as VssStore).storeId;
  const seed = long.a.seed;
  await long.net.crash(long.a);
  await (storeA.inner as VssStore).flush();
  const keysInStore = (await storeA.listAll()).length;

  // Reading every monitor with its updates, in parallel and one request at a time.
  const keys = ldk.KeysManager.constructor_new(seed, BigInt(Math.floor(Date.now() / 1000)), 1);
  const ctx = {
    entropySource: keys.as_EntropySource(),
    signerProvider: keys.as_SignerProvider(),
    broadcaster: long.a.broadcaster,
    feeEstimator: long.a.feeEstimator,
    logger: long.a.logger,
  };
  const readTime = async (store: AsyncKVStore, concurrency: number): Promise<number> => {
    const t = performance.now();
    const monitors = await readChannelMonitors(store, ctx, { concurrency });
    if (monitors.length !== CHANNELS) throw new Error(`read ${monitors.length} monitors, expected ${CHANNELS}`);
    return performance.now() - t;
  };
  const readTimes = async (store: AsyncKVStore): Promise<{ sequential: number; parallel: number }> => {
    // An unreported first read: whichever way is measured first would otherwise also pay for
    // compiling the read path and the first decode of every monitor (about 30 ms here).
    await readTime(store, 16);
    const sequential = await readTime(store, 1);
    const parallel = await readTime(store, 16);
    return { sequential, parallel };
  };
  const onPglite = await readTimes(storeA.inner);

  const report = (label: string, r: { sequential: number; parallel: number }): void =>
    console.log(`  reading all monitors with updates (${label}): ${r.parallel.toFixed(0)} ms with 16 requests in flight, ${r.sequential.toFixed(0)} ms one at a time (${(r.sequential / r.parallel).toFixed(1)}x)`);
  report('PGlite', onPglite);
  if (postgres) {
    // The same store copied (and verified) to the PostgreSQL server, whose pool serves reads in parallel.
    const copy = await openStore(postgres.url, storeId);
    const migrated = await migrateStore(storeA.inner, copy);
    console.log(`  migrateStore to PostgreSQL: ${migrated.keys} keys, ${Math.round(migrated.bytes / 1024)} KiB in ${migrated.durationMs.toFixed(0)} ms`);
    report('PostgreSQL', await readTimes(copy));
  } else {
    console.log('  reading on PostgreSQL: SKIPPED (TEST_DATABASE_URL not set)');
  }
  // A new device, in a fresh process: nothing compiled or cached, as on a phone restoring a wallet.
  // It restores a copy of the store: a restore re-persists every monitor it watches (and drops
  // the replayed deltas), so the warm restore below would otherwise start from different data.
  const coldStoreId = `${storeId}-cold`;
  storeSeeds.set(coldStoreId, storeSeeds.get(storeId)!);
  await migrateStore(storeA.inner, await openStore(pglite.url, coldStoreId));
  const cold = await coldRestore({ serverUrl: pglite.url, storeId: coldStoreId, storeSeed: storeSeeds.get(coldStoreId)!, nodeSeed: seed, blocks: long.net.chain.blocksAfter(0) });
  console.log(
    `  restore in a fresh process: ${(cold.initLdkMs + cold.openMs + cold.restoreMs).toFixed(0)} ms (LDK WebAssembly ${cold.initLdkMs.toFixed(0)} ms, ` +
      `store open ${cold.openMs.toFixed(0)} ms, restoreNode ${cold.restoreMs.toFixed(0)} ms: ${cold.monitors} monitors, ${cold.updatesApplied} updates replayed, ` +
      `${Math.round(cold.bytesRead / 1024)} KiB read), after ${cold.startupMs.toFixed(0)} ms of process start and module loading under tsx; ${cold.wallMs.toFixed(0)} ms from fork to restored node`,
  );
  // The same in this (warm) process: open the store (one listing of every key), then restore the node.
  const restoreStarted = performance.now();
  const fresh = await openStore(pglite.url, storeId);
  const openMs = performance.now() - restoreStarted;
  const { restored } = await long.net.restoreNode({ name: 'A', seed, persistence: vssPersistence(fresh) });
  const restoreMs = performance.now() - restoreStarted;
  console.log(
    `  store holds ${keysInStore} keys; restore in this warm process: ${restoreMs.toFixed(0)} ms (store open ${openMs.toFixed(0)} ms, restoreNode ${restored.stats.durationMs.toFixed(0)} ms: ${restored.stats.monitors} monitors, ${restored.stats.updatesApplied} updates replayed, ${Math.round(restored.stats.bytesRead / 1024)} KiB read)`,
  );
  await long.net.shutdown();
  await pglite.close();
}

/** This run's own PostgreSQL database (with TEST_DATABASE_URL). */
const DATABASE_NAME = `ldkvss_ldk_${process.pid}`;
/** Drops this run's PostgreSQL database (set once it exists); also run when the benchmark fails. */
let dropDatabase: (() => Promise<void>) | undefined;
// Ctrl-C would otherwise skip the clean-up below and leave the PostgreSQL database behind.
cleanUpOnInterrupt(
  (signal) => `bench:ldk interrupted (${signal})${process.env.TEST_DATABASE_URL ? `: dropping its database ${DATABASE_NAME}` : ''}`,
  async () => {
    if (dropDatabase) return dropDatabase();
    // Interrupted while the PostgreSQL server was starting: its database may exist already.
    const pgUrl = process.env.TEST_DATABASE_URL;
    if (!pgUrl) return;
    const admin = new pg.Client({ connectionString: pgUrl });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS "${DATABASE_NAME}" WITH (FORCE)`).finally(() => admin.end());
  },
);

main()
  .finally(() => dropDatabase?.().catch((err: unknown) => console.error('could not drop the benchmark database:', err)))
  .then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
