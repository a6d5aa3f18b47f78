/**
 * `ldk-vss inspect` against a real server (PGlite, signature auth) holding a store written by
 * the adapter (two LDK wallets, a channel, payments).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedLoopbackPort } from '../helpers/ports.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { StartedVssServer } from '../../src/server/index.js';
import { deriveVssKeys } from '../../src/crypto/index.js';
import { InspectError, inspectStore, readDecrypted, runInspect, type StoreInspection } from '../../src/ldk/inspect.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { bigIntToInt64, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../../src/protocol/index.js';
import { openVssWalletStore } from '../../harness/vss-wallet.js';
import type { Wallet } from '../../harness/wallets.js';
import { openPair, startServer, type Pair } from '../harness/helpers/e2e.js';

let server: StartedVssServer;
let pair: Pair;
let wallet: Wallet;

beforeAll(async () => {
  server = await startServer('pglite');
  pair = await openPair(server.url);
  for (let i = 0; i < 2; i++) await pair.fleet.pay('A', 'B', 10_000n, { settled: true });
  await pair.fleet.node('A').eventLoop!.persistIfNeeded();
  await pair.fleet.net.runFor(200); // lazy removals settle
  wallet = pair.fleet.wallet('A');
});
afterAll(async () => {
  await pair?.fleet.shutdown();
  await server?.close();
});

async function inspect(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runInspect(args, { env: {}, stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out, err };
}

const base = (): string[] => ['--server-url', server.url, '--store-id', wallet.storeId, '--seed', Buffer.from(wallet.seed).toString('hex')];

describe('ldk-vss inspect', () => {
  it('lists the store in LDK terms: manager, monitor, monitor updates, schema marker, with versions and sizes', async () => {
    const { code, out, err } = await inspect([...base(), '--json']);
    expect(err).toEqual([]);
    expect(code).toBe(0);
    const result = JSON.parse(out[0]) as StoreInspection & { keys: { version: string }[] };
    expect(result.schema).toBe(1);
    const byWhat = (re: RegExp) => result.keys.filter((k) => re.test(k.meaning));
    const monitorName = pair.channel.monitorName;
    expect(byWhat(/^ChannelManager$/)).toHaveLength(1);
    expect(byWhat(/^VSS schema version marker$/)).toHaveLength(1);
    expect(byWhat(/^ChannelMonitor of /).map((k) => k.address!.key)).toEqual([monitorName]);
    const updates = byWhat(/^ChannelMonitorUpdate /);
    expect(updates.length).toBeGreaterThanOrEqual(10); // two payments' deltas at least
    expect(updates.every((k) => k.address!.primaryNamespace === 'monitor_updates' && k.address!.secondaryNamespace === monitorName)).toBe(true);
    const manager = byWhat(/^ChannelManager$/)[0];
    expect(BigInt(manager.version)).toBeGreaterThan(1n); // rewritten on every payment
    for (const k of result.keys) {
      expect(k.problem).toBeUndefined();
      expect(k.storedBytes).toBeGreaterThan(k.plaintextBytes!); // ciphertext + nonce + tag
    }
    // The same keys and sizes a VssStore client sees.
    const store = await openVssWalletStore(wallet, { serverUrl: server.url });
    const all = await store.listAll();
    expect(all.length).toBe(result.keys.length - 1); // listAll hides the schema marker
    const managerBytes = await store.read('', '', 'manager');
    expect(manager.plaintextBytes).toBe(managerBytes.length);
    await store.close();

    const table = await inspect(base());
    expect(table.code).toBe(0);
    expect(table.out[0]).toMatch(new RegExp(`store "${wallet.storeId}" .*: ${result.keys.length} keys, .* stored, schema V1`));
    expect(table.out.join('\n')).toMatch(/monitor_updates\/\S+\s+\d+\s+ChannelMonitorUpdate \d+ of /);
  });

  it('dumps one decrypted value (hex or base64), byte-identical to what the wallet stored', async () => {
    const store = await openVssWalletStore(wallet, { serverUrl: server.url });
    const stored = await store.read('monitors', '', pair.channel.monitorName);
    await store.close();
    const hex = await inspect([...base(), '--dump', `monitors//${pair.channel.monitorName}`]);
    expect(hex.code).toBe(0);
    expect(hex.out[0]).toBe(Buffer.from(stored).toString('hex'));
    const b64 = await inspect([...base(), '--dump', `monitors//${pair.channel.monitorName}`, '--format', 'base64', '--json']);
    const parsed = JSON.parse(b64.out[0]) as { value: string; bytes: number; version: string };
    expect(Buffer.from(parsed.value, 'base64')).toEqual(Buffer.from(stored));
    expect(parsed.bytes).toBe(stored.length);
    expect(BigInt(parsed.version)).toBeGreaterThanOrEqual(1n);
  });

  it('with explicit keys but no credentials for a signature-auth server, reports the refusal instead of an empty store', async () => {
    const keys = deriveVssKeys(wallet.seed);
    // Without the seed the signature-auth key is not derivable (give --header for other
    // auth schemes): the server refuses, and inspect says so.
    const { code, err } = await inspect(['--server-url', server.url, '--store-id', wallet.storeId, '--data-key', Buffer.from(keys.dataEncryptionKey).toString('hex'), '--obfuscation-key', Buffer.from(keys.obfuscationMasterKey).toString('hex')]);
    expect(code).toBe(1);
    expect(err.join('\n')).toMatch(/Auth/i);
  });

  it('fails clearly on a wrong seed, an unknown key, bad input and an unreachable server', async () => {
    // A wrong seed signs as another user: that user's store is empty.
    const wrong = await inspect(['--server-url', server.url, '--store-id', wallet.storeId, '--seed', randomBytes(64).toString('hex')]);
    expect(wrong.code).toBe(0);
    expect(wrong.out[0]).toMatch(/0 keys, .* schema \(empty store\)/);
    expect(wrong.out[1]).toMatch(/the seed also names the user, so a mistyped seed .* looks like an empty store/);
    // The wallet's own seed shows its keys and no such hint.
    const right = await inspect(base());
    expect(right.out.join('\n')).not.toMatch(/mistyped seed/);
    const missing = await inspect([...base(), '--dump', '//no_such_key']);
    expect(missing.code).toBe(1);
    expect(missing.err[0]).toMatch(/no value at \/\/no_such_key/);
    const badSeed = await inspect(['--server-url', server.url, '--store-id', 'x', '--seed', 'abcd']);
    expect(badSeed.code).toBe(2); // a usage error, like an unknown option
    expect(badSeed.err[0]).toMatch(/--seed must be 64 bytes of hex/);
    const noStore = await inspect(['--server-url', server.url, '--seed', Buffer.from(wallet.seed).toString('hex')]);
    expect(noStore.err[0]).toMatch(/--store-id are required/);
    const badFlag = await inspect(['--bogus']);
    expect(badFlag.code).toBe(2);
    const badDump = await inspect([...base(), '--dump', 'manager']);
    expect(badDump.err[0]).toMatch(/--dump takes primary\/secondary\/key/);
    const closedPort = await closedLoopbackPort();
    const down = await inspect(['--server-url', `http://127.0.0.1:${closedPort}/vss`, '--store-id', 'x', '--seed', Buffer.from(wallet.seed).toString('hex')]);
    expect(down.code).toBe(1);
    // Said as an unreachable server, with the reason (not just "fetch failed").
    expect(down.err[0]).toBe(`ldk-vss inspect: the VSS server could not be reached at http://127.0.0.1:${closedPort}/vss (connect ECONNREFUSED 127.0.0.1:${closedPort})`);
  });

  it('with a wrong data key, names the schema marker as what does not decrypt (not the value asked for)', async () => {
    const derived = deriveVssKeys(wallet.seed);
    const options = {
      serverUrl: server.url,
      storeId: wallet.storeId,
      keys: { dataEncryptionKey: randomBytes(32), obfuscationMasterKey: derived.obfuscationMasterKey },
      auth: { kind: 'sigs' as const, secretKey: derived.sigsAuthSecretKey },
    };
    // One at a time: a second promise started early would reject before anything awaits it.
    const attempts = [() => inspectStore(options), () => readDecrypted(options, { primaryNamespace: '', secondaryNamespace: '', key: 'manager' })];
    for (const attempt of attempts) {
      const failure = await attempt().catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(InspectError);
      expect((failure as Error).message).toMatch(/schema marker \(\/\/vss_schema_version\) does not decrypt with these keys \(.*\): a wrong data key/);
    }
  });

  it('stops with InspectError when a server repeats a page token, instead of listing forever', async () => {
    let pages = 0;
    const looping = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        pages++;
        const body = vss.ListKeyVersionsResponse.encode({ keyVersions: [{ key: `k${pages}`, version: bigIntToInt64(1n) }], nextPageToken: 'again' }).finish();
        res.writeHead(200, { [PROTOCOL_VERSION_HEADER]: PROTOCOL_VERSION, 'content-type': 'application/octet-stream' });
        res.end(body);
      });
    });
    await new Promise<void>((resolve) => looping.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(looping.address() as AddressInfo).port}/vss`;
      const keys = { dataEncryptionKey: new Uint8Array(32), obfuscationMasterKey: new Uint8Array(32) };
      const failure = await inspectStore({ serverUrl: url, storeId: 's', keys }).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(InspectError);
      expect((failure as Error).message).toMatch(/repeated the page token "again"/);
      expect(pages).toBe(2);
    } finally {
      await new Promise((resolve) => looping.close(resolve));
    }
  });

  it('is an ldk-vss subcommand', async () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, stdout }));
      });
    const help = await run(['--help']);
    expect(help.stdout).toMatch(/inspect\s+list what a wallet stored/);
    const listed = await run(['inspect', ...base(), '--json']);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as StoreInspection).keys.length).toBeGreaterThan(3);
  });
});
