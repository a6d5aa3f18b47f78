/**
 * `ldk-vss inspect`: what did my wallet actually store?
 *
 * Lists a VSS store's keys in LDK's terms (namespaces and key deobfuscated, what each entry
 * is, its version, stored and plaintext sizes) and dumps one decrypted value. Works with the
 * wallet's 64-byte seed (LDK Node's derivation, signature auth from the same seed) or with
 * explicit keys. Read-only: it never writes to the store.
 *
 *   ldk-vss inspect --server-url http://127.0.0.1:8080/vss --store-id my-wallet --seed <128 hex>
 *   ldk-vss inspect ... --dump monitors//<txid>_<index> --format base64
 */
import { parseArgs } from 'node:util';
import { VssClient, VssClientError, VssError, vssClientFromConfig, NoSuchKeyError, type VssAuthConfig } from '../client/index.js';
import { urlForMessages } from '../client/http.js';
import { decryptStorable, deriveVssKeys, KeyObfuscator } from '../crypto/index.js';
import { int64ToBigInt } from '../protocol/index.js';
import { StoreLayout, VSS_SCHEMA_VERSION_KEY, decodeSchemaVersion, type SchemaVersion } from '../store/index.js';
import type { StoreKey, VssStoreKeys } from '../store/index.js';
import { resolveKeys } from '../store/vss-store.js';
import {
  ARCHIVED_CHANNEL_MONITOR_NAMESPACE,
  CHANNEL_MANAGER_NAMESPACE,
  CHANNEL_MONITOR_NAMESPACE,
  CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE,
  NETWORK_GRAPH_NAMESPACE,
  OUTPUT_SWEEPER_NAMESPACE,
  SCORER_NAMESPACE,
} from './layout.js';
import { escapeControl, formatBytes, table } from './report-format.js';

export type InspectKeys = VssStoreKeys;

export interface InspectOptions {
  serverUrl: string;
  storeId: string;
  keys: InspectKeys;
  /** Default: signature auth from the seed; `none` with explicit keys. */
  auth?: VssAuthConfig;
  /** Parallel reads when measuring values. Default 16. */
  concurrency?: number;
  timeoutMs?: number;
}

export interface InspectedKey {
  /** The key as the server stores it (obfuscated). */
  storeKey: string;
  /** LDK's address, if the key deobfuscates with these keys. */
  address?: StoreKey;
  /** What the entry is in LDK's layout. */
  meaning: string;
  version: bigint;
  /** Bytes on the server (the encrypted Storable). */
  storedBytes: number;
  /** Bytes after decryption. */
  plaintextBytes?: number;
  /** Why the entry could not be read or decrypted. */
  problem?: string;
}

export interface StoreInspection {
  storeId: string;
  /** 1: LDK Node's current layout; 0: ldk-node ≤ 0.6; undefined: empty store. */
  schema: SchemaVersion | undefined;
  keys: InspectedKey[];
  totalStoredBytes: number;
}

/** The inspected store cannot be read as asked (bad keys, unknown key, unreachable server...). */
export class InspectError extends Error {
  override name = 'InspectError';
}

/** The command line is wrong (a missing or malformed option): exit code 2, like `ldk-vss serve`. */
export class InspectUsageError extends InspectError {
  override name = 'InspectUsageError';
}

const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);
/** The `problem` of a listed key gone by the time it was read (a running wallet's lazy removal). */
const REMOVED_WHILE_LISTING = 'removed while listing';

/**
 * Keys these keys cannot read: not deobfuscating, or not decrypting. A key removed between the
 * listing and its read is not one of them (the wallet removed it; nothing is wrong with the seed).
 */
function unreadableKeys(inspection: StoreInspection): InspectedKey[] {
  return inspection.keys.filter((k) => !k.address || (k.problem !== undefined && k.problem !== REMOVED_WHILE_LISTING));
}

