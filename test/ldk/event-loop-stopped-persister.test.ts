/**
 * An LdkEventLoop given a VssPersister that was closed or stopped by a fatal error: such a
 * persister writes no monitor and reports nothing to LDK, so the node would run with every
 * channel held and nothing but a log line saying why. The loop refuses it at construction.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LdkEventLoop, PersisterStoppedError, VssPersister, initLdk, silentLogger } from '../../src/ldk/index.js';
import { MemoryKVStore } from './helpers/memory-store.js';
import { fakeLdkNode } from './helpers/fake-ldk-node.js';
import { standInPersisterParts } from './helpers/fake-persist.js';

beforeAll(async () => {
  await initLdk();
});

describe('LdkEventLoop and a persister that has stopped', () => {
  it('refuses a closed persister and a failed one (PersisterStoppedError, the fatal error as cause); a running one links', async () => {
    const store = new MemoryKVStore();
    const loopFor = (persister: VssPersister): LdkEventLoop => {
      const { channelManager, chainMonitor } = fakeLdkNode();
      return new LdkEventLoop({ channelManager, chainMonitor, store, persister, log: silentLogger, handleEvent: () => {} });
    };

    const closed = new VssPersister({ store, ...standInPersisterParts(1) });
    await closed.close();
    expect(() => loopFor(closed)).toThrow(PersisterStoppedError);
    expect(() => loopFor(closed)).toThrow(/VssPersister given to LdkEventLoop was closed/);

    const failed = new VssPersister({ store, ...standInPersisterParts(2) });
    failed.on('fatal', () => {});
    failed.linkManagerWriter({ requestPersist: () => {} }).writerFailed(new Error('manager store gone'));
    const err = (() => {
      try {
        loopFor(failed);
        return undefined;
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(PersisterStoppedError);
    expect((err as Error).message).toContain('manager store gone');
    expect((err as Error).cause).toBe(failed.fatalError);

    const running = new VssPersister({ store, ...standInPersisterParts(3) });
    const loop = loopFor(running);
    await loop.persistIfNeeded();
    await loop.stop();
    await running.close();
  });
});
