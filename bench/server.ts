/**
 * npm run bench:server
 *
 * The same workload three ways, in one run and one process tree, against the same PostgreSQL:
 *   raw    — this process talks to PostgreSQL through `pg`, running the server's single-row
 *            statements (the reference's upsert, and the keyed select), one per operation;
 *   server — `ldk-vss serve` in a child process (PostgreSQL backend, default signature auth),
 *            driven over HTTP/1.1 keep-alive with protobuf PutObjects (one item, version -1,
 *            as LDK Node writes) and GetObject;
 *   floor  — the same HTTP client against a do-nothing node:http server: what the HTTP hop
 *            alone allows on this machine.
 * 1 KiB values, 1/16/64 concurrent clients, puts and gets of keys drawn from a pre-filled set
 * (so both sides upsert and read the same rows). Prints ops/s, p50/p99 latency, CPU per
 * operation and the server/raw throughput ratio. Target: ≥ 0.8x at concurrency 16.
 *
 * Database: DATABASE_URL, else TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres;
 * the benchmark uses (and afterwards drops) its own database `ldkvss_bench_<pid>` on that server.
 * The machine may be shared, so the sides are measured in alternating rounds and the median
 * round is reported for each; an unreported first pass warms up client and server.
 * Knobs: BENCH_ROUNDS (default 5), BENCH_SECONDS (per round and side, default 2),
 * BENCH_KEYS (default 5000), BENCH_POOL (default 32: the raw side's pool is min(concurrency,
 * BENCH_POOL) connections, the server's VSS_PSQL_POOL_SIZE is BENCH_POOL), BENCH_CONCURRENCY
 * (default 1,16,64), BENCH_OPS (default put,get), BENCH_ROUTING=express (the server routes the
 * operations through express, for comparison), BENCH_SERVER_NODE_ARGS (e.g. `--cpu-prof
 * --cpu-prof-dir=/tmp/prof` to profile the server).
 */
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { cpus, loadavg } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Pool as HttpPool } from 'undici';
import { keyValue, vss } from '../src/protocol/index.js';
import { choiceListSetting, choiceSetting, integerListSetting, integerSetting } from '../harness/tool-settings.js';
import { cleanUpOnInterrupt } from '../harness/interrupt.js';

const BASE_URL = process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DATABASE = `ldkvss_bench_${process.pid}`;
/** Child processes still running, stopped by an interrupt's clean-up. */
const children = new Set<ChildProcess>();

/**
 * An idle pooled connection that fails: expected once an interrupt's DROP DATABASE ... WITH
 * (FORCE) ends every connection to the database; otherwise the run cannot be trusted.
 */
function onIdleClientError(err: Error): void {
  if (interruption.interrupted) return;
  console.error(`bench:server: a PostgreSQL connection failed: ${err.message}`);
  process.exit(1);
}

// Ctrl-C would otherwise skip the clean-up at the end and leave the database behind.
const interruption = cleanUpOnInterrupt(
  (signal) => `bench:server interrupted (${signal}): dropping its database ${DATABASE}`,
  async () => {
    // The server and HTTP-floor children first: a signal sent to this process alone (kill, a
    // supervisor) would leave them running, the server holding connections to the database.
    await Promise.all([...children].map((child) => new Promise((resolve) => {
      child.once('exit', resolve);
      if (!child.kill('SIGTERM')) resolve(undefined);
    })));
    const admin = new pg.Client({ connectionString: BASE_URL, connectionTimeoutMillis: 5_000 });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS "${DATABASE}" WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  },
);
const ROUNDS = integerSetting('BENCH_ROUNDS', 5);
const SECONDS = integerSetting('BENCH_SECONDS', 2);
const WARMUP_SECONDS = 0.5;
const WARMUP_PASS_SECONDS = 1.5;
const KEY_COUNT = integerSetting('BENCH_KEYS', 5000);
const POOL_SIZE = integerSetting('BENCH_POOL', 32);
const CONCURRENCY = integerListSetting('BENCH_CONCURRENCY', [1, 16, 64]);
const OPS = choiceListSetting('BENCH_OPS', ['put', 'get'], ['put', 'get']);
const ROUTING = choiceSetting('BENCH_ROUTING', ['direct', 'express'], 'direct');
const HTTP_CLIENT = choiceSetting('BENCH_HTTP_CLIENT', ['undici', 'node'], 'undici') === 'node' ? 'node:http' : 'undici';
const VALUE = randomBytes(1024);
const STORE_ID = 'bench';
const ROOT = fileURLToPath(new URL('..', import.meta.url));