/** What an LDK (or LDK Node) key is. */
export function ldkMeaning(k: StoreKey): string {
  const { primaryNamespace: p, secondaryNamespace: s, key } = k;
  if (p === CHANNEL_MANAGER_NAMESPACE.primary && s === '' && key === CHANNEL_MANAGER_NAMESPACE.key) return 'ChannelManager';
  if (p === '' && s === '' && key === NETWORK_GRAPH_NAMESPACE.key) return 'NetworkGraph';
  if (p === '' && s === '' && key === SCORER_NAMESPACE.key) return 'scorer';
  if (p === '' && s === '' && key === OUTPUT_SWEEPER_NAMESPACE.key) return 'OutputSweeper state';
  if (p === '' && s === '' && key === VSS_SCHEMA_VERSION_KEY) return 'VSS schema version marker';
  if (p === CHANNEL_MONITOR_NAMESPACE.primary && s === '') return `ChannelMonitor of ${key}`;
  if (p === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE) return `ChannelMonitorUpdate ${key} of ${s}`;
  if (p === ARCHIVED_CHANNEL_MONITOR_NAMESPACE.primary && s === '') return `archived ChannelMonitor of ${key}`;
  if (p === 'payments') return 'LDK Node payment';
  if (p.startsWith('bdk_wallet')) return 'BDK on-chain wallet';
  if (p === '' && s === '' && key === 'peers') return 'LDK Node peer store';
  if (p === '' && s === '' && key === 'node_metrics') return 'LDK Node metrics';
  return 'application data';
}

/** The address of a listed store key under either schema, or undefined. */
function parseKey(storeKey: string, layouts: StoreLayout[]): StoreKey | undefined {
  for (const layout of layouts) {
    try {
      return layout.parse(storeKey);
    } catch {
      // not this schema (or not our key)
    }
  }
  return undefined;
}

class StoreReader {
  readonly client: VssClient;
  readonly dataKey: Uint8Array;
  readonly v1: StoreLayout;
  readonly v0: StoreLayout;
  readonly sigsAuth: boolean;

  constructor(readonly options: InspectOptions) {
    const keys = resolveKeys(options.keys);
    const auth: VssAuthConfig = options.auth ?? ('seed' in options.keys ? { kind: 'sigs', secretKey: deriveVssKeys(options.keys.seed).sigsAuthSecretKey } : { kind: 'none' });
    this.sigsAuth = auth.kind === 'sigs';
    this.client = vssClientFromConfig({ baseUrl: options.serverUrl, auth, timeoutMs: options.timeoutMs ?? 10_000, retry: { baseDelayMs: 50, maxAttempts: 3, maxTotalDelayMs: 2_000, maxJitterMs: 20 } });
    this.dataKey = keys.dataEncryptionKey;
    const obfuscator = new KeyObfuscator(keys.obfuscationMasterKey);
    this.v1 = new StoreLayout(1, obfuscator);
    this.v0 = new StoreLayout(0, obfuscator);
  }

  async listAll(): Promise<{ key: string; version: bigint }[]> {
    const out: { key: string; version: bigint }[] = [];
    let pageToken: string | undefined;
    // A server that hands out a token it handed out before would keep this loop going forever.
    const seenTokens = new Set<string>();
    do {
      const res = await this.client.listKeyVersions({ storeId: this.options.storeId, ...(pageToken ? { pageToken } : {}) });
      for (const kv of res.keyVersions ?? []) out.push({ key: kv.key ?? '', version: int64ToBigInt(kv.version) });
      pageToken = res.nextPageToken || undefined;
      if (pageToken !== undefined) {
        if (seenTokens.has(pageToken)) throw new InspectError(`the server repeated the page token ${JSON.stringify(pageToken)} while listing keys`);
        seenTokens.add(pageToken);
      }
    } while (pageToken);
    return out;
  }

  /** The stored bytes of a key, or undefined if it does not exist. */
  async get(storeKey: string): Promise<{ storable: Uint8Array; version: bigint } | undefined> {
    try {
      const res = await this.client.getObject({ storeId: this.options.storeId, key: storeKey });
      return { storable: res.value?.value ?? EMPTY, version: int64ToBigInt(res.value?.version) };
    } catch (err) {
      if (err instanceof NoSuchKeyError) return undefined;
      throw err;
    }
  }

