/**
 * Review findings on the synchronous KVStore bridge (real LDK WASM): nothing a store throws
 * escapes into WASM, even a value on which `instanceof` itself throws; NotFound is given
 * exactly for a missing key.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { initLdk, ioErrorFor, toLdkKVStore } from '../../src/ldk/index.js';
import { KeyNotFoundError, StoreIOError } from '../../src/store/errors.js';
import { capturingLogger } from './helpers/capturing-logger.js';
import { allOperations, ioKindOf, throwingStore } from './helpers/kv-bridge.js';

beforeAll(async () => {
  await initLdk();
});

describe('KVStore bridge review', () => {
  it('a thrown value on which instanceof throws (a revoked Proxy) is an Other result on every operation, not an exception inside LDK', () => {
    const revoked = (): unknown => {
      const { proxy, revoke } = Proxy.revocable({}, {});
      revoke();
      return proxy;
    };
    const log = capturingLogger();
    expect(allOperations(throwingStore(revoked), log)).toEqual(Array(5).fill('LDKIOError_Other'));
    expect(log.lines.map((l) => l.fields.op)).toEqual(['read', 'write', 'remove', 'list', 'list_all_keys']);
  });

  it('NotFound only for a missing key: a request that failed while reading is not taken for an absent key', () => {
    expect(ioErrorFor(new KeyNotFoundError('monitors', '', 'k'))).toBe(ldk.IOError.LDKIOError_NotFound);
    // A failed request whose cause chain mentions a missing key elsewhere is still a failure.
    expect(ioErrorFor(new StoreIOError('reading monitors//k failed', { cause: new KeyNotFoundError('', '', 'schema') }))).not.toBe(ldk.IOError.LDKIOError_NotFound);
    const kv = toLdkKVStore(throwingStore(() => new KeyNotFoundError('monitor_updates', 'm', '3')), { log: capturingLogger() });
    expect(ioKindOf(kv.read('monitor_updates', 'm', '3'))).toBe('LDKIOError_NotFound');
    expect(ioKindOf(kv.remove('monitor_updates', 'm', '3', true))).toBe('ok');
  });
});