function databaseUrl(name: string): string {
  const url = new URL(BASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

// The statements the server's SQL backend runs (src/server/backends/sql-backend.ts).
const UPSERT = {
  name: 'bench_upsert',
  text: `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at)
    VALUES ($1, $2, $3, $4, 1, now(), now())
    ON CONFLICT (user_token, store_id, key) DO UPDATE
    SET value = EXCLUDED.value, version = 1, last_updated_at = EXCLUDED.last_updated_at`,
};
const SELECT = { name: 'bench_select', text: 'SELECT version, value FROM vss_db WHERE user_token = $1 AND store_id = $2 AND key = $3' };

// --- signature auth, as a client would produce it (one signature per second) ----------------
const SALT = new TextEncoder().encode('VSS Signature Authorizer Signing Salt Constant..................');
const secretKey = secp256k1.utils.randomSecretKey();
const pubkey = secp256k1.getPublicKey(secretKey, true);
const USER_TOKEN = Buffer.from(pubkey).toString('hex');
let cachedHeader = { time: '', value: '' };
function authorization(): string {
  const time = String(Math.floor(Date.now() / 1000));
  if (cachedHeader.time !== time) {
    const message = new Uint8Array([...SALT, ...pubkey, ...new TextEncoder().encode(time)]);
    const signature = secp256k1.sign(sha256(message), secretKey, { prehash: false });
    cachedHeader = { time, value: USER_TOKEN + Buffer.from(signature).toString('hex') + time };
  }
  return cachedHeader.value;
}

// --- measurement -------------------------------------------------------------------------------
interface Result {
  opsPerSecond: number;
  p50: number;
  p99: number;
  /** CPU time per operation in µs: this process (the client), the server process, PostgreSQL. */
  cpu: { client: number; server: number; postgres: number };
}

const CLOCK_TICKS_PER_SECOND = 100;

/** user+system CPU seconds of a process, from /proc (0 if it is gone or /proc is unavailable). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

interface CpuProbe {
  /** CPU seconds used so far by the client, the server and this benchmark's PostgreSQL backends. */
  read(): Promise<{ client: number; server: number; postgres: number }>;
}

/**
 * Counts only the PostgreSQL backends connected to the benchmark database (the machine may be
 * shared). Backends come and go (a pool closes idle connections), so the PostgreSQL figure is
 * the sum of the last CPU reading of every backend seen so far: one that exits keeps its last
 * reading instead of leaving the sum, which would make a round's difference negative.
 */
function cpuProbe(admin: pg.Client, serverPid: number): CpuProbe {
  const lastReading = new Map<number, number>();
  return {
    async read() {
      const backends = await admin.query('SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [DATABASE]);
      for (const { pid } of backends.rows as Array<{ pid: number }>) {
        const seconds = cpuSeconds(pid);
        if (seconds > 0) lastReading.set(pid, seconds);
      }
      const client = process.cpuUsage();
      return {
        client: (client.user + client.system) / 1e6,
        server: cpuSeconds(serverPid),
        postgres: [...lastReading.values()].reduce((sum, seconds) => sum + seconds, 0),
      };
    },
  };
}

const randomKey = () => `key-${Math.floor(Math.random() * KEY_COUNT)}`;

/** Runs `op` from `concurrency` loops for `seconds`; latencies in ms. */
async function measure(concurrency: number, seconds: number, op: (key: string) => Promise<void>, probe: CpuProbe): Promise<Result> {
  const latencies: number[] = [];
  const cpuBefore = await probe.read();
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        await op(randomKey());
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpuAfter = await probe.read();
  latencies.sort((a, b) => a - b);
  // Nearest rank (as src/ldk/report-format.ts): the smallest latency with at least q of the samples at or below it.
  const pick = (q: number) => latencies[Math.max(0, Math.ceil(q * latencies.length) - 1)];
  const perOp = (key: keyof typeof cpuAfter) => ((cpuAfter[key] - cpuBefore[key]) * 1e6) / latencies.length;
  return {
    opsPerSecond: latencies.length / elapsed,
    p50: pick(0.5),
    p99: pick(0.99),
    cpu: { client: perOp('client'), server: perOp('server'), postgres: perOp('postgres') },
  };
}

/** The round with the median throughput (its latencies and CPU figures come along). */
function medianRound(results: Result[]): Result {
  return [...results].sort((a, b) => a.opsPerSecond - b.opsPerSecond)[Math.floor(results.length / 2)];
}

/** Alternates short rounds of each side, so a change in machine load hits every side alike; median round of each. */
async function compare(concurrency: number, sides: ReadonlyArray<(key: string) => Promise<void>>, probe: CpuProbe): Promise<Result[]> {
  for (const side of sides) await measure(concurrency, WARMUP_SECONDS, side, probe);
  const rounds: Result[][] = sides.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, side] of sides.entries()) rounds[i].push(await measure(concurrency, SECONDS, side, probe));
  }
  return rounds.map(medianRound);
}