  async schema(): Promise<SchemaVersion | undefined> {
    const marker = this.v1.schemaMarker();
    const found = await this.get(marker.storeKey);
    if (!found) return undefined;
    let plaintext: Uint8Array;
    try {
      plaintext = decryptStorable(found.storable, this.dataKey, marker.aad).value;
    } catch (err) {
      // Read first by every command: without this the bare decryption error reads as if the
      // value asked for (say --dump //manager) were the one that failed.
      throw new InspectError(
        `the store's schema marker (${formatAddress({ primaryNamespace: '', secondaryNamespace: '', key: VSS_SCHEMA_VERSION_KEY })}) does not decrypt with these keys ` +
          `(${(err as Error).message}): a wrong data key, or a marker written by someone else`,
      );
    }
    return decodeSchemaVersion(plaintext);
  }
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  // Without this, 0 workers would "finish" at once with every result missing.
  if (!Number.isInteger(limit) || limit < 1) throw new InspectError(`concurrency must be a positive integer, got ${limit}`);
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed = false;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    // Once one read fails the result is a rejection: the other workers stop taking keys,
    // instead of reading the rest of a large store in the background after the caller gave up.
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  });
  await Promise.all(workers);
  return results;
}

/** Lists every key of a store with what it is, its version and sizes (reads every value once). */
export async function inspectStore(options: InspectOptions): Promise<StoreInspection> {
  const reader = new StoreReader(options);
  const listed = await reader.listAll();
  const schema = listed.length === 0 ? undefined : ((await reader.schema()) ?? 0);
  const layouts = schema === 0 ? [reader.v0, reader.v1] : [reader.v1, reader.v0];
  const keys = await mapLimit(listed, options.concurrency ?? 16, async ({ key: storeKey, version }): Promise<InspectedKey> => {
    const address = parseKey(storeKey, layouts);
    const entry: InspectedKey = { storeKey, address, meaning: address ? ldkMeaning(address) : 'not an LDK key of these keys', version, storedBytes: 0 };
    const found = await reader.get(storeKey);
    if (!found) {
      entry.problem = REMOVED_WHILE_LISTING;
      return entry;
    }
    entry.storedBytes = found.storable.length;
    const v1Key = address && storeKey.includes('#') && reader.v1.address(address.primaryNamespace, address.secondaryNamespace, address.key).storeKey === storeKey;
    const aad = storeKey === reader.v1.schemaMarker().storeKey || v1Key ? utf8.encode(storeKey) : EMPTY;
    try {
      entry.plaintextBytes = decryptStorable(found.storable, reader.dataKey, aad).value.length;
    } catch (err) {
      entry.problem = `does not decrypt with these keys (${(err as Error).message})`;
    }
    return entry;
  });
  keys.sort((a, b) => (a.address && b.address ? [a.address.primaryNamespace, a.address.secondaryNamespace, a.address.key].join('/').localeCompare([b.address.primaryNamespace, b.address.secondaryNamespace, b.address.key].join('/'), 'en', { numeric: true }) : a.storeKey.localeCompare(b.storeKey)));
  return { storeId: options.storeId, schema, keys, totalStoredBytes: keys.reduce((n, k) => n + k.storedBytes, 0) };
}

/**
 * Why a value was not found, when the store says more than "not there": a wrong seed looks for
 * every key at an address where nothing is, and a bare "no value at //manager" reads as a
 * wallet whose state is lost. Empty when the store holds keys of these keys (or cannot be listed).
 */
async function whyNotFound(reader: StoreReader): Promise<string> {
  let listed: { key: string }[];
  try {
    listed = await reader.listAll();
  } catch {
    return '';
  }
  if (listed.length === 0) {
    return reader.sigsAuth
      ? ': nothing is stored for this identity (with signature auth the seed also names the user, so a mistyped seed or another store id looks like an empty store)'
      : ': the store is empty';
  }
  if (!listed.some(({ key }) => parseKey(key, [reader.v1, reader.v0]) !== undefined)) {
    return `: none of the store's ${listed.length} key(s) deobfuscates with these keys (a wrong seed or obfuscation key, or another wallet's store)`;
  }
  return '';
}

