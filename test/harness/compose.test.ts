/**
 * The Docker stack, checked without a Docker engine (none on this machine kind):
 *  - the driver (harness/compose.ts): with the real docker CLI and no engine it says so in one
 *    line and exits non-zero; with a stand-in docker executable it issues the right compose
 *    commands and reports compose failures in one line;
 *  - the files: docker-compose.yml and the Dockerfile agree with the server's real configuration,
 *    and the image's build and start command work on this tree.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as dockerignoreModule from '@balena/dockerignore';
import { DockerfileParser, type Copy, type Env, type From, type Instruction } from 'dockerfile-ast';
import { validate as validateDockerfile } from 'dockerfile-utils';
import pg from 'pg';
import { parseDocument } from 'yaml';
import {
  checkDocker,
  ComposeCommandError,
  composeHasWaitTimeout,
  DEFAULT_COMPOSE_FILE,
  DockerUnavailableError,
  stackDown,
  parsePsJson,
  stackStatus,
  stackUp,
  UP_WAIT_TIMEOUT_S,
  VSS_CONTAINER_PORT,
  VSS_SERVICE,
} from '../../harness/compose.js';
import { DEFAULT_PORT, HEALTH_PATH, loadServeConfig, parseBindAddress, SERVER_ENV_VARS } from '../../src/server/config.js';
import { productionPackages } from '../helpers/lockfile.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const COMPOSE_SCRIPT = join(REPO_ROOT, 'harness/compose.ts');

/** Whether a real docker CLI is installed (the engine is another matter). */
function dockerCliInstalled(): boolean {
  try {
    execFileSync('docker', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the driver's command line the way `npm run harness:*` does (tsx), in its own process. */
function runDriver(args: string[], env: NodeJS.ProcessEnv): Promise<CliRun> {
  return new Promise((resolvePromise) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', COMPOSE_SCRIPT, ...args],
      { cwd: REPO_ROOT, env, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolvePromise({ code, stdout, stderr });
      },
    );
  });
}

/**
 * A stand-in for the docker CLI, for the parts a machine without an engine cannot exercise:
 * it logs every invocation and answers like Docker would for the scenario in FAKE_DOCKER_SCENARIO.
 */
const STAND_IN_DOCKER = `#!/usr/bin/env node
const { appendFileSync } = require('node:fs');
const args = process.argv.slice(2);
appendFileSync(process.env.FAKE_DOCKER_LOG, JSON.stringify({ tool: require('node:path').basename(process.argv[1]), args, cwd: process.cwd() }) + '\\n');
const scenario = process.env.FAKE_DOCKER_SCENARIO;
const fail = (code, text) => { process.stderr.write(text + '\\n'); process.exit(code); };
const isStandalone = require('node:path').basename(process.argv[1]) === 'docker-compose';
if (!isStandalone && args[0] === 'version') { process.stdout.write('27.3.1\\n'); process.exit(0); }
const composeArgs = isStandalone ? args : args.slice(1);
if (!isStandalone && args[0] !== 'compose') fail(1, 'unexpected');
if (!isStandalone && scenario === 'no-compose') fail(1, "docker: unknown command: docker compose");
let i = 0;
while (composeArgs[i] === '-f') i += 2;
const command = composeArgs[i];
const rest = composeArgs.slice(i + 1);
if (command === 'version') { process.stdout.write((process.env.FAKE_COMPOSE_VERSION || '2.29.7') + '\\n'); process.exit(0); }
if (command === 'up') {
  if (scenario === 'up-fails') fail(17, ' => ERROR [build 4/9] RUN npm ci\\nfailed to solve: process "/bin/sh -c npm ci" did not complete successfully: exit code: 1');
  if (scenario === 'port-busy') fail(1, ' Container ldk-vss-vss-1  Starting\\nError response from daemon: driver failed programming external connectivity on endpoint ldk-vss-vss-1 (3f2a): Bind for 127.0.0.1:8080 failed: port is already allocated');
  process.stdout.write('Container ldk-vss-vss-1  Healthy\\n');
  process.exit(0);
}
if (command === 'port') { process.stdout.write('0.0.0.0:' + process.env.FAKE_DOCKER_PORT + '\\n'); process.exit(0); }
if (command === 'down') process.exit(0);
if (command === 'ps') {
  process.stdout.write(JSON.stringify({ Name: 'ldk-vss-postgres-1', Command: 'docker-entrypoint.sh postgres', State: 'running', Ports: '5432/tcp' }) + '\\n');
  process.stdout.write(JSON.stringify({ Name: 'ldk-vss-vss-1', Command: 'node dist/src/cli.js serve', State: 'running', Ports: '127.0.0.1:8080->8080/tcp' }) + '\\n');
  process.exit(0);
}
fail(1, 'stand-in docker: unexpected command ' + command + ' ' + rest.join(' '));
`;

interface StandIn {
  dir: string;
  docker: string;
  log: string;
  env(scenario: string, port?: number): NodeJS.ProcessEnv;
  calls(): Array<{ tool: string; args: string[]; cwd: string }>;
}

function makeStandIn(options: { standaloneCompose?: boolean } = {}): StandIn {
  const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-docker-'));
  const docker = join(dir, 'docker');
  writeFileSync(docker, STAND_IN_DOCKER);
  chmodSync(docker, 0o755);
  if (options.standaloneCompose) {
    writeFileSync(join(dir, 'docker-compose'), STAND_IN_DOCKER);
    chmodSync(join(dir, 'docker-compose'), 0o755);
  }
  const log = join(dir, 'calls.jsonl');
  writeFileSync(log, '');
  return {
    dir,
    docker,
    log,
    env: (scenario, port) => ({
      // Only the stand-in and node on PATH, so a real docker/docker-compose cannot interfere.
      PATH: `${dir}:${dirname(process.execPath)}`,
      HOME: dir,
      FAKE_DOCKER_LOG: log,
      FAKE_DOCKER_SCENARIO: scenario,
      FAKE_DOCKER_PORT: String(port ?? 0),
      DOCKER: docker,
    }),
    calls: () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { tool: string; args: string[]; cwd: string }),
  };
}

