/**
 * `ldk-vss serve`: reads the environment configuration, starts the server, and stops it
 * gracefully on SIGTERM/SIGINT. Exit codes: 0 after a clean shutdown, 1 when startup or
 * shutdown fails, 2 for invalid configuration or usage.
 */
import pino from 'pino';
import { ConfigError, loadServeConfig, SERVER_ENV_DOCS, SERVER_ENV_VARS } from './config.js';
import { startVssServer } from './server.js';

export interface CommandIo {
  env: Readonly<Record<string, string | undefined>>;
  stdout: (line: string) => void;
  stderr: (line: string) => void;
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
      io.stderr(`ldk-vss: invalid configuration: ${error.message}`);
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
    // Which storage, and which variable chose it: a bare "connect ECONNREFUSED" or
    // "Connection terminated unexpectedly" says neither.
    io.stderr(`ldk-vss: cannot start on ${config.storageDescription}: ${(error as Error).message}`);
    return 1;
  }
  logger.info({ storage: config.storageDescription }, 'storage ready');
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  logger.info({ signal }, 'shutting down: finishing in-flight requests (signal again to stop at once)');
  const forceExit = (again: NodeJS.Signals) => {
    logger.warn({ signal: again }, 'second signal: exiting without waiting');
    process.exit(1);
  };
  process.once('SIGTERM', forceExit);
  process.once('SIGINT', forceExit);
  try {
    await server.close();
    return 0;
  } catch (error) {
    logger.error({ err: error }, 'shutdown failed');
    return 1;
  }
}
