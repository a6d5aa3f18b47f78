/**
 * Drives the Docker stack of docker-compose.yml (PostgreSQL + the ldk-vss server) through the
 * `docker-compose` npm package: `npm run harness:up`, `npm run harness:down`.
 *
 * Before touching the stack it checks, in order, that the Docker CLI exists, that a Docker engine
 * answers, and that Compose v2 is available, so a machine without Docker gets one line saying
 * which of these is missing and a non-zero exit instead of a stack trace.
 *
 *   tsx harness/compose.ts up                 build, start, wait until healthy, print the URL
 *   tsx harness/compose.ts down [--volumes]   stop and remove (and delete the database volume)
 *   tsx harness/compose.ts status             list the services and their state
 *
 * Environment: DOCKER names the docker executable (default `docker` on PATH); DOCKER_HOST and
 * the rest of Docker's own variables are passed through; VSS_HOST_PORT etc. as in the compose file.
 */
import { execFile } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as compose from 'docker-compose';
import type { IDockerComposeOptions, IDockerComposeResult } from 'docker-compose';

/** The compose service running the VSS server, and the port it listens on inside its container. */
export const VSS_SERVICE = 'vss';
export const VSS_CONTAINER_PORT = 8080;

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_COMPOSE_FILE = join(REPO_ROOT, 'docker-compose.yml');

/** Which part of a working Docker set-up is missing. */
export type DockerUnavailableReason = 'no-cli' | 'no-engine' | 'no-compose';

/** Docker cannot be used here; `message` is a single line meant for the user. */
export class DockerUnavailableError extends Error {
  override readonly name = 'DockerUnavailableError';
  constructor(
    readonly reason: DockerUnavailableReason,
    message: string,
  ) {
    super(message);
  }
}

/** A compose command ran but failed (build error, unhealthy service, …). */
export class ComposeCommandError extends Error {
  override readonly name = 'ComposeCommandError';
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
    /** The line for the user when compose itself did not fail (the check after it did). */
    message?: string,
  ) {
    super(message ?? `docker compose ${command} failed (exit ${exitCode ?? 'signal'}): ${lastLine(stderr) || 'no error output'}${hintFor(stderr)}`);
  }
}

/**
 * What to do about a failure whose fix is ours to tell: Docker's own line for a taken host port
 * does not say that the stack's port is a setting.
 */
function hintFor(stderr: string): string {
  if (/port is already allocated|address already in use|ports are not available/i.test(lastLine(stderr))) {
    return ' (another program uses the port: choose another with VSS_HOST_PORT, e.g. VSS_HOST_PORT=18080 npm run harness:up)';
  }
  return '';
}

/**
 * How long `up` waits for the services to report healthy. Without a bound, a server that never
 * gets there hangs `up --wait` for good: with `restart: unless-stopped`, a server that exits at
 * start (a bad value in .env) restarts forever and is never reported unhealthy.
 */
export const UP_WAIT_TIMEOUT_S = 300;

/** Compose learned `up --wait-timeout` in v2.17.0. */
export function composeHasWaitTimeout(version: string): boolean {
  const match = /(\d+)\.(\d+)/.exec(version);
  if (match === null) return false;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  return major > 2 || (major === 2 && minor >= 17);
}

export interface ComposeDriverOptions {
  /** The docker executable; default `$DOCKER` or `docker` on PATH. */
  docker?: string;
  /** Compose file; default docker-compose.yml at the repository root. */
  composeFile?: string;
  /** Environment for docker (DOCKER_HOST, VSS_HOST_PORT, …); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Stream docker's output to this process's stdout/stderr; default false. */
  log?: boolean;
}

/** What {@link checkDocker} found. */
export interface DockerEnvironment {
  engineVersion: string;
  composeVersion: string;
  /** How to call compose: the `docker compose` plugin, or a standalone `docker-compose` binary. */
  executable: NonNullable<IDockerComposeOptions['executable']>;
}

export interface StackEndpoints {
  /** Base URL of the VSS API, e.g. http://127.0.0.1:8080/vss */
  vssUrl: string;
  healthUrl: string;
}

function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines[lines.length - 1] ?? '';
}

function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
}