/** Reads and decrypts one value by its LDK address. */
export async function readDecrypted(options: InspectOptions, address: StoreKey): Promise<{ value: Uint8Array; version: bigint; storeKey: string }> {
  const reader = new StoreReader(options);
  const schema = (await reader.schema()) ?? 0;
  const layout = schema === 1 ? reader.v1 : reader.v0;
  const target = layout.address(address.primaryNamespace, address.secondaryNamespace, address.key);
  const found = await reader.get(target.storeKey);
  if (!found) throw new InspectError(`no value at ${formatAddress(address)} in store ${JSON.stringify(options.storeId)}${await whyNotFound(reader)}`);
  try {
    return { value: decryptStorable(found.storable, reader.dataKey, target.aad).value, version: found.version, storeKey: target.storeKey };
  } catch (err) {
    throw new InspectError(`the value at ${formatAddress(address)} does not decrypt with these keys: ${(err as Error).message}`);
  }
}

export function formatAddress(k: StoreKey): string {
  return `${k.primaryNamespace}/${k.secondaryNamespace}/${k.key}`;
}

/** `primary/secondary/key` (each part may be empty: `//manager`). */
export function parseAddress(text: string): StoreKey {
  const parts = text.split('/');
  if (parts.length !== 3 || parts[2] === '') throw new InspectUsageError(`--dump takes primary/secondary/key (e.g. //manager or monitor_updates/<monitor>/7), got ${JSON.stringify(text)}`);
  return { primaryNamespace: parts[0], secondaryNamespace: parts[1], key: parts[2] };
}

// ---- the CLI command ----

export interface InspectIo {
  env: Readonly<Record<string, string | undefined>>;
  stdout: (line: string) => void;
  stderr: (line: string) => void;
}

export function inspectUsage(): string {
  return [
    'Usage: ldk-vss inspect --server-url URL --store-id ID (--seed HEX | --data-key HEX --obfuscation-key HEX) [options]',
    '',
    'Lists what a wallet stored in VSS, in LDK terms, or dumps one decrypted value. Read-only.',
    '',
    '  --server-url URL        VSS base URL including /vss (or VSS_URL)',
    '  --store-id ID           the wallet\'s store id',
    '  --seed HEX              the wallet\'s 64-byte seed (128 hex chars; or VSS_INSPECT_SEED)',
    '  --data-key HEX          32-byte data encryption key (instead of --seed)',
    '  --obfuscation-key HEX   32-byte key obfuscation master key (instead of --seed)',
    '  --auth sigs|none        signature auth from the seed (default with --seed) or none',
    '  --header "Name: value"  extra request header (repeatable; e.g. a bearer token)',
    '  --dump P/S/K            print one decrypted value, e.g. //manager or monitors//<txid>_0',
    '  --format hex|base64     encoding of --dump (default hex)',
    '  --json                  machine-readable output',
    '',
    'Exit status: 0 done; 1 the store could not be read as asked (server unreachable or refusing,',
    'no value at --dump\'s address, keys that do not read with these keys); 2 a usage error.',
  ].join('\n');
}

function hexBytes(name: string, text: string, length: number): Uint8Array {
  if (!/^[0-9a-fA-F]*$/.test(text) || text.length !== length * 2) throw new InspectUsageError(`${name} must be ${length} bytes of hex (${length * 2} characters)`);
  return Uint8Array.from(Buffer.from(text, 'hex'));
}

function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/**
 * parseArgs' message for a stray argument quotes it, and the usual stray argument is a seed or key
 * whose option name was mistyped or dropped (`--seed` given twice, a value split by the shell):
 * quoted, it would end up in a terminal's scrollback or a CI log.
 */
function argumentProblem(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return 'unexpected argument without an option name (not shown: it may be a seed or key); every value follows its --option';
  // An unknown option is quoted too; a long one is more likely a pasted value than a typo.
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && (err as Error).message.length > 60) return 'unknown option (not shown: it may be a seed or key)';
  return (err as Error).message;
}

