/**
 * `ldk-vss inspect` on stores that are not clean: values that do not decrypt (the exit code in
 * --json mode too), a key removed by a running wallet between the listing and its read, a read
 * that fails part way through a large store (nothing keeps reading in the background), --dump
 * with a wrong seed (said as such, not as a missing value), a listing over several pages, and
 * argument mistakes that must not print the seed or a credential they carry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { openVssWalletStore, vssClientConfigFor } from '../../harness/vss-wallet.js';
import { vssClientFromConfig } from '../../src/client/index.js';
import { encryptStorable, KeyObfuscator } from '../../src/crypto/index.js';
import { bigIntToInt64, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../../src/protocol/index.js';
import { StoreLayout, encodeSchemaVersion } from '../../src/store/index.js';
import { InspectError, inspectStore, runInspect, type StoreInspection } from '../../src/ldk/inspect.js';

async function inspect(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runInspect(args, { env: {}, stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out, err };
}

describe('inspect on a store with a value that does not decrypt', () => {
  let server: StartedVssServer;
  const seed = randomBytes(64);
  const storeId = 'inspect-corrupt';
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', logLevel: 'silent' });
    const store = await openVssWalletStore({ seed, storeId }, { serverUrl: server.url });
    await store.write('', '', 'manager', Uint8Array.of(1, 2, 3));
    await store.write('monitors', '', `${'aa'.repeat(32)}_0`, Uint8Array.of(4));
    await store.close();
    // Bytes no wallet of this seed wrote: not a Storable, under a key that is not obfuscated.
    const client = vssClientFromConfig(vssClientConfigFor(seed, { serverUrl: server.url }));
    await client.putObjects({ storeId, transactionItems: [{ key: 'garbage', value: Uint8Array.of(1, 2, 3), version: bigIntToInt64(0n) }] });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('--json exits 1 like the table does, with the JSON intact on stdout and the reason on stderr', async () => {
    const base = ['--server-url', server.url, '--store-id', storeId, '--seed', seed.toString('hex')];
    const table = await inspect(base);
    expect(table.code).toBe(1);
    const json = await inspect([...base, '--json']);
    expect(json.code).toBe(1);
    expect(json.err).toEqual(['ldk-vss inspect: 1 key(s) could not be read with these keys (wrong seed, or data written by someone else)']);
    // The rest is still listed: one bad value does not hide the others.
    const listed = JSON.parse(json.out.join('\n')) as StoreInspection;
    expect(listed.keys.map((k) => k.meaning).sort()).toEqual(['ChannelManager', `ChannelMonitor of ${'aa'.repeat(32)}_0`, 'VSS schema version marker', 'not an LDK key of these keys']);
    expect(listed.keys.find((k) => k.storeKey === 'garbage')?.problem).toMatch(/does not decrypt with these keys \(value is not a serialized Storable: /);
  });
});

interface FakeEntry {
  value: Uint8Array;
  version: bigint;
}

/**
 * A VSS server answering ListKeyVersions with every key of `listed` (one page) and GetObject
 * from `stored`: a key listed but not stored is answered NoSuchKey; `failing` keys get a
 * non-retryable InvalidRequest. Counts the GetObject requests.
 */
