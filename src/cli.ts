#!/usr/bin/env node
/**
 * The `ldk-vss` command. Subcommands live in the COMMANDS table; adding one means adding an
 * entry whose `run` returns the process exit code.
 */
import { createRequire } from 'node:module';
import { runServe, type CommandIo } from './server/serve-command.js';

export interface CliCommand {
  /** One line for `ldk-vss --help`. */
  summary: string;
  run(args: readonly string[], io: CommandIo): Promise<number>;
}

export const COMMANDS: Record<string, CliCommand> = {
  serve: { summary: 'run the VSS server (configured by environment variables; see `ldk-vss serve --help`)', run: runServe },
  inspect: { summary: "list what a wallet stored in a VSS store (LDK namespaces, versions, sizes) or dump one decrypted value", run: async (args, io) => (await import('./ldk/inspect.js')).runInspect(args, io) },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  return ['Usage: ldk-vss <command> [options]   (ldk-vss --version prints the version)', '', 'Commands:', ...Object.entries(COMMANDS).map(([name, command]) => `  ${name.padEnd(width)}  ${command.summary}`)].join('\n');
}

export async function main(argv: readonly string[], io: CommandIo): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    // Self-reference through the package's own exports: the same path from src/ (tsx) and dist/.
    io.stdout((createRequire(import.meta.url)('ldk-vss/package.json') as { version: string }).version);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.stderr(`ldk-vss: unknown command ${JSON.stringify(name)}\n${usage()}`);
    return 2;
  }
  return command.run(args, io);
}

const io: CommandIo = {
  env: process.env,
  stdout: (line) => process.stdout.write(`${line}\n`),
  stderr: (line) => process.stderr.write(`${line}\n`),
};

main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
    // Whatever a library left scheduled must not keep a finished command alive.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`ldk-vss: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(1);
  },
);