export async function runInspect(args: readonly string[], io: InspectIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        'server-url': { type: 'string' },
        'store-id': { type: 'string' },
        seed: { type: 'string' },
        'data-key': { type: 'string' },
        'obfuscation-key': { type: 'string' },
        auth: { type: 'string' },
        header: { type: 'string', multiple: true },
        dump: { type: 'string' },
        format: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.stderr(`ldk-vss inspect: ${argumentProblem(err)}\n${inspectUsage()}`);
    return 2;
  }
  if (values.help) {
    io.stdout(inspectUsage());
    return 0;
  }
  try {
    const serverUrl = values['server-url'] ?? io.env.VSS_URL;
    const storeId = values['store-id'];
    if (!serverUrl || !storeId) throw new InspectUsageError('--server-url and --store-id are required');
    // Checked here, not left to the client: a malformed URL is a usage error (exit 2).
    if (!/^https?:$/.test(URL.canParse(serverUrl) ? new URL(serverUrl).protocol : '')) {
      // Not quoted if it may carry a password (user:password@host without its scheme).
      throw new InspectUsageError(`--server-url must be an http(s) URL such as http://127.0.0.1:8080/vss, got ${serverUrl.includes('@') ? 'something else (not shown: it holds an @, perhaps a password)' : JSON.stringify(serverUrl)}`);
    }
    const seedHex = values.seed ?? io.env.VSS_INSPECT_SEED;
    let keys: InspectKeys;
    if (seedHex) keys = { seed: hexBytes('--seed', seedHex, 64) };
    else if (values['data-key'] && values['obfuscation-key']) keys = { dataEncryptionKey: hexBytes('--data-key', values['data-key'], 32), obfuscationMasterKey: hexBytes('--obfuscation-key', values['obfuscation-key'], 32) };
    else throw new InspectUsageError('give --seed, or both --data-key and --obfuscation-key');
    const headers: Record<string, string> = {};
    for (const h of values.header ?? []) {
      const colon = h.indexOf(':');
      // Not echoed: a header without its colon is most likely a credential ("Authorization Bearer …").
      if (colon <= 0) throw new InspectUsageError(`--header takes "Name: value", got ${h.length} characters without a name before a colon (not shown: it may hold a credential)`);
      headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
    }
    const authKind = values.auth ?? ('seed' in keys ? 'sigs' : 'none');
    let auth: VssAuthConfig;
    if (authKind === 'sigs') {
      if (!('seed' in keys)) throw new InspectUsageError('--auth sigs needs --seed (the auth key derives from it)');
      auth = { kind: 'sigs', secretKey: deriveVssKeys(keys.seed).sigsAuthSecretKey, headers };
    } else if (authKind === 'none') {
      auth = { kind: 'fixed', headers };
    } else {
      throw new InspectUsageError(`--auth must be sigs or none, got ${JSON.stringify(authKind)}`);
    }
    const format = values.format ?? 'hex';
    if (format !== 'hex' && format !== 'base64') throw new InspectUsageError(`--format must be hex or base64, got ${JSON.stringify(format)}`);
    const options: InspectOptions = { serverUrl, storeId, keys, auth };

    if (values.dump !== undefined) {
      const address = parseAddress(values.dump);
      const { value, version, storeKey } = await readDecrypted(options, address);
      const encoded = Buffer.from(value).toString(format);
      if (values.json) io.stdout(JSON.stringify({ address, storeKey, version, bytes: value.length, format, value: encoded }, jsonReplacer));
      else io.stdout(encoded);
      return 0;
    }

    const inspection = await inspectStore(options);
    // Counted before either output: --json must fail the same way the table does (a script
    // checks the exit code), with the reason on stderr so stdout stays one JSON document.
    const problems = unreadableKeys(inspection).length;
    const problemsLine = `ldk-vss inspect: ${problems} key(s) could not be read with these keys (wrong seed, or data written by someone else)`;
    if (values.json) {
      io.stdout(JSON.stringify(inspection, jsonReplacer));
      if (problems > 0) {
        io.stderr(problemsLine);
        return 1;
      }
      return 0;
    }
    io.stdout(escapeControl(`store ${JSON.stringify(storeId)} on ${serverUrl}: ${inspection.keys.length} keys, ${formatBytes(inspection.totalStoredBytes)} stored, schema ${inspection.schema === undefined ? '(empty store)' : `V${inspection.schema}`}`));
    if (inspection.keys.length === 0 && auth.kind === 'sigs') {
      // The server cannot tell a wrong seed from a new wallet: the seed is also the user.
      io.stdout('nothing is stored for this identity: with signature auth the seed also names the user, so a mistyped seed (or another store id) looks like an empty store');
    }
    if (inspection.keys.length > 0) {
      const rows = [
        ['namespace', 'key', 'what', 'version', 'stored', 'plain'],
        ...inspection.keys.map((k) => [
          k.address ? `${k.address.primaryNamespace}/${k.address.secondaryNamespace}` : '?',
          k.address?.key ?? k.storeKey,
          k.problem ? `${k.meaning} (${k.problem})` : k.meaning,
          k.version.toString(),
          String(k.storedBytes),
          k.plaintextBytes === undefined ? '-' : String(k.plaintextBytes),
        ].map(escapeControl)),
      ];
      // Escaped: a key that does not deobfuscate is printed as the server listed it, and any
      // server can list any string (escape sequences included).
      io.stdout(table(rows));
    }
    if (problems > 0) {
      io.stderr(problemsLine);
      return 1;
    }
    return 0;
  } catch (err) {
    if (err instanceof InspectUsageError) {
      io.stderr(`ldk-vss inspect: ${escapeControl(err.message)} (ldk-vss inspect --help lists the options)`);
      return 2;
    }
    io.stderr(`ldk-vss inspect: ${escapeControl(describeFailure(err, values['server-url'] ?? io.env.VSS_URL ?? ''))}`);
    return 1;
  }
}

