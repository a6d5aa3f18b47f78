/**
 * `npm run demo`: watch ldk-vss keep a Lightning channel safe.
 *
 * Starts a VSS server on the embedded backend (or uses yours), creates two LDK wallets that
 * persist every channel update to it, opens a channel, makes payments, crashes one wallet in
 * the middle of a payment, restores it from the server with nothing but its seed and store
 * id, pays again, and prints what was persisted and how fast.
 *
 *   npm run demo                                  # 50 payments, embedded PGlite server
 *   npm run demo -- --payments 200
 *   npm run demo -- --postgres postgres://postgres@127.0.0.1:5432/vss_demo
 *   npm run demo -- --server-url http://127.0.0.1:8080/vss [--auth none]
 */
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import cliProgress from 'cli-progress';
import { startVssServer, type StartedVssServer } from '../src/server/index.js';
import { channelView, waitChannelSettled } from './wallet-ops.js';
import { PersistenceMeter, type PersistenceFigures } from './wallet-metrics.js';
import { formatBytes, formatMs, percentile } from '../src/ldk/report-format.js';
import { vssStoreOpener } from './vss-wallet.js';
import { WalletFleet } from './wallets.js';
import type { LedgerEntry } from './wallet-ledger.js';
import type { PendingWriteInfo } from '../src/ldk/index.js';

export interface DemoOptions {
  /** Payments before the crash (default 50); a few more follow the restore. */
  payments?: number;
  /** Use this server (base URL including /vss) instead of starting one. */
  serverUrl?: string;
  /** Auth of the external server: LDK Node's signature auth (default) or none. */
  auth?: 'sigs' | 'none';
  /** Start the server on this PostgreSQL database instead of the embedded backend. */
  postgresUrl?: string;
  /** Where progress and the report go (default stdout). */
  out?: NodeJS.WritableStream;
  /** Draw the progress bar (default: when `out` is a TTY). */
  progressBar?: boolean;
}

export interface DemoSummary {
  backend: string;
  serverUrl: string;
  paymentsSucceeded: number;
  paymentsFailed: number;
  /** The payment in flight when the wallet crashed: what became of it after the restore. */
  /** 'pending' after 10 s without an outcome: neither side done, or only one (e.g. bob claimed, alice not told). */
  interruptedPayment: 'completed' | 'failed' | 'pending';
  crashedAt: string;
  persisted: Omit<PersistenceFigures, 'monitorLatenciesMs'>;
  persistLatencyMs: { p50: number; p99: number; samples: number };
  restore: { totalMs: number; readMs: number; monitors: number; updatesApplied: number; bytesRead: number };
  forceCloses: number;
  balancesAgree: boolean;
  durationMs: number;
}

/** The demo cannot go on; its message is the one line the user sees. */
export class DemoError extends Error {
  override readonly name = 'DemoError';
}

const CAPACITY_SAT = 1_000_000n;
const PUSH_MSAT = 300_000_000n;
const PAYMENTS_AFTER_RESTORE = 5;
/** How long the crash step waits for alice's 2nd monitor update of the payment to be durable. */
const CRASH_POINT_TIMEOUT_MS = 30_000;