function dockerPath(options: ComposeDriverOptions): string {
  return options.docker ?? options.env?.DOCKER ?? process.env.DOCKER ?? 'docker';
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv | undefined): Promise<{ code: number; stdout: string; stderr: string; spawnError?: NodeJS.ErrnoException }> {
  return new Promise((resolvePromise) => {
    execFile(file, args, { env, timeout: 30_000 }, (error, stdout, stderr) => {
      if (error === null) {
        resolvePromise({ code: 0, stdout, stderr });
        return;
      }
      const errno = error as NodeJS.ErrnoException & { code?: string | number; killed?: boolean };
      if (errno.killed) {
        resolvePromise({ code: 1, stdout, stderr: `'${file} ${args.join(' ')}' did not answer within 30 s` });
        return;
      }
      if (typeof errno.code === 'string') {
        // The executable could not be started at all (ENOENT, EACCES).
        resolvePromise({ code: -1, stdout, stderr, spawnError: errno });
      } else {
        resolvePromise({ code: typeof errno.code === 'number' ? errno.code : 1, stdout, stderr });
      }
    });
  });
}

/**
 * Checks that the Docker CLI is installed, a Docker engine answers, and Compose v2 is available
 * (the `docker compose` plugin, else a standalone `docker-compose`). Throws
 * {@link DockerUnavailableError} naming the first thing missing.
 */
export async function checkDocker(options: ComposeDriverOptions = {}): Promise<DockerEnvironment> {
  const docker = dockerPath(options);
  const env = options.env ?? process.env;
  const engine = await run(docker, ['version', '--format', '{{.Server.Version}}'], env);
  if (engine.spawnError !== undefined) {
    throw new DockerUnavailableError(
      'no-cli',
      `Docker CLI not found: cannot run '${docker}' (${engine.spawnError.code}); install Docker or set DOCKER to its path.`,
    );
  }
  const engineVersion = engine.stdout.trim();
  if (engine.code !== 0 || engineVersion === '') {
    const detail = firstLine(engine.stderr) || `'${docker} version' exited with ${engine.code}`;
    throw new DockerUnavailableError('no-engine', `No Docker engine available: ${detail}`);
  }

  const plugin: DockerEnvironment['executable'] = { executablePath: docker };
  const viaPlugin = await composeVersion({ executable: plugin, env });
  if (viaPlugin.ok) return { engineVersion, composeVersion: viaPlugin.version, executable: plugin };
  const standalone: DockerEnvironment['executable'] = { standalone: true };
  const viaStandalone = await composeVersion({ executable: standalone, env });
  if (viaStandalone.ok) return { engineVersion, composeVersion: viaStandalone.version, executable: standalone };
  throw new DockerUnavailableError(
    'no-compose',
    `Docker Compose v2 not available (engine ${engineVersion} is up): '${docker} compose' failed: ${viaPlugin.detail}`,
  );
}

async function composeVersion(options: IDockerComposeOptions): Promise<{ ok: true; version: string } | { ok: false; detail: string }> {
  try {
    const result = await compose.version(options);
    return { ok: true, version: result.data.version };
  } catch (error) {
    return { ok: false, detail: describeFailure(error) };
  }
}

/** docker-compose rejects with its result object, or with an Error when spawning failed. */
function describeFailure(error: unknown): string {
  if (error instanceof Error) return error.message;
  const result = error as Partial<IDockerComposeResult>;
  return firstLine(result.err ?? '') || `exit ${result.exitCode ?? '?'}`;
}

function composeOptions(options: ComposeDriverOptions, environment: DockerEnvironment): IDockerComposeOptions {
  const composeFile = options.composeFile ?? DEFAULT_COMPOSE_FILE;
  return {
    cwd: dirname(composeFile),
    config: composeFile,
    executable: environment.executable,
    env: options.env ?? process.env,
    log: options.log ?? false,
  };
}

async function runCompose<T>(command: string, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof Error) throw error;
    const result = error as Partial<IDockerComposeResult>;
    throw new ComposeCommandError(command, result.exitCode ?? null, result.err ?? '');
  }
}

/**
 * Builds the server image, starts PostgreSQL and the server, waits until both report healthy,
 * and returns where the server answers on this host.
 */