describe('harness/compose.ts driver', () => {
  const tempDirs: string[] = [];
  afterAll(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  const dockerCli = dockerCliInstalled();
  describe.skipIf(!dockerCli)(`with the real docker CLI and no reachable engine${dockerCli ? '' : ' — SKIPPED: no docker executable on PATH'}`, () => {
    it('up and down say "No Docker engine available" in one line and exit 1', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-noengine-'));
      tempDirs.push(dir);
      // A socket path nobody listens on: no engine, whatever this machine has.
      const env = { ...process.env, DOCKER_HOST: `unix://${join(dir, 'absent.sock')}`, DOCKER: undefined };
      for (const command of ['up', 'down']) {
        const result = await runDriver([command], env);
        expect(result.code).toBe(1);
        expect(result.stdout).toBe('');
        const lines = result.stderr.split('\n').filter((l) => l !== '');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/^No Docker engine available: .*absent\.sock/);
      }
    });

    it('npm run harness:up exits non-zero with that line', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-noengine-'));
      tempDirs.push(dir);
      const result = await new Promise<CliRun>((resolvePromise) => {
        execFile(
          'npm',
          ['run', '--silent', 'harness:up'],
          { cwd: REPO_ROOT, env: { ...process.env, DOCKER_HOST: `unix://${join(dir, 'absent.sock')}` }, timeout: 60_000 },
          (error, stdout, stderr) => resolvePromise({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, stdout, stderr }),
        );
      });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(/^No Docker engine available: /m);
      expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
    });

    it('checkDocker() throws DockerUnavailableError with reason no-engine', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-noengine-'));
      tempDirs.push(dir);
      const error = await checkDocker({ docker: 'docker', env: { ...process.env, DOCKER_HOST: `unix://${join(dir, 'absent.sock')}` } }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DockerUnavailableError);
      expect((error as DockerUnavailableError).reason).toBe('no-engine');
    });
  });

  it('says "Docker CLI not found" in one line when the docker executable does not exist', async () => {
    const missing = join(tmpdir(), 'ldk-vss-no-such-dir', 'docker');
    const result = await runDriver(['up'], { ...process.env, DOCKER: missing });
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(`Docker CLI not found: cannot run '${missing}' (ENOENT); install Docker or set DOCKER to its path.`);
    const error = await checkDocker({ docker: missing }).catch((e: unknown) => e);
    expect((error as DockerUnavailableError).reason).toBe('no-cli');
  });

  it('rejects unknown commands with the usage line and exit 2', async () => {
    const result = await runDriver(['sideways'], process.env);
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe('usage: npm run harness:up | npm run harness:down [-- --volumes] | npx tsx harness/compose.ts status');
  });

  it.each([[['up', '--help']], [['down', '-h']], [['--help']], [['help']]])(
    '%j asks for the usage (as npm run harness:up -- --help does): stdout, exit 0, no Docker needed',
    async (args) => {
      const result = await runDriver(args, { ...process.env, DOCKER: join(tmpdir(), 'ldk-vss-no-such-dir', 'docker') });
      expect(result.code).toBe(0);
      expect(result.stdout.trim()).toBe('usage: npm run harness:up | npm run harness:down [-- --volumes] | npx tsx harness/compose.ts status');
      expect(result.stderr).toBe('');
    },
  );

  describe('with a stand-in docker executable', () => {
    let health: Server;
    let healthPort: number;
    let healthStatus = 200;
    beforeAll(async () => {
      // Plays the published server port, so the driver's own health probe has something real to hit.
      health = createServer((req, res) => {
        res.writeHead(req.url === '/health' ? healthStatus : 404);
        res.end();
      });
      await new Promise<void>((r) => health.listen(0, '127.0.0.1', r));
      healthPort = (health.address() as AddressInfo).port;
    });
    afterAll(async () => {
      await new Promise<void>((r) => health.close(() => r()));
    });

    it('engine up but no Compose v2: says so in one line', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      const result = await runDriver(['up'], standIn.env('no-compose'));
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe(
        `Docker Compose v2 not available (engine 27.3.1 is up): '${standIn.docker} compose' failed: docker: unknown command: docker compose`,
      );
      // It never tried to start anything.
      expect(standIn.calls().some((c) => c.args.includes('up'))).toBe(false);
    });

    it('falls back to a standalone docker-compose when the plugin is missing', async () => {
      const standIn = makeStandIn({ standaloneCompose: true });
      tempDirs.push(standIn.dir);
      const found = await checkDocker({ env: standIn.env('no-compose') });
      expect(found).toMatchObject({ engineVersion: '27.3.1', composeVersion: '2.29.7', executable: { standalone: true } });
    });

    it('up: builds, waits for health, probes the published /health and reports the URL', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      healthStatus = 200;
      const endpoints = await stackUp({ env: standIn.env('ok', healthPort) });
      expect(endpoints).toEqual({ vssUrl: `http://127.0.0.1:${healthPort}/vss`, healthUrl: `http://127.0.0.1:${healthPort}/health` });
      const composeCalls = standIn.calls().filter((c) => c.args[0] === 'compose');
      expect(composeCalls.map((c) => c.args)).toEqual([
        ['compose', 'version', '--short'],
        ['compose', '-f', DEFAULT_COMPOSE_FILE, 'up', '--build', '--wait', '--wait-timeout', String(UP_WAIT_TIMEOUT_S), '-d'],
        ['compose', '-f', DEFAULT_COMPOSE_FILE, 'port', 'vss', '8080'],
      ]);
      expect(composeCalls[1]!.cwd).toBe(REPO_ROOT);

      const cli = await runDriver(['up'], standIn.env('ok', healthPort));
      expect(cli.code).toBe(0);
      expect(cli.stdout).toContain(`ldk-vss stack is up: VSS at http://127.0.0.1:${healthPort}/vss`);
    });

    it('up: a server that never gets healthy ends in an error, not a hang: --wait-timeout wherever compose has it', async () => {
      // Compose before 2.17 has no --wait-timeout and would refuse the flag: it is left out there.
      const old = makeStandIn();
      tempDirs.push(old.dir);
      await stackUp({ env: { ...old.env('ok', healthPort), FAKE_COMPOSE_VERSION: 'v2.16.0' } });
      expect(old.calls().find((c) => c.args.includes('up'))!.args).toEqual(['compose', '-f', DEFAULT_COMPOSE_FILE, 'up', '--build', '--wait', '-d']);
      expect(composeHasWaitTimeout('2.17.0')).toBe(true);
      expect(composeHasWaitTimeout('v2.29.7-desktop.1')).toBe(true);
      expect(composeHasWaitTimeout('3.0.0')).toBe(true);
      expect(composeHasWaitTimeout('2.9.0')).toBe(false);
      expect(composeHasWaitTimeout('garbage')).toBe(false);
    });

    it('up: a host port already taken is one line that says which setting moves it', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      const result = await runDriver(['up'], standIn.env('port-busy', healthPort));
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n').at(-1)).toBe(
        'docker compose up failed (exit 1): Error response from daemon: driver failed programming external connectivity on endpoint ldk-vss-vss-1 (3f2a): Bind for 127.0.0.1:8080 failed: port is already allocated' +
          ' (another program uses the port: choose another with VSS_HOST_PORT, e.g. VSS_HOST_PORT=18080 npm run harness:up)',
      );
    });

    it('up: a published port nobody answers on is one line naming the URL and the reason, not "failed (exit 0)"', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      const closed = await freePort();
      const result = await runDriver(['up'], standIn.env('ok', closed));
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n').at(-1)).toBe(
        `ldk-vss stack is up but its published http://127.0.0.1:${closed}/health is unreachable (ECONNREFUSED); see docker compose logs vss`,
      );
    });

    it('up: a server that is not healthy on the published port is an error', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      healthStatus = 503;
      const error = await stackUp({ env: standIn.env('ok', healthPort) }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ComposeCommandError);
      expect((error as Error).message).toContain('answered 503');
      healthStatus = 200;
    });

    it('up: a failing build is reported in one line with compose\'s exit code and last error line', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      const result = await runDriver(['up'], standIn.env('up-fails', healthPort));
      expect(result.code).toBe(1);
      const lastLine = result.stderr.trim().split('\n').at(-1);
      expect(lastLine).toBe(
        'docker compose up failed (exit 17): failed to solve: process "/bin/sh -c npm ci" did not complete successfully: exit code: 1',
      );
    });

    it('reads `ps --format json` from every Compose v2: one object per line, or one array (empty when nothing runs)', () => {
      const postgres = { Name: 'ldk-vss-postgres-1', State: 'running', Ports: '5432/tcp' };
      const vss = { Name: 'ldk-vss-vss-1', State: 'exited' };
      const expected = [{ name: 'ldk-vss-postgres-1', state: 'running' }, { name: 'ldk-vss-vss-1', state: 'exited' }];
      expect(parsePsJson(`${JSON.stringify(postgres)}\n${JSON.stringify(vss)}\n`)).toEqual(expected);
      expect(parsePsJson(JSON.stringify([postgres, vss]))).toEqual(expected);
      expect(parsePsJson('[]\n')).toEqual([]);
      expect(parsePsJson('')).toEqual([]);
    });

    it('down keeps the database volume unless --volumes is given; status lists the services', async () => {
      const standIn = makeStandIn();
      tempDirs.push(standIn.dir);
      await stackDown({ env: standIn.env('ok') });
      await stackDown({ env: standIn.env('ok'), volumes: true });
      const downs = standIn.calls().filter((c) => c.args.includes('down')).map((c) => c.args.slice(c.args.indexOf('down')));
      expect(downs).toEqual([['down'], ['down', '--volumes']]);
      expect(await stackStatus({ env: standIn.env('ok') })).toEqual(['ldk-vss-postgres-1\trunning', 'ldk-vss-vss-1\trunning']);

      const cli = await runDriver(['down', '--volumes'], standIn.env('ok'));
      expect(cli.code).toBe(0);
      expect(cli.stdout.trim()).toBe('ldk-vss stack is down and its database volume deleted');
    });
  });
});

