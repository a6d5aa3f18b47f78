/**
 * `ldk-vss serve`: reads the environment configuration, starts the server, and stops it
 * gracefully on SIGTERM/SIGINT. Exit codes: 0 after a clean shutdown, 1 when startup or
 * shutdown fails, 2 for invalid configuration or usage.
 */
import pino from 'pino';
import { ConfigError, loadServeConfig, SERVER_ENV_DOCS, SERVER_ENV_VARS } from './config.js';
import { ServerListenError, startVssServer } from './server.js';

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
  let server;
  try {
    server = await startVssServer({ ...config.options, logger });
  } catch (error) {
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
  logger.info({ storage: config.storageDescription }, 'storage ready');
  // The same listeners stay installed from the first signal to the end: between removing one and
  // adding another, a signal would meet Node's default action and kill the process mid-shutdown.
  let firstSignalAt: number | undefined;
  let stopped = false;
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const onSignal = (received: NodeJS.Signals) => {
      if (stopped) return;
      if (firstSignalAt === undefined) {
        firstSignalAt = performance.now();
        resolve(received);
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
  });
  logger.info({ signal }, 'shutting down: finishing in-flight requests (signal again to stop at once)');
  try {
    await server.close();
    return 0;
  } catch (error) {
    logger.error({ err: error }, 'shutdown failed');
    return 1;
  } finally {
    stopped = true;
  }
}
