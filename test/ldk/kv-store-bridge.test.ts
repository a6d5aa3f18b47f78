/**
 * The synchronous KVStore bridge at its edges (real LDK WASM, in-memory stores): whatever a
 * store throws (and whatever the logger does) becomes an IOError result, never a JavaScript
 * exception inside an LDK callback; each error gets the kind that lets a caller tell an
 * unreachable store from corrupt data; removes of absent keys succeed as LDK's contract says.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import {
  CorruptStateError,
  initLdk,
  ioErrorFor,
  readChannelMonitorsWithLdk,
  silentLogger,
  toLdkKVStore,
} from '../../src/ldk/index.js';
import { KeyBusyError, KeyNotFoundError, StoreIOError, StoreTimeoutError, VersionLedgerError } from '../../src/store/errors.js';
import { AuthError, InternalServerError, VersionMismatchError, VssClientError } from '../../src/client/errors.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { capturingLogger, throwingLogger } from './helpers/capturing-logger.js';
import { monitorReaderOver, readFailure } from './helpers/monitor-reader.js';
import { allOperations, throwingStore } from './helpers/kv-bridge.js';

beforeAll(async () => {
  await initLdk();
});

describe('KVStore bridge: nothing thrown into WASM', () => {
  it('a non-Error thrown by the store (even one that cannot be turned into a string) is an Other result, logged', () => {
    const log = capturingLogger();
    const weird = Object.create(null) as object; // String(weird) throws a TypeError
    expect(allOperations(throwingStore(() => weird), log)).toEqual(Array(5).fill('LDKIOError_Other'));
    expect(log.lines.map((l) => l.fields.op)).toEqual(['read', 'write', 'remove', 'list', 'list_all_keys']);
    expect(allOperations(throwingStore(() => undefined), silentLogger)).toEqual(Array(5).fill('LDKIOError_Other'));
    expect(allOperations(throwingStore(() => 42), silentLogger)).toEqual(Array(5).fill('LDKIOError_Other'));
  });

  it('a logger that throws while reporting a failure does not turn the IOError into an exception', () => {
    expect(allOperations(throwingStore(() => new StoreTimeoutError('deadline passed')), throwingLogger)).toEqual(Array(5).fill('LDKIOError_TimedOut'));
  });
});

describe('KVStore bridge: IOError kinds', () => {
  it('a request the store could not complete is a transport kind, never Other (which LDK uses for data it cannot apply)', () => {
    const io = (cause?: unknown) => new StoreIOError('reading monitors/x', cause === undefined ? undefined : { cause });
    expect(ioErrorFor(io())).toBe(ldk.IOError.LDKIOError_NotConnected); // e.g. the sync bridge's worker exited
    expect(ioErrorFor(io(new InternalServerError('busy', { status: 500 })))).toBe(ldk.IOError.LDKIOError_NotConnected);
    expect(ioErrorFor(io(new VersionMismatchError('1')))).toBe(ldk.IOError.LDKIOError_NotConnected);
    expect(ioErrorFor(io(new VssClientError('redirect', 'moved')))).toBe(ldk.IOError.LDKIOError_NotConnected);
    expect(ioErrorFor(io(new VssClientError('timeout', 'no answer within 10000 ms')))).toBe(ldk.IOError.LDKIOError_TimedOut);
    expect(ioErrorFor(io(new AuthError('token expired', { status: 401 })))).toBe(ldk.IOError.LDKIOError_PermissionDenied);
    // The network kinds still win when the cause carries Node's error code.
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(ioErrorFor(io(new VssClientError('network', 'fetch failed', { cause: refused })))).toBe(ldk.IOError.LDKIOError_ConnectionRefused);
    // A sync write racing an async write of the same key: nothing was sent, try again later.
    expect(ioErrorFor(new KeyBusyError('in flight'))).toBe(ldk.IOError.LDKIOError_WouldBlock);
    // The device's own version ledger failed to record what a read learnt: retry, the data is fine.
    expect(ioErrorFor(new VersionLedgerError('ledger file not writable'))).toBe(ldk.IOError.LDKIOError_Interrupted);
  });

  it("readChannelMonitorsWithLdk reports a store that fails its requests as StoreIOError, not as corrupt data", () => {
    const store = new MemoryKVStore();
    const mup = monitorReaderOver(store, new Uint8Array(32).fill(9));
    const failure = () => readFailure(mup);
    const failures = [
      new StoreIOError('listing monitors failed', { cause: new InternalServerError('overloaded', { status: 503 }) }),
      new StoreIOError('listing monitors failed', { cause: new AuthError('token expired', { status: 401 }) }),
      new StoreIOError('the sync bridge worker exited (code 1)'),
      new VersionLedgerError('the version ledger could not record 1 change(s)'),
    ];
    for (const thrown of failures) {
      store.failNext(1, () => thrown);
      const err = failure();
      expect(err).toBeInstanceOf(StoreIOError);
      expect(err).not.toBeInstanceOf(CorruptStateError);
    }
  });
});

describe('KVStore bridge: removes', () => {
  it('removing an absent key succeeds, lazily or not, even over a store that reports it missing', () => {
    const log = capturingLogger();
    const kv = toLdkKVStore(throwingStore(() => new KeyNotFoundError('monitor_updates', 'm', '7')), { log });
    expect(kv.remove('monitor_updates', 'm', '7', false)).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    expect(kv.remove('monitor_updates', 'm', '7', true)).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    expect(log.lines).toEqual([]);
    // Over the in-memory store (which does not complain): also fine.
    const memory = toLdkKVStore(new MemoryKVStore().toSyncStore(), { log });
    expect(memory.remove('monitor_updates', 'm', '8', false)).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
    expect(memory.remove('monitor_updates', 'm', '8', true)).toBeInstanceOf(ldk.Result_NoneIOErrorZ_OK);
  });

  it('a key LDK passes that the store refuses is InvalidInput on every operation, logged with the key', () => {
    const log = capturingLogger();
    const kv = toLdkKVStore(new MemoryKVStore().toSyncStore(), { log });
    const long = 'x'.repeat(121);
    expect((kv.read('monitors', '', long) as ldk.Result_CVec_u8ZIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_InvalidInput);
    expect((kv.write('', 'secondary-without-primary', 'k', Uint8Array.of(1)) as ldk.Result_NoneIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_InvalidInput);
    expect((kv.remove('monitors', '', 'a/b', true) as ldk.Result_NoneIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_InvalidInput);
    expect((kv.list('monitors', 'bad#ns') as ldk.Result_CVec_StrZIOErrorZ_Err).err).toBe(ldk.IOError.LDKIOError_InvalidInput);
    expect(log.lines.map((l) => l.fields.key)).toEqual([`monitors//${long}`, '/secondary-without-primary/k', 'monitors//a/b', 'monitors/bad#ns']);
  });
});
