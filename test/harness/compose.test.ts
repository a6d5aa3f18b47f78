/**
 * The Docker stack, checked without a Docker engine (none on this machine kind):
 *  - the driver (harness/compose.ts): with the real docker CLI and no engine it says so in one
 *    line and exits non-zero; with a stand-in docker executable it issues the right compose
 *    commands and reports compose failures in one line;
 *  - the files: docker-compose.yml and the Dockerfile agree with the server's real configuration,
 *    and the image's build and start command work on this tree.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  checkDocker,
  ComposeCommandError,
  DEFAULT_COMPOSE_FILE,
  DockerUnavailableError,
  stackDown,
  stackStatus,
  stackUp,
} from '../../harness/compose.js';

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
if (command === 'version') { process.stdout.write('2.29.7\\n'); process.exit(0); }
if (command === 'up') {
  if (scenario === 'up-fails') fail(17, ' => ERROR [build 4/9] RUN npm ci\\nfailed to solve: process "/bin/sh -c npm ci" did not complete successfully: exit code: 1');
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

  describe.skipIf(!dockerCliInstalled())('with the real docker CLI and no reachable engine', () => {
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
    expect(result.stderr.trim()).toMatch(/^usage: .*up \| down \[--volumes\] \| status$/);
  });

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
        ['compose', '-f', DEFAULT_COMPOSE_FILE, 'up', '--build', '--wait', '-d'],
        ['compose', '-f', DEFAULT_COMPOSE_FILE, 'port', 'vss', '8080'],
      ]);
      expect(composeCalls[1]!.cwd).toBe(REPO_ROOT);

      const cli = await runDriver(['up'], standIn.env('ok', healthPort));
      expect(cli.code).toBe(0);
      expect(cli.stdout).toContain(`ldk-vss stack is up: VSS at http://127.0.0.1:${healthPort}/vss`);
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