// --- server child process ----------------------------------------------------------------------
/**
 * The ceiling the HTTP hop alone sets on this machine: a node:http server in its own process
 * that reads each request and answers the bytes the VSS server would (no authentication, no
 * protobuf, no database), driven by the same client.
 */
async function startHttpFloor(getResponse: Uint8Array): Promise<{ url: string; close(): Promise<void> }> {
  const script = `
    const http = require('node:http');
    const answers = { '/vss/getObject': Buffer.from(process.env.GET_RESPONSE, 'hex'), '/vss/putObjects': Buffer.alloc(0) };
    const server = http.createServer({ keepAliveTimeout: 65000 }, (req, res) => {
      req.on('data', () => {});
      req.on('end', () => {
        res.setHeader('vss-protocol-version', '0');
        res.setHeader('content-type', 'application/octet-stream');
        res.end(answers[req.url]);
      });
    });
    server.listen(0, '127.0.0.1', () => console.log(server.address().port));
    process.once('SIGTERM', () => process.exit(0));`;
  const child = spawn(process.execPath, ['-e', script], {
    env: { ...process.env, GET_RESPONSE: Buffer.from(getResponse).toString('hex') },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const port = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`HTTP floor server exited with ${code}`)));
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    url: `http://127.0.0.1:${port}/vss`,
    async close() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

interface BatchCounts {
  single: number;
  batches: number;
  batchedRequests: number;
}
type ServerBatching = { get: BatchCounts; put: Record<string, BatchCounts> };

