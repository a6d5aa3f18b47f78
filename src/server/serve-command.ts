/**
 * `ldk-vss serve`: reads the environment configuration, starts the server, and stops it
 * gracefully on SIGTERM/SIGINT, or when its storage stops for good (the embedded database after
 * a PANIC). Exit codes: 0 after a clean shutdown, 1 when startup or shutdown fails or the storage
 * stopped (for a supervisor to restart the server), 2 for invalid configuration or usage.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { ConfigError, loadServeConfig, SERVER_ENV_DOCS, SERVER_ENV_VARS, type ServeConfig } from './config.js';
import { withDeadline } from './deadline.js';
import { DEFAULT_SHUTDOWN_GRACE_MS, ServerListenError, startVssServer, type StartedVssServer } from './server.js';

export interface CommandIo {
  env: Readonly<Record<string, string | undefined>>;
  stdout: (line: string) => void;
  stderr: (line: string) => void;
}

/**
 * A signal arriving this soon after the first is the same request delivered twice, not an
 * operator's second one: Ctrl-C on `npm start` reaches the server from the terminal and again
 * from npm, which forwards SIGINT/SIGTERM to the script (the server itself when the script
 * shell execs it, as bash does). Taken as a second signal, it would cut in-flight requests.
 */
export const REPEATED_SIGNAL_MS = 1000;

/** The failure line stays one line even when a quoted value or an error message has line breaks. */
function oneLine(text: string): string {
  return text.replace(/\r\n|\r|\n/g, '\\n');
}

export function serveUsage(): string {
  const width = Math.max(...SERVER_ENV_VARS.map((name) => name.length));
  return [
    'Usage: ldk-vss serve',
    '',
    'Serves the VSS protocol at http://<VSS_BIND_ADDRESS>/vss. Configuration comes from environment variables:',
    ...SERVER_ENV_VARS.map((name) => `  ${name.padEnd(width)}  ${SERVER_ENV_DOCS[name]}`),
  ].join('\n');
}

export async function runServe(args: readonly string[], io: CommandIo): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout(serveUsage());
    return 0;
  }
  if (args.length > 0) {
    io.stderr(`ldk-vss serve: unexpected argument ${JSON.stringify(args[0])} (configuration comes from environment variables; see --help)`);
    return 2;
  }
  let config;
  try {
    config = loadServeConfig(io.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      io.stderr(oneLine(`ldk-vss: invalid configuration: ${error.message}`));
      return 2;
    }
    throw error;
  }
  const logger = pino({ level: config.options.logLevel, base: { service: 'ldk-vss' } });
  for (const warning of config.warnings) logger.warn(`configuration: ${warning}`);
  // Installed before startup: a signal while the storage opens (migrations, PGlite creating its
  // data directory) would otherwise meet Node's default action and kill the process mid-write,
  // without a word, leaving the data-directory lock behind. The same listeners then stay
  // installed to the end: between removing one and adding another, a signal would meet the
  // default action mid-shutdown.
  let firstSignalAt: number | undefined;
  let stopped = false;
  let signalled!: (signal: NodeJS.Signals) => void;
  const firstSignal = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
  const onSignal = (received: NodeJS.Signals) => {
    if (stopped) return;
    if (firstSignalAt === undefined) {
      firstSignalAt = performance.now();
      signalled(received);
      return;
    }
    if (performance.now() - firstSignalAt < REPEATED_SIGNAL_MS) {
      // Said at info level: an operator who pressed twice quickly learns why nothing changed.
      logger.info({ signal: received }, `signal repeated within ${REPEATED_SIGNAL_MS} ms (npm forwards the terminal's): taken as the same request; signal again later to stop at once`);
      return;
    }
    logger.warn({ signal: received }, 'second signal: exiting without waiting');
    process.exit(1);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    return await serveUntilSignal(config, logger, firstSignal, io);
  } finally {
    stopped = true;
  }
}

/**
 * Whether the embedded database is yet to be created in a data directory: PGlite writes
 * `PG_VERSION` at the end of a first start, so a missing directory, an empty one, a new volume's
 * `lost+found`, or a first start cut short all say "creating". A directory that cannot be read
 * (no permission) or is not ours is the backend's to report.
 */
function holdsNoDatabaseYet(dir: string): boolean {
  return !existsSync(join(dir, 'PG_VERSION'));
}

