/**
 * npm run stress:payments
 *
 * Two in-process LDK nodes paying each other in rounds of 20 payments, alternately one at a
 * time and several in flight, for as long as it takes LDK to go wrong: a tool for timing-
 * dependent failures that a test run of a few hundred payments catches only sometimes. It found
 * LDK 0.1.0's "Attempted to apply ChannelMonitorUpdates out of order" panic (docs/ldk.md,
 * "Payment outcomes go out at once"). A round that finishes prints the event loops' counters; a
 * panic ends the process with LDK's message (LDK_LOG=trace shows what led to it).
 *
 * Environment:
 *   STRESS_SETUP    linked (default): both wallets on VssPersister, linked to the event loop;
 *                   unlinked: the same without the link; payer-only: the payee in memory;
 *                   ldk-sync: LDK's MonitorUpdatingPersister over the blocking store view
 *   STRESS_ROUNDS   rounds of 20 payments (default 40)
 *   STRESS_IN_FLIGHT payments in flight in the odd rounds (default 5)
 *   STRESS_DELAY_MS extra delay before each of the payer's writes (default 0)
 *   STRESS_DATABASE_URL  run the VSS server on this PostgreSQL server (in a database
 *                   `ldk_vss_stress_<pid>`, dropped at the end, also after a failure or Ctrl-C)
 *                   instead of embedded PGlite
 *   LDK_LOG         trace or debug: LDK's log lines to stderr (default: errors only)
 */
import { randomBytes } from 'node:crypto';
import * as ldk from 'lightningdevkit';
import pg from 'pg';
import { initLdk } from '../src/ldk/index.js';
import { VssStore } from '../src/store/index.js';
import { supportsAtomicBatch, type AsyncKVStore } from '../src/store/types.js';
import { WalletNetwork } from './network.js';
import { ldkMonitorUpdatingPersistence, memoryPersistence, vssPersistence, type PersistenceFactory } from './persistence.js';
import { VssServerThread } from './server-thread.js';
import { cleanUpOnInterrupt } from './interrupt.js';
import { choiceSetting, integerSetting, postgresUrlSetting } from './tool-settings.js';
import { wrapStore } from './wrapped-store.js';

const SETUPS = ['linked', 'unlinked', 'payer-only', 'ldk-sync'] as const;
type Setup = (typeof SETUPS)[number];
const PAYMENTS_PER_ROUND = 20;

/** The store with every write (and batch) delayed by `delayMs`: a slow link to the server. */
function delayedWrites(inner: AsyncKVStore, delayMs: number): AsyncKVStore {
  if (delayMs === 0) return inner;
  const sleep = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, delayMs));
  return wrapStore(inner, {
    write: async (p, s, k, v) => {
      await sleep();
      await inner.write(p, s, k, v);
    },
    writeBatch: supportsAtomicBatch(inner)
      ? async (writes) => {
          await sleep();
          await inner.writeBatch(writes);
        }
      : undefined,
  });
}

