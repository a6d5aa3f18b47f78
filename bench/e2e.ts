/**
 * npm run bench:e2e
 *
 * Payments per second and time-to-durable per monitor update through the harness: two LDK
 * wallets, both persisting through VssPersister + VssStore over HTTP to a real VSS server,
 * paying each other over one channel. Configurations: the embedded backend (PGlite) and
 * PostgreSQL (when reachable), each direct and through the fault proxy adding 20 ms to every
 * request. The baseline, measured in the same run, is the same two nodes with an in-memory
 * persister that completes every update at once; ratios are against it.
 *
 * Time-to-durable is VssPersister's own measure: from LDK handing over the update to the
 * server acknowledging it (it includes waiting for the ChannelManager write that must
 * precede the monitor update, see VssPersister.linkManagerWriter).
 *
 * Environment: BENCH_PAYMENTS (default 60 per configuration), BENCH_DATABASE_URL (the
 * PostgreSQL server to use; default TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres:
 * the run creates its own database ldkvss_e2e_<pid> there and drops it afterwards),
 * BENCH_LATENCY_MS (default 20). Results: a table on stdout and bench/results/e2e-<time>.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { Client } from 'pg';
import { startVssServer, type BackendOption, type StartedVssServer } from '../src/server/index.js';
import { FaultProxy } from '../harness/fault-proxy.js';
import { WalletNetwork } from '../harness/network.js';
import { memoryPersistence } from '../harness/persistence.js';
import { PersistenceMeter } from '../harness/wallet-metrics.js';
import { percentile, table } from '../src/ldk/report-format.js';
import { vssStoreOpener } from '../harness/vss-wallet.js';
import { WalletFleet } from '../harness/wallets.js';
import { integerSetting } from '../harness/tool-settings.js';
import { cleanUpOnInterrupt } from '../harness/interrupt.js';

const PAYMENTS = integerSetting('BENCH_PAYMENTS', 60);
const WARMUP = 5;
const LATENCY_MS = integerSetting('BENCH_LATENCY_MS', 20, 0);
const POSTGRES_URL = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** This run's own database on that server (created by the VSS server, dropped at the end). */
const DATABASE = `ldkvss_e2e_${process.pid}`;
const DATABASE_URL = withDatabase(POSTGRES_URL, DATABASE);
// Ctrl-C would otherwise skip the clean-up at the end and leave the database behind.
cleanUpOnInterrupt(
  (signal) => `bench:e2e interrupted (${signal}): dropping its database ${DATABASE}`,
  async () => {
    await onPostgres((client) => client.query(`DROP DATABASE IF EXISTS "${DATABASE}" WITH (FORCE)`));
  },
);

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}
const AMOUNT_MSAT = 5_000_000n;

interface Result {
  configuration: string;
  backend: string;
  addedLatencyMs: number;
  payments: number;
  paymentsPerSec: number;
  ratioToBaseline: number | null;
  monitorWrites: number;
  timeToDurableP50Ms: number | null;
  timeToDurableP99Ms: number | null;
  bytesPerPayment: number | null;
  skipped?: string;
}

const yieldTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

async function baseline(): Promise<number> {
  const net = await WalletNetwork.create();
  const a = net.addNode({ name: 'A', persistence: memoryPersistence() });
  const b = net.addNode({ name: 'B', persistence: memoryPersistence() });
  net.start();
  try {
    await net.connect(a, b);
    await net.openChannel(a, b, { pushMsat: 300_000_000n });
    // Settled, as in `measure`: the same work per payment on both sides of the ratio (without it
    // the next payment overlaps the last commitment round trip, which (a) alone would gain from).
    for (let i = 0; i < WARMUP; i++) await net.pay(i % 2 ? b : a, i % 2 ? a : b, AMOUNT_MSAT, { settled: true });
    const start = performance.now();
    for (let i = 0; i < PAYMENTS; i++) {
      await net.pay(i % 2 ? b : a, i % 2 ? a : b, AMOUNT_MSAT, { settled: true });
      await yieldTurn();
    }
    return PAYMENTS / ((performance.now() - start) / 1000);
  } finally {
    await net.shutdown();
  }
}

async function measure(serverUrl: string): Promise<Omit<Result, 'configuration' | 'backend' | 'addedLatencyMs' | 'ratioToBaseline'>> {
  const fleet = await WalletFleet.create(vssStoreOpener({ serverUrl, timeoutMs: 10_000 }), { storeIdPrefix: `bench-${Date.now().toString(36)}` });
  try {
    await fleet.addWallet('A');
    await fleet.addWallet('B');
    await fleet.connect('A', 'B');
    await fleet.openChannel('A', 'B', { pushMsat: 300_000_000n });
    for (let i = 0; i < WARMUP; i++) await fleet.pay(i % 2 ? 'B' : 'A', i % 2 ? 'A' : 'B', AMOUNT_MSAT, { settled: true });
    const meter = new PersistenceMeter(fleet, ['A', 'B']);
    const start = performance.now();
    for (let i = 0; i < PAYMENTS; i++) {
      // Settled: the next payment starts once every monitor update of this one is durable.
      await fleet.pay(i % 2 ? 'B' : 'A', i % 2 ? 'A' : 'B', AMOUNT_MSAT, { settled: true, timeoutMs: 60_000 });
      await yieldTurn();
    }
    const seconds = (performance.now() - start) / 1000;
    const figures = meter.snapshot();
    return {
      payments: PAYMENTS,
      paymentsPerSec: PAYMENTS / seconds,
      monitorWrites: figures.monitorLatenciesMs.length,
      timeToDurableP50Ms: percentile(figures.monitorLatenciesMs, 50),
      timeToDurableP99Ms: percentile(figures.monitorLatenciesMs, 99),
      bytesPerPayment: figures.bytesWritten / PAYMENTS,
    };
  } finally {
    await fleet.shutdown();
  }
}