// ---------------------------------------------------------------------------------------------
// docker-compose.yml and the Dockerfile against the server's real configuration
// ---------------------------------------------------------------------------------------------

interface ComposeService {
  image?: string;
  build?: { context?: string; dockerfile?: string };
  environment?: Record<string, string | number | boolean>;
  depends_on?: Record<string, { condition?: string }>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test?: string[] | string; interval?: string; retries?: number };
}

interface ComposeFile {
  name?: string;
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

// A CommonJS module whose typings declare a default export: reach it the same way under tsc and vitest.
const dockerignore = dockerignoreModule.default.default;

const COMPOSE_TEXT = readFileSync(DEFAULT_COMPOSE_FILE, 'utf8');
const DOCKERFILE_TEXT = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');

function loadCompose(): ComposeFile {
  const document = parseDocument(COMPOSE_TEXT, { uniqueKeys: true, prettyErrors: true });
  if (document.errors.length > 0) throw new Error(document.errors.map((e) => e.message).join('\n'));
  return document.toJS() as ComposeFile;
}

/** Compose interpolation, limited to the one form the file may use: `${NAME:-default}`. */
const INTERPOLATION = /\$\{([A-Z][A-Z0-9_]*):-([^}$]*)\}/g;

function withDefaults(value: string | number | boolean, shell: Record<string, string> = {}): string {
  return String(value).replace(INTERPOLATION, (_, name: string, fallback: string) => shell[name] || fallback);
}