export async function stackUp(options: ComposeDriverOptions = {}): Promise<StackEndpoints> {
  const environment = await checkDocker(options);
  const base = composeOptions(options, environment);
  // --wait: return only once every service's health check passes (it also detaches).
  const waitTimeout = composeHasWaitTimeout(environment.composeVersion) ? ['--wait-timeout', String(UP_WAIT_TIMEOUT_S)] : [];
  await runCompose('up', () => compose.upAll({ ...base, commandOptions: ['--build', '--wait', ...waitTimeout] }));
  const mapped = await runCompose('port', () => compose.port(VSS_SERVICE, VSS_CONTAINER_PORT, base));
  const host = mapped.data.address === '0.0.0.0' || mapped.data.address === '' ? '127.0.0.1' : mapped.data.address;
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${mapped.data.port}`;
  const endpoints = { vssUrl: `${origin}/vss`, healthUrl: `${origin}/health` };
  // Compose saw the container healthy from inside; make sure the published port works too. Compose
  // itself succeeded, so "docker compose up failed (exit 0)" would be a contradiction: say what failed.
  const probeFailed = (what: string): ComposeCommandError =>
    new ComposeCommandError('up', 0, '', `ldk-vss stack is up but its published ${endpoints.healthUrl} ${what}; see docker compose logs ${VSS_SERVICE}`);
  const health = await fetch(endpoints.healthUrl, { signal: AbortSignal.timeout(10_000) }).catch((error: unknown) => {
    // fetch says only "fetch failed"; the reason (ECONNREFUSED, a timeout) is its cause.
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
    const code = (cause as { code?: unknown } | undefined)?.code;
    throw probeFailed(`is unreachable (${typeof code === 'string' ? code : cause instanceof Error ? cause.message : String(cause)})`);
  });
  if (!health.ok) throw probeFailed(`answered ${health.status}`);
  return endpoints;
}

/** Stops and removes the stack's containers; with `volumes`, deletes the database volume too. */
export async function stackDown(options: ComposeDriverOptions & { volumes?: boolean } = {}): Promise<void> {
  const environment = await checkDocker(options);
  const base = composeOptions(options, environment);
  await runCompose('down', () => compose.downAll({ ...base, commandOptions: options.volumes ? ['--volumes'] : [] }));
}

/** One line per service: name and state. */
export async function stackStatus(options: ComposeDriverOptions = {}): Promise<string[]> {
  const environment = await checkDocker(options);
  const result = await runCompose('ps', () => compose.execCompose('ps', ['--format', 'json'], composeOptions(options, environment)));
  return parsePsJson(result.out).map((service) => `${service.name}\t${service.state}`);
}

/**
 * `docker compose ps --format json`: Compose 2.21 and later print one JSON object per line,
 * earlier v2 releases one JSON array (`[]` when nothing runs).
 */
export function parsePsJson(text: string): Array<{ name: string; state: string }> {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  const entries: unknown[] = trimmed.startsWith('[') ? (JSON.parse(trimmed) as unknown[]) : trimmed.split('\n').filter((line) => line.trim() !== '').map((line) => JSON.parse(line) as unknown);
  return entries.map((entry) => {
    const { Name, State } = entry as { Name?: unknown; State?: unknown };
    return { name: String(Name ?? '?'), state: String(State ?? '?') };
  });
}

/** In the commands a user types (the npm scripts pass `up` / `down` to this file). */
const USAGE = 'usage: npm run harness:up | npm run harness:down [-- --volumes] | npx tsx harness/compose.ts status';

/** The command line; returns the exit code. Every failure is reported as one line on stderr. */
export async function main(argv: string[], options: ComposeDriverOptions = {}): Promise<number> {
  const [command, ...rest] = argv;
  // `npm run harness:up -- --help` asks for the usage: an answer, not a usage error.
  if (argv.some((arg) => arg === '--help' || arg === '-h') || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  try {
    if (command === 'up' && rest.length === 0) {
      const endpoints = await stackUp({ log: true, ...options });
      process.stdout.write(`ldk-vss stack is up: VSS at ${endpoints.vssUrl} (health: ${endpoints.healthUrl}); stop it with npm run harness:down\n`);
      return 0;
    }
    if (command === 'down' && rest.every((arg) => arg === '--volumes')) {
      await stackDown({ log: true, ...options, volumes: rest.includes('--volumes') });
      process.stdout.write(`ldk-vss stack is down${rest.includes('--volumes') ? ' and its database volume deleted' : ''}\n`);
      return 0;
    }
    if (command === 'status' && rest.length === 0) {
      const lines = await stackStatus(options);
      process.stdout.write(lines.length === 0 ? 'ldk-vss stack is not running\n' : `${lines.join('\n')}\n`);
      return 0;
    }
    process.stderr.write(`${USAGE}\n`);
    return 2;
  } catch (error) {
    if (error instanceof DockerUnavailableError || error instanceof ComposeCommandError) {
      process.stderr.write(`${error.message}\n`);
      return 1;
    }
    process.stderr.write(`harness compose: unexpected error: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = await main(process.argv.slice(2));
}