/** Runs `work` on the PostgreSQL server's maintenance database, or says why it cannot be reached. */
async function onPostgres<T>(work: (client: Client) => Promise<T>): Promise<{ value: T } | { problem: string }> {
  const admin = withDatabase(DATABASE_URL, 'postgres');
  const client = new Client({ connectionString: admin, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    return { value: await work(client) };
  } catch (err) {
    return { problem: `PostgreSQL not reachable at ${new URL(admin).host} (${(err as Error).message})` };
  } finally {
    await client.end().catch(() => {});
  }
}

async function postgresReachable(): Promise<string | undefined> {
  const outcome = await onPostgres((client) => client.query('select 1'));
  return 'problem' in outcome ? outcome.problem : undefined;
}

async function run(): Promise<void> {
  console.log(`bench:e2e — ${PAYMENTS} payments per configuration (after ${WARMUP} warm-up), alternating directions, both wallets persisting to VSS`);
  const baselinePps = await baseline();
  console.log(`baseline (in-memory persister, nothing stored): ${baselinePps.toFixed(1)} payments/s`);
  const results: Result[] = [
    { configuration: 'baseline: in-memory persister', backend: 'none', addedLatencyMs: 0, payments: PAYMENTS, paymentsPerSec: baselinePps, ratioToBaseline: 1, monitorWrites: 0, timeToDurableP50Ms: null, timeToDurableP99Ms: null, bytesPerPayment: null },
  ];
  const backends: { label: string; option: BackendOption; skipped?: string }[] = [{ label: 'PGlite (embedded)', option: 'pglite' }];
  const pgProblem = await postgresReachable();
  backends.push({ label: 'PostgreSQL', option: { kind: 'postgres', url: DATABASE_URL, createDatabase: true }, skipped: pgProblem });

  for (const backend of backends) {
    for (const latency of [0, LATENCY_MS]) {
      const configuration = `${backend.label}${latency ? ` + ${latency} ms per request (fault proxy)` : ''}`;
      if (backend.skipped) {
        results.push({ configuration, backend: backend.label, addedLatencyMs: latency, payments: 0, paymentsPerSec: 0, ratioToBaseline: null, monitorWrites: 0, timeToDurableP50Ms: null, timeToDurableP99Ms: null, bytesPerPayment: null, skipped: backend.skipped });
        console.log(`${configuration}: SKIPPED (${backend.skipped})`);
        continue;
      }
      let server: StartedVssServer | undefined;
      let proxy: FaultProxy | undefined;
      try {
        server = await startVssServer({ backend: backend.option, logLevel: 'silent' });
        let url = server.url;
        if (latency) {
          proxy = await FaultProxy.start({ target: server.url });
          proxy.setLatency({ perRequestMs: latency });
          url = `${proxy.url}/vss`;
        }
        const m = await measure(url);
        const result: Result = { configuration, backend: backend.label, addedLatencyMs: latency, ratioToBaseline: m.paymentsPerSec / baselinePps, ...m };
        results.push(result);
        console.log(`${configuration}: ${m.paymentsPerSec.toFixed(1)} payments/s, time-to-durable p50 ${m.timeToDurableP50Ms?.toFixed(1)} ms, p99 ${m.timeToDurableP99Ms?.toFixed(1)} ms`);
      } finally {
        await proxy?.close();
        await server?.close();
      }
    }
  }

  const fmt = (n: number | null, digits = 1): string => (n === null || !Number.isFinite(n) ? '-' : n.toFixed(digits));
  console.log();
  console.log(
    table([
      ['configuration', 'payments/s', 'x baseline', 'durable p50 ms', 'durable p99 ms', 'monitor writes', 'KB written/payment'],
      ...results.map((r) =>
        r.skipped
          ? [r.configuration, 'SKIPPED', '-', '-', '-', '-', '-']
          : [r.configuration, fmt(r.paymentsPerSec), fmt(r.ratioToBaseline, 3), fmt(r.timeToDurableP50Ms), fmt(r.timeToDurableP99Ms), String(r.monitorWrites || '-'), r.bytesPerPayment === null ? '-' : fmt(r.bytesPerPayment / 1024)],
      ),
    ]),
  );
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `e2e-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ benchmark: 'e2e', date: new Date().toISOString(), node: process.version, payments: PAYMENTS, warmup: WARMUP, results }, null, 2) + '\n');
  console.log(`\nwritten to ${file}`);
}

run()
  .finally(() => onPostgres((client) => client.query(`DROP DATABASE IF EXISTS "${DATABASE}" WITH (FORCE)`)))
  .then(
    () => setTimeout(() => process.exit(0), 500).unref(),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