/** The service's environment as the container sees it, with the file's defaults applied. */
function serviceEnv(service: ComposeService, shell: Record<string, string> = {}): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, withDefaults(v, shell)]));
}

interface Stage {
  name: string | null;
  instructions: Instruction[];
}

function dockerStages(): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of DockerfileParser.parse(DOCKERFILE_TEXT).getInstructions()) {
    if (instruction.getKeyword() === 'FROM') stages.push({ name: (instruction as From).getBuildStage(), instructions: [] });
    stages.at(-1)?.instructions.push(instruction);
  }
  return stages;
}

function stageNamed(name: string): Stage {
  const stage = dockerStages().find((s) => s.name === name);
  if (!stage) throw new Error(`Dockerfile has no stage named ${name}`);
  return stage;
}

function only(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.getKeyword() === keyword);
}

/** The exec-form array of a CMD/HEALTHCHECK CMD/etc. instruction. */
function execForm(instruction: Instruction): string[] {
  const json = instruction.getArgumentsContent()?.replace(/^CMD\s+/, '') ?? '';
  const parsed: unknown = JSON.parse(json);
  if (!Array.isArray(parsed) || !parsed.every((p) => typeof p === 'string')) throw new Error(`not exec form: ${json}`);
  return parsed as string[];
}

/** ENV of a stage, in order, later ones winning. */
function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const instruction of only(stage, 'ENV')) {
    for (const property of (instruction as Env).getProperties()) env[property.getName()] = property.getValue() ?? '';
  }
  return env;
}

function workdirOf(stage: Stage): string {
  const workdirs = only(stage, 'WORKDIR');
  if (workdirs.length !== 1) throw new Error('expected exactly one WORKDIR per stage');
  return workdirs[0]!.getArgumentsContent() ?? '';
}

/** Runs a health-check command (exec form) with the container's environment; returns its exit code. */
function runHealthcheck(command: readonly string[], env: Record<string, string>): Promise<number | null> {
  const [file, ...args] = command;
  expect(file).toBe('node');
  // Docker runs the check inside the container, with the container's environment and nothing else.
  return new Promise((r) =>
    execFile(process.execPath, args, { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 }, (error) =>
      r(error === null ? 0 : typeof error.code === 'number' ? error.code : null),
    ),
  );
}

/**
 * What a health-check command asks for: a stand-in server listens on `listenHost` (any free port),
 * the command runs with VSS_BIND_ADDRESS = `bindAddress(port)`, and every request it makes is
 * recorded as `METHOD host-header path`.
 */