type Started = { server: StartedVssServer } | { error: unknown };

/** Starts the server, waits for the first signal, and shuts down; returns the exit code. */
async function serveUntilSignal(config: ServeConfig, logger: Logger, firstSignal: Promise<NodeJS.Signals>, io: CommandIo): Promise<number> {
  const graceMs = config.options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
  // Creating a new embedded database takes 10–15 s; without a line first, a first `npm start`
  // looks hung (and /health refuses connections meanwhile).
  const backend = config.options.backend;
  const dataDir = typeof backend === 'object' && backend.kind === 'pglite' && 'dataDir' in backend ? backend.dataDir : undefined;
  const creating = typeof dataDir === 'string' && holdsNoDatabaseYet(dataDir);
  logger.info({ storage: config.storageDescription }, creating ? 'creating the embedded database (a first start takes 10-15 s)' : 'opening storage');
  const startup: Promise<Started> = startVssServer({ ...config.options, logger }).then(
    (server) => ({ server }),
    (error: unknown) => ({ error }),
  );
  const first = await Promise.race([startup, firstSignal.then((signal) => ({ signal }))]);
  let started: Started;
  let signal: NodeJS.Signals | undefined;
  if ('signal' in first) {
    signal = first.signal;
    // Stopping mid-startup would cut PGlite's writes, so startup finishes first, within the
    // grace period: a storage that does not open by then (a database that does not answer)
    // must not keep a stopped server alive.
    logger.info({ signal }, `signal while starting: stopping once the storage is open (waiting up to ${graceMs} ms; signal again to stop at once)`);
    // `startup` never rejects (failures are an outcome), so only the deadline lands in the catch.
    const late = await withDeadline(startup, graceMs, () => new Error('startup outlived the grace period')).catch(() => undefined);
    if (late === undefined) {
      // Should it still open, nothing may be served: close it at once.
      void startup.then((outcome) => ('server' in outcome ? outcome.server.close() : undefined)).catch(() => undefined);
      logger.warn({ signal }, 'storage still not open at the end of the grace period: exiting without waiting');
      io.stderr(oneLine(`ldk-vss: stopped by ${signal} while starting on ${config.storageDescription}: not started within the grace period (${graceMs} ms, VSS_SHUTDOWN_GRACE_MS)`));
      return 1;
    }
    started = late;
  } else {
    started = first;
  }
  if ('error' in started) {
    const { error } = started;
    logger.fatal({ err: error }, 'VSS server failed to start');
    if (error instanceof ServerListenError) {
      const origin = io.env.VSS_BIND_ADDRESS?.trim() ? 'from VSS_BIND_ADDRESS' : 'the default; set VSS_BIND_ADDRESS';
      io.stderr(oneLine(`ldk-vss: cannot listen on ${error.address} (${origin}): ${error.reason.message}`));
      return 1;
    }
    // Which storage, and which variable chose it: a bare "connect ECONNREFUSED" or
    // "Connection terminated unexpectedly" says neither.
    io.stderr(oneLine(`ldk-vss: cannot start on ${config.storageDescription}: ${(error as Error).message}`));
    return 1;
  }
  const { server } = started;
  logger.info({ storage: config.storageDescription }, 'storage ready');
  // A stopped storage fails every request until a restart, which nothing in this process can do:
  // exit non-zero instead, for a supervisor (a Docker restart policy, systemd) to start it again.
  let storageStopped: Error | undefined;
  const stopping = server.backendStopped.then((reason) => (storageStopped = reason));
  if (signal === undefined) {
    const next = await Promise.race([firstSignal, stopping]);
    if (typeof next === 'string') signal = next;
  }
  if (signal !== undefined) logger.info({ signal }, 'shutting down: finishing in-flight requests (signal again to stop at once)');
  else logger.fatal('shutting down as the storage stopped: finishing in-flight requests, then exiting with code 1 for a supervisor to start the server again');
  let code = 0;
  try {
    await server.close();
  } catch (error) {
    logger.error({ err: error }, 'shutdown failed');
    code = 1;
  }
  // Also when it stopped during a shutdown asked for by a signal: the next start recovers.
  if (storageStopped !== undefined) {
    io.stderr(oneLine(`ldk-vss: stopped serving on ${config.storageDescription}: ${storageStopped.message}`));
    code = 1;
  }
  return code;
}