async function fakeVss(listed: Map<string, FakeEntry>, stored: Map<string, FakeEntry>, failing: Set<string> = new Set()): Promise<{ url: string; gets: () => number; close: () => Promise<void> }> {
  let gets = 0;
  const reply = (res: import('node:http').ServerResponse, status: number, body: Uint8Array): void => {
    res.writeHead(status, { [PROTOCOL_VERSION_HEADER]: PROTOCOL_VERSION, 'content-type': 'application/octet-stream' });
    res.end(body);
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.url?.endsWith('/listKeyVersions')) {
        const keyVersions = [...listed].map(([key, e]) => ({ key, version: bigIntToInt64(e.version) }));
        reply(res, 200, vss.ListKeyVersionsResponse.encode({ keyVersions }).finish());
        return;
      }
      gets++;
      const key = vss.GetObjectRequest.decode(body).key ?? '';
      const entry = stored.get(key);
      if (failing.has(key)) reply(res, 400, vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: `cannot read ${key}` }).finish());
      else if (!entry) reply(res, 404, vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.NO_SUCH_KEY_EXCEPTION, message: 'no such key' }).finish());
      else reply(res, 200, vss.GetObjectResponse.encode({ value: { key, version: bigIntToInt64(entry.version), value: entry.value } }).finish());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/vss`,
    gets: () => gets,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A V1 store's entries, encrypted and obfuscated with `keys` the way VssStore writes them. */
function v1Entries(keys: { dataEncryptionKey: Uint8Array; obfuscationMasterKey: Uint8Array }, values: [string, string, string, Uint8Array][]): Map<string, FakeEntry> {
  const layout = new StoreLayout(1, new KeyObfuscator(keys.obfuscationMasterKey));
  const out = new Map<string, FakeEntry>();
  const marker = layout.schemaMarker();
  out.set(marker.storeKey, { value: encryptStorable(encodeSchemaVersion(1), 1n, keys.dataEncryptionKey, { aad: marker.aad }), version: 1n });
  for (const [p, s, k, value] of values) {
    const address = layout.address(p, s, k);
    out.set(address.storeKey, { value: encryptStorable(value, 1n, keys.dataEncryptionKey, { aad: address.aad }), version: 1n });
  }
  return out;
}

describe('inspect against a store that changes or fails while it is read', () => {
  const keys = { dataEncryptionKey: randomBytes(32), obfuscationMasterKey: randomBytes(32) };
  const keyArgs = ['--data-key', Buffer.from(keys.dataEncryptionKey).toString('hex'), '--obfuscation-key', Buffer.from(keys.obfuscationMasterKey).toString('hex')];
  const monitor = `${'bb'.repeat(32)}_1`;

  it('a monitor update the wallet removed between the listing and its read is shown as removed, not as a wrong seed (exit 0)', async () => {
    const listed = v1Entries(keys, [
      ['', '', 'manager', Uint8Array.of(1)],
      ['monitors', '', monitor, Uint8Array.of(2)],
      ['monitor_updates', monitor, '7', Uint8Array.of(3)],
    ]);
    const stored = new Map(listed);
    const removed = new StoreLayout(1, new KeyObfuscator(keys.obfuscationMasterKey)).address('monitor_updates', monitor, '7').storeKey;
    stored.delete(removed);
    const fake = await fakeVss(listed, stored);
    try {
      const base = ['--server-url', fake.url, '--store-id', 's', ...keyArgs];
      for (const json of [false, true]) {
        const run = await inspect(json ? [...base, '--json'] : base);
        expect(run.err).toEqual([]);
        expect(run.code).toBe(0);
        const text = run.out.join('\n');
        if (json) expect((JSON.parse(text) as StoreInspection).keys.find((k) => k.storeKey === removed)?.problem).toBe('removed while listing');
        else expect(text).toMatch(/ChannelMonitorUpdate 7 of \S+ \(removed while listing\)/);
      }
    } finally {
      await fake.close();
    }
  });

  it('a read that fails stops the other readers: the rest of the store is not read after inspectStore rejected', async () => {
    const values: [string, string, string, Uint8Array][] = Array.from({ length: 40 }, (_, i) => ['monitor_updates', monitor, String(i + 1), Uint8Array.of(i)]);
    const listed = v1Entries(keys, values);
    const layout = new StoreLayout(1, new KeyObfuscator(keys.obfuscationMasterKey));
    const bad = layout.address('monitor_updates', monitor, '1').storeKey;
    // The failing key first in the listing, so the readers meet it at the start.
    const ordered = new Map([[bad, listed.get(bad)!], ...[...listed].filter(([k]) => k !== bad)]);
    const fake = await fakeVss(ordered, listed, new Set([bad]));
    try {
      const failure = await inspectStore({ serverUrl: fake.url, storeId: 's', keys, concurrency: 2 }).catch((error: unknown) => error);
      expect((failure as Error).message).toMatch(/cannot read/);
      // Give readers that were wrongly left running the time to read the rest of the store.
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The schema marker, the failing key, and what the other reader had in flight.
      expect(fake.gets()).toBeLessThanOrEqual(4);
    } finally {
      await fake.close();
    }
  });

  it('refuses a concurrency that would read nothing, instead of crashing on missing results', async () => {
    const fake = await fakeVss(v1Entries(keys, [['', '', 'manager', Uint8Array.of(1)]]), new Map());
    try {
      const failure = await inspectStore({ serverUrl: fake.url, storeId: 's', keys, concurrency: 0 }).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(InspectError);
      expect((failure as Error).message).toMatch(/concurrency must be a positive integer, got 0/);
    } finally {
      await fake.close();
    }
  });
});

describe('--dump with a wrong seed', () => {
  it('on a server without signature auth: says no key of the store deobfuscates, not just "no value" (which reads as lost state)', async () => {
    const server = await startVssServer({ backend: 'memory', logLevel: 'silent', auth: { kind: 'noop' } });
    try {
      const seed = randomBytes(64);
      const store = await openVssWalletStore({ seed, storeId: 'w' }, { serverUrl: server.url, auth: 'none' });
      await store.write('', '', 'manager', Uint8Array.of(1));
      await store.close();
      const base = ['--server-url', server.url, '--store-id', 'w', '--auth', 'none', '--dump', '//manager'];
      expect(await inspect([...base, '--seed', seed.toString('hex')])).toMatchObject({ code: 0, out: ['01'] });
      const wrong = await inspect([...base, '--seed', randomBytes(64).toString('hex')]);
      expect(wrong.code).toBe(1);
      expect(wrong.err).toEqual([
        'ldk-vss inspect: InspectError: no value at //manager in store "w": none of the store\'s 2 key(s) deobfuscates with these keys (a wrong seed or obfuscation key, or another wallet\'s store)',
      ]);
      // The right seed and a key the wallet never wrote: plainly not there.
      const absent = await inspect(['--server-url', server.url, '--store-id', 'w', '--auth', 'none', '--seed', seed.toString('hex'), '--dump', '//scorer']);
      expect(absent.err).toEqual(['ldk-vss inspect: InspectError: no value at //scorer in store "w"']);
    } finally {
      await server.close();
    }
  });

  it('with signature auth: says nothing is stored for this identity, and why a mistyped seed looks like that', async () => {
    const server = await startVssServer({ backend: 'memory', logLevel: 'silent' });
    try {
      const seed = randomBytes(64);
      const store = await openVssWalletStore({ seed, storeId: 'w' }, { serverUrl: server.url });
      await store.write('', '', 'manager', Uint8Array.of(1));
      await store.close();
      const wrong = await inspect(['--server-url', server.url, '--store-id', 'w', '--seed', randomBytes(64).toString('hex'), '--dump', '//manager']);
      expect(wrong.code).toBe(1);
      expect(wrong.err).toHaveLength(1);
      expect(wrong.err[0]).toMatch(/^ldk-vss inspect: InspectError: no value at \/\/manager in store "w": nothing is stored for this identity \(with signature auth the seed also names the user, so a mistyped seed .* looks like an empty store\)$/);
    } finally {
      await server.close();
    }
  });
});

describe('inspect of a store larger than one listing page', () => {
  it('lists and reads every key across the server\'s pages (100 keys each)', async () => {
    const server = await startVssServer({ backend: 'memory', logLevel: 'silent' });
    try {
      const seed = randomBytes(64);
      const store = await openVssWalletStore({ seed, storeId: 'big' }, { serverUrl: server.url });
      const monitor = `${'cc'.repeat(32)}_2`;
      for (let from = 1; from <= 250; from += 50) {
        await store.writeBatch(Array.from({ length: 50 }, (_, i) => ({ primaryNamespace: 'monitor_updates', secondaryNamespace: monitor, key: String(from + i), value: Uint8Array.of(i) })));
      }
      await store.close();
      const run = await inspect(['--server-url', server.url, '--store-id', 'big', '--seed', seed.toString('hex'), '--json']);
      expect(run.err).toEqual([]);
      expect(run.code).toBe(0);
      const listed = JSON.parse(run.out[0]) as StoreInspection;
      expect(listed.keys).toHaveLength(251); // and the schema marker
      const ids = listed.keys.filter((k) => k.meaning.startsWith('ChannelMonitorUpdate')).map((k) => Number(k.address!.key));
      expect(ids).toEqual(Array.from({ length: 250 }, (_, i) => i + 1)); // every page, in numeric order
      expect(listed.keys.filter((k) => k.plaintextBytes === 1)).toHaveLength(250);
    } finally {
      await server.close();
    }
  });
});

describe('ldk-vss inspect: argument mistakes do not print secrets', () => {
  const seedHex = 'ab'.repeat(64);
  const secretFree = (lines: string[]) => expect(lines.join('\n')).not.toContain('abab');

  it('a seed left without its option name is refused without being quoted', async () => {
    const { code, out, err } = await inspect(['--server-url', 'http://127.0.0.1:1/vss', '--store-id', 's', seedHex]);
    expect(code).toBe(2);
    expect(out).toEqual([]);
    expect(err.join('\n')).toMatch(/unexpected argument without an option name/);
    secretFree(err);
  });

  it('a seed pasted as an option name is refused without being quoted; a short typo is still named', async () => {
    const pasted = await inspect(['--server-url', 'http://127.0.0.1:1/vss', `--${seedHex}`]);
    expect(pasted.code).toBe(2);
    expect(pasted.err.join('\n')).toMatch(/unknown option \(not shown/);
    secretFree(pasted.err);
    const typo = await inspect(['--sed', seedHex]);
    expect(typo.code).toBe(2);
    expect(typo.err.join('\n')).toContain("'--sed'");
  });

  it('a --header value without a colon (a credential missing its name) is refused without being quoted', async () => {
    const { code, err } = await inspect(['--server-url', 'http://127.0.0.1:1/vss', '--store-id', 's', '--data-key', '11'.repeat(32), '--obfuscation-key', '22'.repeat(32), '--header', `Bearer ${seedHex}`]);
    expect(code).toBe(2); // a usage error
    expect(err.join('\n')).toMatch(/--header takes "Name: value"/);
    secretFree(err);
  });
});