function amountFor(i: number): bigint {
  return BigInt(1_000_000 + ((i * 7_919) % 9_000_000)); // 1,000 to 10,000 sat
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoSummary> {
  const started = performance.now();
  const out = options.out ?? process.stdout;
  const say = (line = ''): void => void out.write(`${line}\n`);
  const payments = options.payments ?? 50;
  if (!Number.isInteger(payments) || payments < 1) throw new RangeError(`--payments must be a positive integer, got ${payments}`);

  let server: StartedVssServer | undefined;
  let serverUrl = options.serverUrl;
  let backend = 'external server';
  if (!serverUrl) {
    backend = options.postgresUrl ? 'PostgreSQL' : 'embedded PGlite';
    say(`Starting a VSS server on ${backend}...`);
    server = await startVssServer({
      backend: options.postgresUrl ? { kind: 'postgres', url: options.postgresUrl, createDatabase: true } : 'pglite',
      logLevel: 'silent',
    }).catch((err: unknown) => {
      // Alone, the driver's error ("connect ECONNREFUSED ...") does not say which server it was about.
      throw new DemoError(`cannot start the demo's VSS server on ${backend}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    serverUrl = server.url;
  }
  say(`VSS server: ${serverUrl}`);

  let fleet: WalletFleet;
  try {
    fleet = await WalletFleet.create(vssStoreOpener({ serverUrl, auth: options.auth }), { storeIdPrefix: `demo-${Date.now().toString(36)}` });
  } catch (err) {
    // The finally below does not cover this step: close the server started above here.
    await server?.close();
    throw err;
  }
  // Stopped in the finally too: a bar left running keeps the terminal's cursor hidden.
  let bar: cliProgress.SingleBar | undefined;
  try {
    const alice = await fleet.addWallet('alice');
    await fleet.addWallet('bob');
    const meter = new PersistenceMeter(fleet, ['alice', 'bob']);
    say(`Wallets: alice (store ${alice.storeId}) and bob, each persisting to VSS through VssPersister`);
    await fleet.connect('alice', 'bob');
    const channel = await fleet.openChannel('alice', 'bob', { capacitySat: CAPACITY_SAT, pushMsat: PUSH_MSAT });
    say(`Channel open: ${CAPACITY_SAT.toLocaleString('en-US')} sat, confirmed, usable (funding ${channel.fundingTxid.slice(0, 16)}...)`);
    const initialAlice = channelView(fleet.node('alice'), channel)!.outboundMsat;

    let failed = 0;
    bar = options.progressBar ?? Boolean((out as NodeJS.WriteStream).isTTY)
      ? new cliProgress.SingleBar({ stream: out, format: 'Payments |{bar}| {value}/{total}  {rate} payments/s', hideCursor: true }, cliProgress.Presets.shades_classic)
      : undefined;
    bar?.start(payments, 0, { rate: '0' });
    const payStart = performance.now();
    // A payment can fail for LDK's own reasons; one that failed because the wallets' writes no
    // longer reach the server ends the demo, as every later step would wait on those writes.
    const payOrCount = async (from: string, to: string, amountMsat: bigint): Promise<void> => {
      try {
        await fleet.pay(from, to, amountMsat, { settled: true });
      } catch {
        failed++;
        const trouble = persistenceTrouble(fleet, ['alice', 'bob'], serverUrl);
        if (trouble !== undefined) throw new DemoError(`a payment failed: ${trouble}`);
      }
    };
    for (let i = 0; i < payments; i++) {
      const [from, to] = i % 3 === 2 ? ['bob', 'alice'] : ['alice', 'bob'];
      await payOrCount(from, to, amountFor(i));
      bar?.update(i + 1, { rate: ((i + 1) / ((performance.now() - payStart) / 1000)).toFixed(1) });
      if (!bar && (i + 1) % Math.max(1, Math.floor(payments / 5)) === 0) say(`  ${i + 1}/${payments} payments`);
      await new Promise((r) => setImmediate(r));
    }
    bar?.stop();
    const paymentsPerSec = payments / ((performance.now() - payStart) / 1000);
    say(`${payments - failed} payments done (${paymentsPerSec.toFixed(1)}/s), every monitor update durable on the server before it was released`);

    // Crash alice in the middle of a payment: right after its second monitor update of the
    // payment is durable and before alice hears back (nothing she still had queued is sent).
    const crashed = fleet.crashAt('alice', { kind: 'monitor-update', ordinal: 2, timing: 'after-durable' });
    const interrupted = fleet.sendPayment('alice', 'bob', 4_242_000n);
    // The crash point is a write becoming durable: if none can, it would never come.
    let waited: NodeJS.Timeout | undefined;
    const crash = await Promise.race([
      crashed,
      new Promise<never>((_, reject) => {
        waited = setTimeout(() => {
          const why = persistenceTrouble(fleet, ['alice', 'bob'], serverUrl) ?? `the payment did not get that far\n${fleet.net.describe()}`;
          reject(new DemoError(`alice's crash point (her 2nd monitor update of a payment durable on the server) was not reached within ${CRASH_POINT_TIMEOUT_MS / 1000} s: ${why}`));
        }, CRASH_POINT_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(waited));
    const crashedAt = `after monitor update ${crash.key.key} of channel ${crash.key.secondaryNamespace.slice(0, 12)}... was durable, before alice learned it`;
    say(`alice CRASHED mid-payment (${crashedAt})`);

    const restoreStart = performance.now();
    const restored = await fleet.restore('alice');
    await waitChannelSettled(fleet.net, fleet.node('alice'), fleet.node('bob'), channel, { timeoutMs: 30_000 });
    const restoreTotalMs = performance.now() - restoreStart;
    const stats = restored.restoreStats!;
    say(`alice RESTORED from VSS with only her seed and store id: ${stats.monitors} channel monitor, ${stats.updatesApplied} updates applied, ${formatBytes(stats.bytesRead)} read in ${formatMs(stats.durationMs)}; channel reestablished in ${formatMs(restoreTotalMs)} total`);
    const entry = fleet.ledger.get(interrupted.paymentHash)!;
    // Wait for an outcome (both sides done, or failed), not for the two flags to be equal:
    // both are still false while the payment is on its way.
    await fleet.net.waitFor(() => paymentOutcome(entry) !== undefined, { timeoutMs: 10_000, what: 'the interrupted payment to settle' }).catch(() => {});
    const interruptedPayment = paymentOutcome(entry) ?? 'pending';
    const interruptedText = {
      completed: 'completed after the restore (bob was paid exactly once)',
      failed: 'failed (no funds moved)',
      pending: `still pending after 10 s (bob claimed it: ${entry.claimed ? 'yes' : 'no'}; alice told it was sent: ${entry.sent ? 'yes' : 'no'})`,
    }[interruptedPayment];
    say(`The interrupted payment: ${interruptedText}`);

    for (let i = 0; i < PAYMENTS_AFTER_RESTORE; i++) {
      const [from, to] = i % 2 === 0 ? ['alice', 'bob'] : ['bob', 'alice'];
      await payOrCount(from, to, amountFor(payments + i));
    }
    say(`alice paid again after the restore: ${PAYMENTS_AFTER_RESTORE} more payments`);

    const a = channelView(fleet.node('alice'), channel)!;
    const b = channelView(fleet.node('bob'), channel)!;
    const expectedAlice = initialAlice - fleet.ledger.claimedMsat('alice', 'bob') + fleet.ledger.claimedMsat('bob', 'alice');
    const balancesAgree = a.outboundMsat === b.inboundMsat && a.inboundMsat === b.outboundMsat && a.outboundMsat === expectedAlice;
    const figures = meter.snapshot();
    const { monitorLatenciesMs, ...persisted } = figures;
    const summary: DemoSummary = {
      backend,
      serverUrl,
      paymentsSucceeded: fleet.ledger.all().filter((e) => e.sent && e.claimed).length,
      paymentsFailed: failed,
      interruptedPayment,
      crashedAt,
      persisted,
      persistLatencyMs: { p50: percentile(monitorLatenciesMs, 50), p99: percentile(monitorLatenciesMs, 99), samples: monitorLatenciesMs.length },
      restore: { totalMs: restoreTotalMs, readMs: stats.durationMs, monitors: stats.monitors, updatesApplied: stats.updatesApplied, bytesRead: stats.bytesRead },
      // Channels, not ChannelClosed events (both sides report a close, and restores may replay it).
      forceCloses: fleet.ledger.forceClosedChannels().length,
      balancesAgree,
      durationMs: performance.now() - started,
    };
    printSummary(summary, say);
    return summary;
  } finally {
    bar?.stop();
    await fleet.shutdown();
    await server?.close();
  }
}

/**
 * Why the wallets' writes are not becoming durable, if that is so (a write stalled or the
 * persister stopped); undefined while persistence is healthy. A dead or unreachable server
 * shows up here, with the client's last error, rather than as payments timing out one by one.
 */
export function persistenceTrouble(fleet: WalletFleet, names: readonly string[], serverUrl: string): string | undefined {
  for (const name of names) {
    const node = fleet.node(name);
    if (node.crashed) continue;
    const fatal = node.persistence.vssPersister?.fatalError ?? node.eventLoop?.fatalError;
    if (fatal) return `${name}'s persistence stopped: ${fatal.message}`;
    const persister = node.persistence.vssPersister;
    if (!persister?.blocked) continue;
    const oldest = persister.pending().reduce<PendingWriteInfo | undefined>((a, b) => (a === undefined || b.pendingMs > a.pendingMs ? b : a), undefined);
    const lastError = oldest?.lastError === undefined ? '' : ` (last error: ${oldest.lastError})`;
    return `${name}'s channel monitor writes have not been durable on the VSS server at ${serverUrl} for ${formatMs(oldest?.pendingMs ?? 0)}; is it running and reachable?${lastError}`;
  }
  return undefined;
}

/** What became of a payment: undefined while it is still on its way (neither side, or only one, is done). */
export function paymentOutcome(entry: Pick<LedgerEntry, 'sent' | 'claimed' | 'failed'>): 'completed' | 'failed' | undefined {
  if (entry.sent && entry.claimed) return 'completed';
  if (entry.failed) return 'failed';
  return undefined;
}

function printSummary(s: DemoSummary, say: (line?: string) => void): void {
  const rows: [string, string][] = [
    ['payments succeeded', `${s.paymentsSucceeded} (failed: ${s.paymentsFailed})`],
    ['monitor updates persisted', String(s.persisted.monitorUpdatesPersisted)],
    ['writes (monitor deltas / full monitors / managers)', `${s.persisted.monitorDeltaWrites} / ${s.persisted.fullMonitorWrites} / ${s.persisted.managerWrites}`],
    ['bytes written', formatBytes(s.persisted.bytesWritten)],
    ['persist latency p50 / p99', `${formatMs(s.persistLatencyMs.p50)} / ${formatMs(s.persistLatencyMs.p99)} (${s.persistLatencyMs.samples} monitor writes)`],
    ['restore time (read / until channel usable)', `${formatMs(s.restore.readMs)} / ${formatMs(s.restore.totalMs)}`],
    ['force-closes', String(s.forceCloses)],
    ['both wallets agree on the balances', s.balancesAgree ? 'yes' : 'NO'],
    ['total time', formatMs(s.durationMs)],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  say();
  say(`Summary (${s.backend})`);
  for (const [k, v] of rows) say(`  ${k.padEnd(width)}  ${v}`);
}

const USAGE = [
  'Usage: npm run demo -- [options]',
  '  -n, --payments N     payments before the crash (default 50)',
  '  --server-url URL     use a running VSS server (base URL including /vss)',
  '  --auth sigs|none     auth for --server-url (default sigs: LDK Node signature auth)',
  '  --postgres URL       start the server on PostgreSQL instead of embedded PGlite',
  '  --json               also print the summary as one JSON line',
].join('\n');

/**
 * The command line, checked before anything starts: an option that would be ignored (`--auth`
 * without `--server-url`, `--postgres` with it) or a count that is not a whole number is an
 * error naming the option and what was given, not a demo that runs otherwise than asked.
 */
export function parseDemoArgs(argv: string[]): { help: true } | { help: false; json: boolean; options: DemoOptions } {
  const { values } = parseArgs({
    args: argv,
    options: {
      payments: { type: 'string', short: 'n' },
      'server-url': { type: 'string' },
      auth: { type: 'string' },
      postgres: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return { help: true };
  const { payments, auth, postgres } = values;
  const serverUrl = values['server-url'];
  if (payments !== undefined && !/^[1-9][0-9]*$/.test(payments)) throw new RangeError(`--payments must be a positive integer, got "${payments}"`);
  if (auth !== undefined && auth !== 'sigs' && auth !== 'none') throw new RangeError(`--auth must be sigs or none, got "${auth}"`);
  if (auth !== undefined && serverUrl === undefined) throw new RangeError('--auth applies to --server-url only (the demo\'s own server uses signature auth)');
  if (postgres !== undefined && serverUrl !== undefined) throw new RangeError('--postgres starts a server of the demo\'s own; it cannot be combined with --server-url');
  const isHttpUrl = (text: string): boolean => URL.canParse(text) && ['http:', 'https:'].includes(new URL(text).protocol);
  const isPostgresUrl = (text: string): boolean => URL.canParse(text) && ['postgres:', 'postgresql:'].includes(new URL(text).protocol);
  if (postgres !== undefined && !isPostgresUrl(postgres)) throw new RangeError(`--postgres must be a URL such as postgres://postgres@127.0.0.1:5432/vss_demo, got "${postgres}"`);
  if (serverUrl !== undefined && !isHttpUrl(serverUrl)) throw new RangeError(`--server-url must be a URL such as http://127.0.0.1:8080/vss, got "${serverUrl}"`);
  return {
    help: false,
    json: values.json ?? false,
    options: { payments: payments === undefined ? undefined : Number(payments), serverUrl, auth, postgresUrl: postgres },
  };
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseDemoArgs>;
  try {
    parsed = parseDemoArgs(argv);
  } catch (err) {
    // A usage error, like ldk-vss's own: exit 2 and where the options are listed; the demo never started.
    process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)} (npm run demo -- --help lists the options)\n`);
    return 2;
  }
  if (parsed.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const summary = await runDemo(parsed.options);
  if (parsed.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  // The demo's promise is that nothing is lost or stuck: an interrupted payment left pending fails it too.
  return summary.balancesAgree && summary.forceCloses === 0 && summary.interruptedPayment !== 'pending' ? 0 : 1;
}

/**
 * Ctrl-C (or a `kill`) midway: one line and exit 128 + signal, as a shell reports it. Node's
 * default handling ended the process in the middle of the progress bar, which hides the cursor
 * and turns line wrapping off while it draws, so the terminal was left without either. Nothing
 * else needs undoing: the demo's own server (PGlite in memory, or the PostgreSQL it was given)
 * and both wallets live in this process, which starts no child processes and no temporary files.
 */
function exitOnInterrupt(stdout: NodeJS.WriteStream = process.stdout, stderr: NodeJS.WritableStream = process.stderr): void {
  const onSignal = (signal: 'SIGINT' | 'SIGTERM'): void => {
    // What the bar's stop() undoes: show the cursor, wrap lines again; then leave the bar's line.
    if (stdout.isTTY) stdout.write('\x1B[?25h\x1B[?7h\n');
    stderr.write(`demo interrupted (${signal})\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  exitOnInterrupt();
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // Nothing may keep a finished demo alive (WASM finalizers, sockets in TIME_WAIT...).
      setTimeout(() => process.exit(code), 1_000).unref();
    },
    (err: unknown) => {
      process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
