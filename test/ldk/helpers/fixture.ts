/**
 * The per-file setup of the LDK suites: LDK loaded, one real VSS backend for the file, and
 * the network of the running test shut down after it (with the server brought back).
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { initLdk } from '../../../src/ldk/index.js';
import { vssBackend, type StoreBackend } from './backends.js';
import type { Pair } from './nodes.js';

export interface VssFixture {
  /** The file's backend (available inside tests). */
  readonly backend: StoreBackend;
  /** A store id no other test (or concurrently running file) uses. */
  nextStoreId(): string;
}

/** `current` returns the running test's pair (if any); `clear` forgets it after shutdown. */
export function useVssBackend(prefix: string, current: () => Pair | undefined, clear: () => void): VssFixture {
  let backend: StoreBackend | undefined;
  let seq = 0;
  beforeAll(async () => {
    await initLdk();
    backend = await vssBackend();
  }, 60_000);
  afterAll(async () => {
    await backend?.close();
  });
  afterEach(async () => {
    await current()?.net.shutdown();
    clear();
    await backend?.resume();
  });
  return {
    get backend(): StoreBackend {
      if (!backend) throw new Error('the VSS backend is not started yet');
      return backend;
    },
    nextStoreId: () => `${prefix}-${process.pid}-${++seq}`,
  };
}