async function startServer(): Promise<{ child: ChildProcess; url: string; batching(): ServerBatching | undefined; close(): Promise<void> }> {
  // Like `npm start`: the compiled CLI (tsx's loader thread would add its own overhead to the
  // server's figures); the TypeScript sources only when nothing is built.
  const built = existsSync(join(ROOT, 'dist/src/cli.js'));
  if (!built) console.warn('dist/ not built (npm run build): running the server through tsx, which costs extra CPU');
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((arg) => arg.length > 0);
  if (!built) nodeArgs.push('--import', 'tsx');
  const sources = built ? 'dist/src' : 'src';
  // The express variant: the same configuration, through the library option the CLI does not expose.
  const serveExpressRouted = `
    import pino from 'pino';
    import { loadServeConfig } from './${sources}/server/config.js';
    import { startVssServer } from './${sources}/server/index.js';
    const config = loadServeConfig(process.env);
    const server = await startVssServer({ ...config.options, logger: pino({ level: config.options.logLevel }), operationRouting: 'express' });
    process.once('SIGTERM', () => server.close().then(() => process.exit(0)));`;
  const command = ROUTING === 'express' ? ['--input-type=module', '-e', serveExpressRouted] : [`${sources}/cli.${built ? 'js' : 'ts'}`, 'serve'];
  const child = spawn(process.execPath, [...nodeArgs, ...command], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl(DATABASE),
      VSS_BIND_ADDRESS: '127.0.0.1:0',
      VSS_PSQL_POOL_SIZE: String(POOL_SIZE),
      VSS_LOG_LEVEL: 'info',
      VSS_AUTH: 'signature',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  let batching: ServerBatching | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string; batching?: ServerBatching };
        if (entry.msg === 'VSS server listening' && entry.url) resolve(entry.url);
        if (entry.batching) batching = entry.batching; // logged by the backend as it closes
      } catch {
        /* not a log line */
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    child,
    url,
    batching: () => batching,
    async close() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Sends keep-alive HTTP/1.1 POSTs to one origin and returns the response bodies. */
interface HttpLoadClient {
  poster(url: string): (body: Uint8Array) => Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * The load generator's HTTP client. It shares the two vCPUs with the server and PostgreSQL, so
 * the lighter it is the less it takes from what is measured (a load generator on its own machine
 * would take nothing). Default: undici's connection pool, the lightest Node HTTP/1.1 client here
 * (about 40 µs of CPU per request against about 53 µs for node:http, on a do-nothing server);
 * BENCH_HTTP_CLIENT=node selects node:http with a keep-alive agent for comparison. Either way the
 * target URL is parsed once, as a load generator does.
 */
function httpLoadClient(concurrency: number): HttpLoadClient {
  if (HTTP_CLIENT === 'node:http') {
    const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
    return {
      poster: (url) => nodeHttpPoster(agent, url),
      async close() {
        agent.destroy();
      },
    };
  }
  const pools = new Map<string, HttpPool>();
  return {
    poster(url) {
      const { origin, pathname } = new URL(url);
      let pool = pools.get(origin);
      if (pool === undefined) pools.set(origin, (pool = new HttpPool(origin, { connections: concurrency, pipelining: 1 })));
      const target = pool;
      return async (body) => {
        const headers = { 'content-type': 'application/octet-stream', authorization: authorization() };
        const response = await target.request({ path: pathname, method: 'POST', headers, body });
        const bytes = Buffer.from(await response.body.arrayBuffer());
        if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode}`);
        return bytes;
      };
    },
    async close() {
      await Promise.all([...pools.values()].map((pool) => pool.close()));
    },
  };
}

function nodeHttpPoster(agent: http.Agent, url: string): (body: Uint8Array) => Promise<Buffer> {
  const { hostname, port, pathname } = new URL(url);
  return (body) =>
    new Promise((resolve, reject) => {
      const headers = { 'content-type': 'application/octet-stream', 'content-length': body.length, authorization: authorization() };
      const request = http.request({ host: hostname, port, path: pathname, method: 'POST', agent, headers }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          if (response.statusCode !== 200) reject(new Error(`HTTP ${response.statusCode}`));
          else resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
        });
        response.on('error', reject);
      });
      request.on('error', reject);
      request.end(body);
    });
}

// --- main ------------------------------------------------------------------------------------
async function main(): Promise<void> {
  const admin = new pg.Client({ connectionString: BASE_URL, connectionTimeoutMillis: 5_000 });
  await admin.connect().catch((error: unknown) => {
    const where = new URL(BASE_URL);
    process.stderr.write(
      `bench:server needs PostgreSQL (DATABASE_URL, else TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres): ` +
        `cannot connect to ${where.host}: ${(error as Error).message || String(error)}\n`,
    );
    process.exit(1);
  });
  await admin.query(`DROP DATABASE IF EXISTS "${DATABASE}" WITH (FORCE)`);
  const server = await startServer(); // creates the database and applies the migrations
  const httpFloor = await startHttpFloor(vss.GetObjectResponse.encode({ value: keyValue('key-0', 1n, VALUE) }).finish());
  try {
    // Pre-fill the key set so raw and server both upsert and read existing rows.
    const fill = new pg.Pool({ connectionString: databaseUrl(DATABASE), max: 4 });
    fill.on('error', onIdleClientError);
    for (let i = 0; i < KEY_COUNT; i += 500) {
      const keys = Array.from({ length: Math.min(500, KEY_COUNT - i) }, (_, j) => `key-${i + j}`);
      await fill.query(
        `INSERT INTO vss_db (user_token, store_id, key, value, version, created_at, last_updated_at)
         SELECT $1, $2, k, $3, 1, now(), now() FROM unnest($4::text[]) AS k`,
        [USER_TOKEN, STORE_ID, VALUE, keys],
      );
    }
    await fill.query('VACUUM ANALYZE vss_db');
    await fill.end();

    console.log(`ldk-vss server benchmark: 1 KiB values, ${KEY_COUNT} keys, median of ${ROUNDS} alternating ${SECONDS}s rounds`);
    console.log(
      `connections: raw = pg pool of min(concurrency, ${POOL_SIZE}); server = VSS_PSQL_POOL_SIZE=${POOL_SIZE}, where batching keeps ` +
        `one statement per kind (get, each put kind) running and queues the rest for the next; operations routed ${ROUTING === 'express' ? 'through express' : 'directly'}`,
    );
    console.log(`PostgreSQL ${(await admin.query('SHOW server_version')).rows[0].server_version} at ${new URL(BASE_URL).host}, database ${DATABASE}; ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(1)}`);
    console.log('cpu µs/op = CPU time per operation of client / server / PostgreSQL backends (raw has no server)');
    console.log(`HTTP load generator: ${HTTP_CLIENT} (BENCH_HTTP_CLIENT=node for node:http)`);
    console.log('http floor = the same HTTP client against a do-nothing node:http server (no auth, protobuf or database): the ceiling of the HTTP hop here\n');
    const header =
      `${'op'.padEnd(4)} ${'conc'.padStart(4)} | ${'raw ops/s'.padStart(9)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'cpu µs/op'.padStart(15)} | ` +
      `${'srv ops/s'.padStart(9)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'cpu µs/op'.padStart(15)} | ratio | ${'http floor'.padStart(16)}`;
    console.log(header);
    console.log('-'.repeat(header.length));
    const probe = cpuProbe(admin, server.child.pid as number);
    const cpuText = (r: Result, withServer: boolean) =>
      (withServer ? `${r.cpu.client.toFixed(0)}/${r.cpu.server.toFixed(0)}/${r.cpu.postgres.toFixed(0)}` : `${r.cpu.client.toFixed(0)}/-/${r.cpu.postgres.toFixed(0)}`).padStart(15);
    const ratios: Record<string, number> = {};
    // A first, unreported pass warms up the JIT of client and server (a server runs warm in
    // production, and the first rows would otherwise pay for compilation).
    for (const [concurrency, warmingUp] of [[16, true] as const, ...CONCURRENCY.map((c) => [c, false] as const)]) {
      const pool = new pg.Pool({ connectionString: databaseUrl(DATABASE), max: Math.min(concurrency, POOL_SIZE) });
      pool.on('error', onIdleClientError);
      const httpClient = httpLoadClient(concurrency);
      const rawPut = (key: string) => pool.query({ ...UPSERT, values: [USER_TOKEN, STORE_ID, key, VALUE] }).then(() => undefined);
      const rawGet = (key: string) =>
        pool.query({ ...SELECT, values: [USER_TOKEN, STORE_ID, key] }).then((r) => {
          if (r.rows[0]?.value?.length !== VALUE.length) throw new Error('raw get returned the wrong value');
        });
      const vssPut = (baseUrl: string) => {
        const post = httpClient.poster(`${baseUrl}/putObjects`);
        return (key: string) => post(vss.PutObjectRequest.encode({ storeId: STORE_ID, transactionItems: [keyValue(key, -1n, VALUE)] }).finish()).then(() => undefined);
      };
      const vssGet = (baseUrl: string) => {
        const post = httpClient.poster(`${baseUrl}/getObject`);
        return (key: string) =>
          post(vss.GetObjectRequest.encode({ storeId: STORE_ID, key }).finish()).then((body) => {
            if (vss.GetObjectResponse.decode(body).value?.value?.length !== VALUE.length) throw new Error('get returned the wrong value');
          });
      };
      for (const [name, raw, served, floor] of [
        ['put', rawPut, vssPut(server.url), vssPut(httpFloor.url)],
        ['get', rawGet, vssGet(server.url), vssGet(httpFloor.url)],
      ] as const) {
        if (!OPS.includes(name)) continue;
        if (warmingUp) {
          for (const side of [raw, served, floor]) await measure(concurrency, WARMUP_PASS_SECONDS, side, probe);
          continue;
        }
        const [r, s, f] = await compare(concurrency, [raw, served, floor], probe);
        const ratio = s.opsPerSecond / r.opsPerSecond;
        ratios[`${name}@${concurrency}`] = ratio;
        console.log(
          `${name.padEnd(4)} ${String(concurrency).padStart(4)} | ${r.opsPerSecond.toFixed(0).padStart(9)} ${r.p50.toFixed(2).padStart(7)} ${r.p99.toFixed(2).padStart(7)} ${cpuText(r, false)} | ` +
            `${s.opsPerSecond.toFixed(0).padStart(9)} ${s.p50.toFixed(2).padStart(7)} ${s.p99.toFixed(2).padStart(7)} ${cpuText(s, true)} | ${ratio.toFixed(2)}x | ` +
            `${f.opsPerSecond.toFixed(0).padStart(9)} ${(f.opsPerSecond / r.opsPerSecond).toFixed(2).padStart(5)}x`,
        );
      }
      await pool.end();
      await httpClient.close();
    }
    if (ratios['put@16'] === undefined || ratios['get@16'] === undefined) return;
    const atTarget = ['put@16', 'get@16'].map((k) => `${k} ${ratios[k].toFixed(2)}x`).join(', ');
    const met = ratios['put@16'] >= 0.8 && ratios['get@16'] >= 0.8;
    console.log(`\ntarget ≥ 0.80x of raw PostgreSQL at concurrency 16: ${atTarget} — ${met ? 'met' : 'NOT met'}`);
  } finally {
    await httpFloor.close();
    await server.close();
    const batching = server.batching();
    if (batching) {
      const perStatement = (c: BatchCounts) =>
        `${c.single + c.batchedRequests} requests in ${c.single + c.batches} statements (${c.single} alone; ${((c.single + c.batchedRequests) / Math.max(1, c.single + c.batches)).toFixed(1)} per statement)`;
      console.log(`server batching over the whole run: gets ${perStatement(batching.get)}; unconditional puts ${perStatement(batching.put.unconditional)}`);
    }
    await admin.query(`DROP DATABASE IF EXISTS "${DATABASE}" WITH (FORCE)`);
    await admin.end();
  }
}

main().catch((error: unknown) => {
  // After an interrupt the run fails under its clean-up (its connections are ended): not news.
  if (interruption.interrupted) return;
  console.error(error);
  process.exit(1);
});