async function healthProbe(
  command: readonly string[],
  bindAddress: (port: number) => string,
  options: { listenHost?: string; status?: number } = {},
): Promise<{ code: number | null; port: number; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.headers.host} ${req.url}`);
    res.writeHead(options.status ?? 200).end();
  });
  await new Promise<void>((r) => server.listen(0, options.listenHost ?? '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const code = await runHealthcheck(command, { VSS_BIND_ADDRESS: bindAddress(port) });
    return { code, port, requests };
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/** The image's and the compose file's health checks (exec form, without compose's leading CMD). */
function healthChecks(): Record<'image' | 'compose', string[]> {
  const composeTest = loadCompose().services[VSS_SERVICE]!.healthcheck!.test as string[];
  expect(composeTest[0]).toBe('CMD');
  return { image: execForm(only(stageNamed('runtime'), 'HEALTHCHECK')[0]!), compose: composeTest.slice(1) };
}

/** The variables the reference server reads, which the compose file must configure for PostgreSQL. */
const REFERENCE_POSTGRES_VARS = ['VSS_BIND_ADDRESS', 'VSS_PSQL_USERNAME', 'VSS_PSQL_PASSWORD', 'VSS_PSQL_ADDRESS', 'VSS_PSQL_DEFAULT_DB', 'VSS_PSQL_VSS_DB'];

describe('docker-compose.yml against the server configuration', () => {
  const compose = loadCompose();
  const postgres = compose.services.postgres!;
  const vss = compose.services[VSS_SERVICE]!;

  it('is strict YAML (no duplicate keys) and only uses ${NAME:-default} interpolation', () => {
    expect(compose.name).toBe('ldk-vss');
    expect(Object.keys(compose.services).sort()).toEqual(['postgres', VSS_SERVICE]);
    const scalars = JSON.stringify(compose).match(/"[^"]*\$[^"]*"/g) ?? [];
    expect(scalars.length).toBeGreaterThan(0);
    for (const scalar of scalars) expect(scalar.replace(INTERPOLATION, ''), scalar).not.toContain('$');
  });

  it('postgres: postgres:15, pg_isready health check over TCP, data on a named volume', () => {
    expect(postgres.image).toBe('postgres:15');
    const test = postgres.healthcheck?.test;
    expect(Array.isArray(test) ? test.join(' ') : test).toMatch(/pg_isready .*-h 127\.0\.0\.1/);
    const [volume, mountPoint] = (postgres.volumes ?? [])[0]!.split(':');
    expect(mountPoint).toBe('/var/lib/postgresql/data');
    expect(Object.keys(compose.volumes ?? {})).toContain(volume);
  });

  it('the server is built from this repository\'s Dockerfile and waits for a healthy database', () => {
    expect(vss.build).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    expect(vss.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(vss.healthcheck?.test).toBeDefined();
  });

  it('every variable set for the server is one the server reads', () => {
    const set = Object.keys(vss.environment ?? {});
    const unknown = set.filter((name) => !(SERVER_ENV_VARS as readonly string[]).includes(name));
    expect(unknown).toEqual([]);
    expect(set).toEqual(expect.arrayContaining([...REFERENCE_POSTGRES_VARS, 'VSS_AUTH', 'VSS_LOG_LEVEL']));
    // The image's own ENV is read by the server too.
    const imageVars = Object.keys(stageEnv(stageNamed('runtime'))).filter((name) => name.startsWith('VSS_') || name === 'DATABASE_URL');
    expect(imageVars.filter((name) => !(SERVER_ENV_VARS as readonly string[]).includes(name))).toEqual([]);
  });

  it('the container environment (image ENV + compose) loads and points the server at the postgres service', () => {
    const env = { ...stageEnv(stageNamed('runtime')), ...serviceEnv(vss) };
    const config = loadServeConfig(env);
    expect(config.options.host).toBe('0.0.0.0');
    expect(config.options.port).toBe(DEFAULT_PORT);
    expect(config.options.auth).toEqual({ kind: 'signature' });
    expect(config.options.logLevel).toBe('info');
    expect(config.options.metrics).toBe(true);
    const backend = config.options.backend as { kind: string; url: string; defaultDatabase?: string };
    expect(backend.kind).toBe('postgres');
    const url = new URL(backend.url);
    const db = serviceEnv(postgres);
    expect(url.hostname).toBe('postgres'); // the compose service name
    expect(url.port).toBe('5432');
    expect(decodeURIComponent(url.username)).toBe(db.POSTGRES_USER);
    expect(decodeURIComponent(url.password)).toBe(db.POSTGRES_PASSWORD);
    expect(backend.defaultDatabase).toBe(db.POSTGRES_DB);
  });

  it('the documented overrides give valid configurations, and one password feeds both services', () => {
    const shell = { VSS_AUTH: 'noop', VSS_LOG_LEVEL: 'debug', VSS_PSQL_PASSWORD: 's3cret/with:chars', VSS_HOST_PORT: '18080' };
    const config = loadServeConfig({ ...stageEnv(stageNamed('runtime')), ...serviceEnv(vss, shell) });
    expect(config.options.auth).toEqual({ kind: 'noop' });
    expect(config.options.logLevel).toBe('debug');
    const url = new URL((config.options.backend as { url: string }).url);
    expect(decodeURIComponent(url.password)).toBe(serviceEnv(postgres, shell).POSTGRES_PASSWORD);
    expect(decodeURIComponent(url.password)).toBe('s3cret/with:chars');
    expect(withDefaults(vss.ports![0]!, shell)).toBe('127.0.0.1:18080:8080');
    // A wrong value is caught by the same loader (so the checks above are real).
    expect(() => loadServeConfig({ ...serviceEnv(vss, { VSS_AUTH: 'basic' }) })).toThrow(/VSS_AUTH/);
  });

  it('VSS_AUTH=jwt, a documented setting, starts: the JWT key is passed through from the shell or .env', () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const image = stageEnv(stageNamed('runtime'));
    const jwt = (shell: Record<string, string>) => loadServeConfig({ ...image, ...serviceEnv(vss, shell) }).options.auth;
    expect(jwt({ VSS_AUTH: 'jwt', VSS_JWT_RSA_PEM: pem })).toEqual({ kind: 'jwt', publicKeyPem: pem.trim() });
    // A .env file holds one line per variable: the key with its line breaks written as \n.
    expect(jwt({ VSS_AUTH: 'jwt', VSS_JWT_RSA_PEM: pem.replace(/\n/g, '\\n') })).toMatchObject({ kind: 'jwt' });
    // The key alone selects jwt, as it does for the server outside Docker (not a refusal because
    // the file forced VSS_AUTH=signature next to it).
    expect(jwt({ VSS_JWT_RSA_PEM: pem })).toMatchObject({ kind: 'jwt' });
    // Nothing set: signature auth, the server's default.
    expect(jwt({})).toEqual({ kind: 'signature' });
    expect(() => jwt({ VSS_AUTH: 'jwt' })).toThrow(/VSS_JWT_RSA_PEM/);
  });

  it('every tunable the header names is read from the shell by the file, and every one the file reads is named', () => {
    const header = COMPOSE_TEXT.slice(0, COMPOSE_TEXT.indexOf('\nname:'));
    const named = new Set([...header.matchAll(/\b(VSS_[A-Z0-9_]+) \(/g)].map((m) => m[1]!));
    const read = new Set([...COMPOSE_TEXT.slice(header.length).matchAll(INTERPOLATION)].map((m) => m[1]!));
    expect([...named].sort()).toEqual([...read].sort());
  });

  it('publishes the port the server binds, on loopback only, and health-checks HEALTH_PATH there', async () => {
    const bind = parseBindAddress(serviceEnv(vss).VSS_BIND_ADDRESS!);
    expect(vss.ports).toHaveLength(1);
    const [hostIp, hostPort, containerPort] = withDefaults(vss.ports![0]!).split(':');
    expect(hostIp).toBe('127.0.0.1');
    expect(Number(containerPort)).toBe(bind.port);
    expect(Number(hostPort)).toBe(DEFAULT_PORT);
    expect(VSS_CONTAINER_PORT).toBe(bind.port);
    // The health check probes HEALTH_PATH on VSS_BIND_ADDRESS's port, on loopback for 0.0.0.0.
    const moved = serviceEnv(vss).VSS_BIND_ADDRESS!.replace(`:${bind.port}`, ':');
    const probe = await healthProbe(healthChecks().compose, (port) => `${moved}${port}`);
    expect(probe.requests).toEqual([`GET 127.0.0.1:${probe.port} ${HEALTH_PATH}`]);
    expect(probe.code).toBe(0);
  });
});

describe('the health checks follow VSS_BIND_ADDRESS (a container that moves the port stays healthy)', () => {
  for (const which of ['image', 'compose'] as const) {
    it(`${which}: probes the bound port, on loopback for 0.0.0.0 and [::], the host itself otherwise`, async () => {
      const command = healthChecks()[which];
      for (const [bind, listenHost, hostHeader] of [
        ['0.0.0.0', '127.0.0.1', '127.0.0.1'],
        ['127.0.0.1', '127.0.0.1', '127.0.0.1'],
        ['[::]', '::1', '[::1]'],
        ['[::1]', '::1', '[::1]'],
      ] as const) {
        const probe = await healthProbe(command, (port) => `${bind}:${port}`, { listenHost });
        expect(probe.requests, bind).toEqual([`GET ${hostHeader}:${probe.port} ${HEALTH_PATH}`]);
        expect(probe.code, bind).toBe(0);
      }
      // Surrounding blanks are ignored, as the server ignores them.
      const padded = await healthProbe(command, (port) => ` 0.0.0.0:${port} `);
      expect(padded.code).toBe(0);
    });

    it(`${which}: a failing /health, nothing listening or a malformed address is unhealthy`, async () => {
      const command = healthChecks()[which];
      const failing = await healthProbe(command, (port) => `0.0.0.0:${port}`, { status: 503 });
      expect(failing.requests).toHaveLength(1);
      expect(failing.code).not.toBe(0);
      const port = await freePort();
      expect(await runHealthcheck(command, { VSS_BIND_ADDRESS: `0.0.0.0:${port}` })).not.toBe(0);
      expect(await runHealthcheck(command, { VSS_BIND_ADDRESS: 'not an address' })).not.toBe(0);
    });
  }
});

describe('Dockerfile against the server configuration', () => {
  it('has no lint errors or warnings', () => {
    const problems = validateDockerfile(DOCKERFILE_TEXT).filter((d) => d.severity !== undefined && d.severity <= 2);
    expect(problems.map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it('builds in a full stage and runs from a slim stage with production dependencies, as a non-root user', () => {
    const stages = dockerStages();
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime']);
    const build = stageNamed('build');
    const runs = only(build, 'RUN').map((i) => i.getArgumentsContent());
    expect(runs[0]).toMatch(/^npm ci\b/);
    expect(runs).toContain('npm run build');
    const runtime = stageNamed('runtime');
    expect((runtime.instructions[0] as From).getImage()).toMatch(/slim|alpine/);
    expect(only(runtime, 'RUN').some((i) => /npm ci .*--omit=dev/.test(i.getArgumentsContent() ?? ''))).toBe(true);
    const users = only(runtime, 'USER').map((i) => i.getArgumentsContent());
    expect(users.length).toBeGreaterThan(0);
    expect(['root', '0', '0:0']).not.toContain(users.at(-1));
    // Only compiled output comes over from the build stage.
    const fromBuild = only(runtime, 'COPY').filter((i) => (i as Copy).getFromFlag()?.getValue() === 'build');
    expect(fromBuild.map((i) => i.getArguments()[0]!.getValue())).toEqual([`${workdirOf(build)}/dist/src`]);
  });

  it('binds, exposes and health-checks the server\'s port and HEALTH_PATH', async () => {
    const runtime = stageNamed('runtime');
    const env = stageEnv(runtime);
    const config = loadServeConfig(env);
    expect(config.options.host).toBe('0.0.0.0');
    expect(only(runtime, 'EXPOSE').map((i) => Number(i.getArgumentsContent()))).toEqual([config.options.port]);
    expect(config.options.port).toBe(DEFAULT_PORT);
    const healthchecks = only(runtime, 'HEALTHCHECK');
    expect(healthchecks).toHaveLength(1);
    const moved = env.VSS_BIND_ADDRESS!.replace(`:${config.options.port}`, ':');
    const probe = await healthProbe(execForm(healthchecks[0]!), (port) => `${moved}${port}`);
    expect(probe.requests).toEqual([`GET 127.0.0.1:${probe.port} ${HEALTH_PATH}`]);
    expect(probe.code).toBe(0);
    // Without a database configured the image keeps its embedded data in its declared volume.
    expect(config.options.backend).toEqual({ kind: 'pglite', dataDir: env.VSS_DATA_DIR });
    expect(only(runtime, 'VOLUME').map((i) => execForm(i))).toEqual([[env.VSS_DATA_DIR]]);
  });

  it('starts the server the way `npm start` does', () => {
    const cmd = execForm(only(stageNamed('runtime'), 'CMD')[0]!);
    expect(cmd.join(' ')).toBe((JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start);
  });

  it('.dockerignore keeps local state out of the context but none of what the build copies', () => {
    const ignored = dockerignore().add(readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n'));
    for (const path of ['node_modules', 'dist', '.git', '.vss-data', '.env']) expect(ignored.ignores(path), path).toBe(true);
    for (const copy of contextCopies(stageNamed('build')).concat(contextCopies(stageNamed('runtime')))) {
      for (const source of copy.sources) expect(ignored.ignores(source), source).toBe(false);
    }
  });
});

interface ContextCopy {
  sources: string[];
  dest: string;
}

/** The stage's COPY instructions that read from the build context (not from another stage). */
function contextCopies(stage: Stage): ContextCopy[] {
  return only(stage, 'COPY')
    .filter((i) => (i as Copy).getFromFlag() === null)
    .map((i) => {
      const args = i.getArguments().map((a) => a.getValue());
      return { sources: args.slice(0, -1), dest: args.at(-1)! };
    });
}

/** Where a COPY destination lands, given the stage's WORKDIR mapped onto `root`. */
function copyTarget(root: string, workdir: string, dest: string, source: string, manySources: boolean): string {
  const base = dest.startsWith('/') ? join(root, relative(workdir, dest)) : join(root, dest);
  return manySources || dest.endsWith('/') ? join(base, basename(source)) : base;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((r) => {
    if (child.exitCode !== null) r(child.exitCode);
    else child.once('exit', (code) => r(code));
  });
}

/** Whether this machine lets us start a process in a new PID namespace (unshare, user namespaces). */
function canUnsharePid(): boolean {
  try {
    execFileSync('unshare', ['--map-root-user', '--pid', '--fork', '--kill-child', 'true'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Pids of the processes whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (new RegExp(`^PPid:\\s+${pid}$`, 'm').test(readFileSync(`/proc/${entry}/status`, 'utf8'))) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** Resolves once /health on `port` answers 200; fails if `child` exits first or nothing answers within 60 s. */
async function waitHealthy(child: ChildProcess, port: number, output: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${output()}`);
    if (await fetch(`http://127.0.0.1:${port}${HEALTH_PATH}`).then((r) => r.ok, () => false)) return;
    if (Date.now() > deadline) throw new Error(`no healthy server on port ${port} within 60 s:\n${output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the image, replayed on this tree without Docker', () => {
  let root: string;
  let buildRoot: string;
  let runtimeRoot: string;
  let buildOutput = '';
  let cmd: string[];

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'ldk-vss-image-'));
    buildRoot = join(root, 'build');
    runtimeRoot = join(root, 'runtime');
    const ignored = dockerignore().add(readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n'));
    const fromContext = (path: string): boolean => {
      const rel = relative(REPO_ROOT, path);
      return rel === '' || !ignored.ignores(rel.split(sep).join('/'));
    };
    // Build stage: exactly the files its COPY instructions bring in (minus .dockerignore) …
    const build = stageNamed('build');
    for (const copy of contextCopies(build)) {
      for (const source of copy.sources) {
        cpSync(join(REPO_ROOT, source), copyTarget(buildRoot, workdirOf(build), copy.dest, source, copy.sources.length > 1), { recursive: true, filter: fromContext });
      }
    }
    // … with this checkout's node_modules standing in for `npm ci` of the same lockfile.
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(buildRoot, 'node_modules'), 'dir');
    try {
      buildOutput = execFileSync('npm', ['run', 'build'], { cwd: buildRoot, encoding: 'utf8', stdio: 'pipe', timeout: 110_000 });
    } catch (error) {
      const failure = error as { stdout?: string; stderr?: string };
      buildOutput = `BUILD FAILED\n${failure.stdout ?? ''}\n${failure.stderr ?? ''}`;
    }
    // Runtime stage: its context files, what it copies from the build stage, production packages only.
    const runtime = stageNamed('runtime');
    for (const copy of contextCopies(runtime)) {
      for (const source of copy.sources) cpSync(join(REPO_ROOT, source), copyTarget(runtimeRoot, workdirOf(runtime), copy.dest, source, copy.sources.length > 1), { recursive: true });
    }
    for (const instruction of only(runtime, 'COPY').filter((i) => (i as Copy).getFromFlag()?.getValue() === 'build')) {
      const [source, dest] = instruction.getArguments().map((a) => a.getValue());
      const from = join(buildRoot, relative(workdirOf(build), source!));
      if (existsSync(from)) cpSync(from, copyTarget(runtimeRoot, workdirOf(runtime), dest!, source!, false), { recursive: true });
    }
    for (const name of productionPackages()) {
      mkdirSync(dirname(join(runtimeRoot, 'node_modules', name)), { recursive: true });
      symlinkSync(join(REPO_ROOT, 'node_modules', name), join(runtimeRoot, 'node_modules', name), 'dir');
    }
    cmd = execForm(only(runtime, 'CMD')[0]!);
  }, 120_000);

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it('npm run build on the copied files succeeds and produces the CMD\'s entry file', () => {
    expect(buildOutput).not.toMatch(/^BUILD FAILED/);
    // The runtime's packages are the production tree (`npm ci --omit=dev`): every dependency, no build or test tools.
    const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as Record<string, Record<string, string>>;
    const installed = readdirSync(join(runtimeRoot, 'node_modules')).flatMap((name) =>
      name.startsWith('@') ? readdirSync(join(runtimeRoot, 'node_modules', name)).map((sub) => `${name}/${sub}`) : [name],
    );
    expect(installed).toEqual(expect.arrayContaining(Object.keys(manifest.dependencies!)));
    expect(installed).not.toContain('typescript');
    expect(installed).not.toContain('vitest');
    expect(cmd[0]).toBe('node');
    expect(existsSync(join(runtimeRoot, cmd[1]!)), `${cmd[1]} in the runtime stage`).toBe(true);
  });

  it('every ldk-vss subcommand loads in the runtime stage (e.g. `docker run ldk-vss node dist/src/cli.js inspect --help`)', () => {
    const entry = join(runtimeRoot, cmd[1]!);
    const listing = execFileSync(process.execPath, [entry, '--help'], { cwd: runtimeRoot, encoding: 'utf8' });
    const commands = [...listing.matchAll(/^ {2}(\S+) {2}/gm)].map((m) => m[1]!);
    expect(commands).toEqual(expect.arrayContaining(['serve', 'inspect']));
    for (const command of commands) {
      const help = execFileSync(process.execPath, [entry, command, '--help'], { cwd: runtimeRoot, encoding: 'utf8' });
      expect(help, command).toMatch(/Usage: ldk-vss/);
    }
  });

  /** Starts the runtime stage's CMD with the given environment; resolves once /health answers 200. */
  async function startImage(env: Record<string, string>, port: number): Promise<{ child: ChildProcess; output: () => string }> {
    let output = '';
    const [file, ...args] = cmd;
    expect(file).toBe('node');
    const child = spawn(process.execPath, args, { cwd: runtimeRoot, env: { PATH: process.env.PATH ?? '', HOME: root, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${output}`);
      const ok = await fetch(`http://127.0.0.1:${port}${HEALTH_PATH}`).then((r) => r.ok, () => false);
      if (ok) return { child, output: () => output };
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`no healthy server on port ${port} within 60 s:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** What both runs check once the server is up: the VSS surface, both health checks, a clean SIGTERM stop. */
  async function checkRunningImage(child: ChildProcess, port: number, env: Record<string, string>): Promise<void> {
    const reply = await fetch(`http://127.0.0.1:${port}/vss/getObject`, { method: 'POST', body: new Uint8Array(0) });
    expect(reply.status).toBe(401); // signature auth, no credentials
    expect(reply.headers.get('vss-protocol-version')).toBe('0');
    const { image, compose } = healthChecks();
    // The checks get the container's environment, whose VSS_BIND_ADDRESS names the moved port.
    expect(await runHealthcheck(image, env)).toBe(0);
    expect(await runHealthcheck(compose, env)).toBe(0);
    child.kill('SIGTERM'); // what `docker stop` sends
    expect(await exitOf(child)).toBe(0);
    expect(await runHealthcheck(image, env)).not.toBe(0);
  }

  it('`docker run` without a database: production dependencies only, embedded backend in VSS_DATA_DIR, healthy', async () => {
    const port = await freePort();
    const imageEnv = stageEnv(stageNamed('runtime'));
    const dataDir = join(root, 'data');
    const env = { ...imageEnv, VSS_BIND_ADDRESS: imageEnv.VSS_BIND_ADDRESS!.replace(`:${DEFAULT_PORT}`, `:${port}`), VSS_DATA_DIR: dataDir };
    const { child, output } = await startImage(env, port);
    try {
      await checkRunningImage(child, port, env);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    expect(readdirSync(dataDir).length, output()).toBeGreaterThan(0);
  });

  const unsharePid = canUnsharePid();
  it.skipIf(!unsharePid)(`as PID 1 of its own PID namespace, as in a container: \`docker stop\`'s SIGTERM from outside stops it cleanly${unsharePid ? '' : ' — SKIPPED: cannot unshare a PID namespace here'}`, async () => {
    // The kernel delivers a signal from outside a PID namespace to the namespace's init only if it
    // has a handler for it: were the server to rely on Node's default action, `docker stop` would
    // wait out its grace period and SIGKILL it (for the embedded database, a crash).
    const port = await freePort();
    const imageEnv = stageEnv(stageNamed('runtime'));
    const env = { ...imageEnv, VSS_BIND_ADDRESS: imageEnv.VSS_BIND_ADDRESS!.replace(`:${DEFAULT_PORT}`, `:${port}`), VSS_DATA_DIR: join(root, 'data-pid1') };
    const [file, ...args] = cmd;
    expect(file).toBe('node');
    let output = '';
    const namespace = spawn('unshare', ['--map-root-user', '--pid', '--fork', '--kill-child', process.execPath, ...args], {
      cwd: runtimeRoot,
      env: { PATH: process.env.PATH ?? '', HOME: root, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    namespace.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    namespace.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    try {
      await waitHealthy(namespace, port, () => output);
      const server = childrenOf(namespace.pid!);
      expect(server, output).toHaveLength(1);
      // NSpid: its pid here, then 1 in its own namespace.
      expect(readFileSync(`/proc/${server[0]}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
      process.kill(server[0]!, 'SIGTERM');
      expect(await exitOf(namespace), output).toBe(0);
      expect(output).toMatch(/shutting down/);
    } finally {
      if (namespace.exitCode === null) namespace.kill('SIGKILL');
    }
  }, 120_000);

  const databaseUrl = process.env.TEST_DATABASE_URL;
  it.skipIf(!databaseUrl)('the compose environment against real PostgreSQL (TEST_DATABASE_URL): healthy, creates its database', async () => {
    const target = new URL(databaseUrl!);
    const port = await freePort();
    const database = `ldk_vss_compose_${process.pid}`;
    const composeEnv = serviceEnv(loadCompose().services[VSS_SERVICE]!);
    // Only what differs between the compose network and this machine: addresses and names.
    const env = {
      ...stageEnv(stageNamed('runtime')),
      ...composeEnv,
      VSS_BIND_ADDRESS: composeEnv.VSS_BIND_ADDRESS!.replace(`:${DEFAULT_PORT}`, `:${port}`),
      VSS_PSQL_ADDRESS: `${target.hostname}:${target.port || '5432'}`,
      VSS_PSQL_USERNAME: decodeURIComponent(target.username) || composeEnv.VSS_PSQL_USERNAME!,
      VSS_PSQL_PASSWORD: decodeURIComponent(target.password) || composeEnv.VSS_PSQL_PASSWORD!,
      VSS_PSQL_VSS_DB: database,
    };
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${database}`);
      const { child } = await startImage(env, port);
      try {
        await checkRunningImage(child, port, env);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      const created = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
      expect(created.rowCount).toBe(1);
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
      await admin.end();
    }
  });
});
