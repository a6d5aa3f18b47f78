/**
 * Rollback detection: the server is put back to an older state with the MemoryBackend's
 * snapshot/restore (what a restore from an old backup does), and the store must refuse it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryBackend, startVssServer } from '../../src/server/index.js';
import type { FetchFunction } from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import {
  ConcurrentWriterError,
  KeyNotFoundError,
  RollbackDetectedError,
  StoreError,
  StoreIOError,
  StoreOpenError,
  VersionLedgerError,
  VssStore,
  type VersionChange,
  type VersionLedger,
  type VssStoreOptions,
} from '../../src/store/index.js';
import { MemoryLedger } from './helpers/memory-ledger.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const SEED = new Uint8Array(64).fill(0x42);

let server: Awaited<ReturnType<typeof startVssServer>>;
let backend: MemoryBackend;
const dirs: string[] = [];

beforeAll(async () => {
  server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  backend = server.backend as MemoryBackend;
});
afterAll(async () => {
  await server?.close();
});
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function ledgerPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-rollback-'));
  dirs.push(dir);
  return join(dir, 'versions.log');
}

const open = (storeId: string, extra: Partial<VssStoreOptions> = {}) =>
  VssStore.open({ storeId, client: { baseUrl: server.url, retry: 'none' }, keys: { seed: SEED }, ...extra });

describe('rollback detection with a version ledger', () => {
  it('refuses to reopen a store whose server was restored from an older snapshot', async () => {
    const storeId = `rb-${randomUUID()}`;
    const path = ledgerPath();
    const store = await open(storeId, { versionLedger: path });
    await store.write('', '', 'manager', bytes('m1'));
    await store.write('monitors', '', 'chan', bytes('c1'));
    const backup = backend.snapshot();
    await store.write('', '', 'manager', bytes('m2'));
    await store.write('monitors', '', 'chan2', bytes('new channel'));
    await store.close();

    backend.restore(backup);
    const error = await open(storeId, { versionLedger: path }).catch((e) => e);
    expect(error).toBeInstanceOf(RollbackDetectedError);
    expect(error.message).toMatch(/1 keys have older versions and 1 are missing/);

    // Without a ledger there is nothing to compare with: the store opens and serves the
    // older state. This is the case the ledger exists for.
    const forgetful = await open(storeId);
    expect(text(await forgetful.read('', '', 'manager'))).toBe('m1');
    await forgetful.close();
  });

  it('never opens a wiped server as an empty store', async () => {
    const before = backend.snapshot();
    const storeId = `rb-${randomUUID()}`;
    const path = ledgerPath();
    const store = await open(storeId, { versionLedger: path });
    await store.write('', '', 'manager', bytes('m'));
    await store.close();
    backend.restore(before); // the store's rows are gone
    await expect(open(storeId, { versionLedger: path })).rejects.toBeInstanceOf(RollbackDetectedError);
  });

  it('accepts a server that moved ahead, and remembers removals', async () => {
    const storeId = `rb-${randomUUID()}`;
    const path = ledgerPath();
    const store = await open(storeId, { versionLedger: path });
    await store.write('a', '', 'k', bytes('1'));
    await store.write('a', '', 'gone', bytes('x'));
    await store.remove('a', '', 'gone', false);
    await store.close();
    // Another device (with its own ledger) writes newer versions: ahead is not a rollback.
    const other = await open(storeId, { versionLedger: ledgerPath() });
    await other.write('a', '', 'k', bytes('2'));
    await other.close();
    const again = await open(storeId, { versionLedger: path });
    expect(text(await again.read('a', '', 'k'))).toBe('2');
    await again.close();
  });

  it('works the same with a caller-supplied ledger, which is durable before a write resolves', async () => {
    const storeId = `rb-${randomUUID()}`;
    const ledger = new MemoryLedger();
    const store = await open(storeId, { versionLedger: ledger });
    const recordsBefore = ledger.records;
    await store.write('x', '', 'k', bytes('1'));
    expect(ledger.records).toBeGreaterThan(recordsBefore);
    expect([...ledger.versions.values()]).toContain(1n);
    const backup = backend.snapshot();
    await store.write('x', '', 'k', bytes('2'));
    await store.close();
    backend.restore(backup);
    await expect(open(storeId, { versionLedger: ledger })).rejects.toBeInstanceOf(RollbackDetectedError);
  });

  it('a rollback while the store is open surfaces on the next write and read', async () => {
    const storeId = `rb-${randomUUID()}`;
    const store = await open(storeId);
    await store.write('m', '', 'k', bytes('1'));
    const backup = backend.snapshot();
    await store.write('m', '', 'k', bytes('2'));
    await store.write('m', '', 'other', bytes('o'));
    backend.restore(backup);
    await expect(store.write('m', '', 'k', bytes('3'))).rejects.toBeInstanceOf(ConcurrentWriterError);
    await expect(store.read('m', '', 'k')).rejects.toBeInstanceOf(RollbackDetectedError);
    await expect(store.read('m', '', 'other')).rejects.toBeInstanceOf(RollbackDetectedError);
    await store.close();
  });

  it('a write or remove whose reply was lost and whose retry met 401 is settled by reading back: no false conflict, no false rollback', async () => {
    // The first putObjects attempt commits but its reply is lost; the retry is refused (an
    // expired token). The 401 proves nothing about the first attempt.
    let lostThenRefused = false;
    let attempt = 0;
    const flaky: FetchFunction = async (url, init) => {
      if (!url.endsWith('/putObjects') || !lostThenRefused) return fetch(url, init);
      attempt += 1;
      if (attempt === 1) {
        await (await fetch(url, init)).arrayBuffer();
        throw new TypeError('fetch failed: socket hang up');
      }
      lostThenRefused = false;
      attempt = 0;
      const body = vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.AUTH_EXCEPTION, message: 'token expired' }).finish();
      return new Response(body as BodyInit, { status: 401, headers: { 'vss-protocol-version': '0' } });
    };
    const storeId = `rb-${randomUUID()}`;
    const path = ledgerPath();
    const options = {
      versionLedger: path,
      client: { baseUrl: server.url, retry: { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 50, maxJitterMs: 0 } },
      clientRuntime: { fetch: flaky },
    };
    const store = await open(storeId, options);
    await store.write('m', '', 'a', bytes('v1'));
    await store.write('m', '', 'b', bytes('x'));

    lostThenRefused = true;
    await expect(store.write('m', '', 'a', bytes('v2'))).rejects.toBeInstanceOf(StoreIOError);
    // v2 did commit: the next write reads back, finds it, and goes on from there.
    await store.write('m', '', 'a', bytes('v3'));
    expect(text(await store.read('m', '', 'a'))).toBe('v3');

    lostThenRefused = true;
    await expect(store.remove('m', '', 'b', false)).rejects.toBeInstanceOf(StoreIOError);
    // The remove did commit: the key is gone, not "rolled back", and can be written again.
    await expect(store.read('m', '', 'b')).rejects.toBeInstanceOf(KeyNotFoundError);
    await store.write('m', '', 'b', bytes('y'));
    await store.close();

    const reopened = await open(storeId, { versionLedger: path });
    expect(text(await reopened.read('m', '', 'a'))).toBe('v3');
    expect(text(await reopened.read('m', '', 'b'))).toBe('y');
    await reopened.close();
  });

  it('a ledger that fails to record gives VersionLedgerError (a StoreError), never a raw error; a retry then succeeds', async () => {
    const ledger = new MemoryLedger();
    let failNext = false;
    const failing: VersionLedger = {
      load: () => ledger.load(),
      async record(changes) {
        if (failNext) {
          failNext = false;
          throw new Error('ENOSPC: no space left on device');
        }
        await ledger.record(changes);
      },
    };
    const storeId = `rb-${randomUUID()}`;
    const store = await open(storeId, { versionLedger: failing });
    await store.write('m', '', 'k', bytes('v1'));
    failNext = true;
    const error = await store.write('m', '', 'k', bytes('v2')).catch((e) => e);
    expect(error).toBeInstanceOf(VersionLedgerError);
    expect(error).toBeInstanceOf(StoreError);
    expect(error.message).toContain('ENOSPC');
    // The server accepted the write before the ledger failed; the ledger under-states it.
    const other = await open(storeId);
    expect(text(await other.read('m', '', 'k'))).toBe('v2');
    await other.close();
    await store.write('m', '', 'k', bytes('v3'));
    expect(text(await store.read('m', '', 'k'))).toBe('v3');
    // A remove whose ledger record fails is not sent.
    failNext = true;
    await expect(store.remove('m', '', 'k', false)).rejects.toBeInstanceOf(VersionLedgerError);
    expect(text(await store.read('m', '', 'k'))).toBe('v3');
    await store.close();
  });

  it('refuses a ledger with unconditional writes (versions would reset to 1)', async () => {
    await expect(open(`rb-${randomUUID()}`, { writeMode: 'unconditional', versionLedger: ledgerPath() })).rejects.toBeInstanceOf(StoreOpenError);
  });
});