/** The innermost reason of a transport failure (undici nests `connect ECONNREFUSED …` under "fetch failed"). */
function rootCause(err: Error): string {
  let reason: unknown = err;
  for (let depth = 0; depth < 8 && (reason as { cause?: unknown }).cause instanceof Error; depth++) reason = (reason as { cause: Error }).cause;
  return (reason as Error).message || ((reason as NodeJS.ErrnoException).code ?? String(reason));
}

/**
 * One line saying what went wrong in terms of what the user gave: an unreachable server as such
 * (not the client's "InternalError" wording), and a base URL without its `/vss` path (a VSS
 * server answers "Invalid request path.", anything else in front of it 404) with the likely fix.
 */
function describeFailure(err: unknown, serverUrl: string): string {
  if (!(err instanceof Error)) return String(err);
  const url = urlForMessages(serverUrl);
  if (err instanceof VssClientError && err.reason === 'network') return `the VSS server could not be reached at ${url} (${rootCause(err)})`;
  if (err instanceof VssClientError && err.reason === 'timeout') return `the VSS server at ${url} did not answer in time (${err.message.replace(/^InternalError: /, '')})`;
  const noApi = err instanceof VssError && ((err.status === 404 && !(err instanceof NoSuchKeyError)) || (err.status === 400 && /Invalid request path/.test(err.message)));
  if (noApi) {
    let path = '';
    try {
      path = new URL(serverUrl).pathname;
    } catch {
      // shown as given
    }
    const hint = /\/vss\/?$/.test(path)
      ? 'check the base URL (the path the VSS server is mounted at)'
      : `a VSS base URL usually ends in /vss: try --server-url ${urlForMessages(serverUrl.replace(/\/?$/, '/vss'))}`;
    return `no VSS API at ${url}: the server answered HTTP ${err.status} for its operation paths (${err.message.replace(/^InternalError: /, '')}); ${hint}`;
  }
  return `${err.name === 'Error' ? '' : `${err.name}: `}${err.message}`;
}