async function main(): Promise<void> {
  const setup: Setup = choiceSetting('STRESS_SETUP', SETUPS, 'linked');
  const rounds = integerSetting('STRESS_ROUNDS', 40);
  const inFlight = integerSetting('STRESS_IN_FLIGHT', 5);
  const delayMs = integerSetting('STRESS_DELAY_MS', 0, 0);
  const logLevel = process.env.LDK_LOG === 'trace' ? ldk.Level.LDKLevel_Trace : process.env.LDK_LOG === 'debug' ? ldk.Level.LDKLevel_Debug : ldk.Level.LDKLevel_Error;
  const databaseUrl = postgresUrlSetting('STRESS_DATABASE_URL');

  await initLdk();
  const database = `ldk_vss_stress_${process.pid}`;
  // From here on the run owns a server (and on PostgreSQL a database): Ctrl-C or a kill must
  // not leave them behind, so a signal cleans up before the process exits.
  const starting = databaseUrl
    ? VssServerThread.start({ kind: 'postgres', url: withDatabase(databaseUrl, database), createDatabase: true })
    : VssServerThread.start({ kind: 'pglite' });
  let network: WalletNetwork | undefined;
  cleanUp = once(async () => {
    await network?.shutdown().catch(() => {});
    const server = await starting.catch(() => undefined);
    await server?.close();
    // A server that never started may still have created the database.
    if (databaseUrl) await dropDatabase(databaseUrl, database).catch((err: unknown) => (server ? Promise.reject(err) : undefined));
  });
  const server = await starting.catch(async (err: unknown) => {
    await cleanUp();
    throw new SetupError(`cannot start the VSS server on ${databaseUrl ? 'PostgreSQL (STRESS_DATABASE_URL)' : 'embedded PGlite'}: ${err instanceof Error ? err.message : String(err)}`);
  });
  const persistence = async (name: string, delay: number): Promise<PersistenceFactory> => {
    const store = await VssStore.open({
      storeId: `stress-${name}-${randomBytes(4).toString('hex')}`,
      client: { baseUrl: server.url },
      keys: { seed: new Uint8Array(randomBytes(64)) },
    });
    if (setup === 'ldk-sync') return ldkMonitorUpdatingPersistence(store.toSyncStore(), store);
    return vssPersistence(delayedWrites(store, delay), { linkManager: setup !== 'unlinked' });
  };

  const net = await WalletNetwork.create();
  network = net;
  // The database is dropped and the server stopped whatever happens: a failing run (a timeout,
  // an LDK panic: what this tool exists to find) must not leave them behind.
  try {
    const a = net.addNode({ name: 'A', persistence: await persistence('a', delayMs), logLevel });
    const b = net.addNode({ name: 'B', persistence: setup === 'payer-only' ? memoryPersistence() : await persistence('b', 0), logLevel });
    net.start();
    await net.connect(a, b);
    await net.openChannel(a, b, { capacitySat: 10_000_000n, timeoutMs: 60_000 });
    console.log(`stress:payments  setup ${setup}, ${rounds} rounds of ${PAYMENTS_PER_ROUND} payments (odd rounds ${inFlight} in flight), payer writes delayed ${delayMs} ms, ${databaseUrl ? 'PostgreSQL' : 'PGlite'}`);

    for (let round = 0; round < rounds; round++) {
      const lanes = round % 2 === 0 ? 1 : inFlight;
      let started = 0;
      const lane = async (): Promise<void> => {
        while (started < PAYMENTS_PER_ROUND) {
          started++;
          await net.waitForPayment(net.sendPayment(a, b, 1_000n), { timeoutMs: 120_000 });
        }
      };
      await Promise.all(Array.from({ length: lanes }, lane));
      await net.waitFor(() => net.quiescent(a, b), { timeoutMs: 120_000, what: 'the channel to settle' });
      const counters = [a, b].flatMap((n) => (n.eventLoop ? [`${n.name} ${JSON.stringify(n.eventLoop.stats)}`] : []));
      console.log(`round ${round + 1}/${rounds} done (${lanes} in flight); ${counters.join('; ')}`);
    }
    console.log(`${rounds * PAYMENTS_PER_ROUND} payments, no failure`);
  } finally {
    await cleanUp();
  }
}

/** A run that could not start; its message is the one line the user sees. */
class SetupError extends Error {}

function withDatabase(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

async function dropDatabase(serverUrl: string, database: string): Promise<void> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= fn());
}

/** Stops the run's server and drops its database; set once there is something to clean up. */
let cleanUp: () => Promise<void> = async () => {};
const interruption = cleanUpOnInterrupt(
  (signal) => `stress:payments interrupted (${signal}): stopping its VSS server${process.env.STRESS_DATABASE_URL ? ' and dropping its database' : ''}`,
  () => cleanUp(),
);

main().then(
  () => process.exit(0),
  (err: unknown) => {
    // Interrupted: the payments fail as the wallets shut down; the signal handler exits.
    if (interruption.interrupted) return;
    console.error(err instanceof SetupError ? `stress:payments: ${err.message}` : err);
    process.exit(1);
  },
);
