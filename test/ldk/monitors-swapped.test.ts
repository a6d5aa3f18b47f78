/**
 * Monitor readers against monitors stored under the wrong name (real LDK WASM, two real
 * channels, in-memory store): a monitor of one channel stored as another's (a stale copy, a
 * botched migration, two keys swapped) must be refused with the key it sits under, by our
 * reader and by LDK's, never loaded as if it were the channel its key names.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CorruptStateError, initLdk, readChannelMonitorsWithLdk } from '../../src/ldk/index.js';
import { MemoryKVStore, MemoryServer } from './helpers/memory-store.js';
import { monitorReaderOver } from './helpers/monitor-reader.js';
import { openPair, readMonitorsAsNewDevice, vssNode, type Pair } from './helpers/nodes.js';

let pair: Pair | undefined;
afterEach(async () => {
  await pair?.net.shutdown();
  pair = undefined;
});

/** A with two channels to B, persisted to an in-memory server; returns the server and the two monitor names. */
async function twoChannels(): Promise<{ server: MemoryServer; seed: Uint8Array; names: [string, string] }> {
  await initLdk();
  const server = new MemoryServer();
  const p = await openPair({ persistenceA: vssNode(new MemoryKVStore(server)) });
  pair = p;
  const second = await p.net.openChannel(p.a, p.b);
  await p.net.pay(p.a, p.b, 10_000n, { settled: true });
  await p.a.eventLoop!.persistIfNeeded();
  await p.a.persistence.vssPersister!.flush();
  return { server, seed: p.a.seed, names: [p.channel.monitorName, second.monitorName] };
}

describe('monitors stored under another channel\'s name', () => {
  it('are refused by both readers, naming the key; the untouched store reads back both channels', async () => {
    const { server, seed, names } = await twoChannels();
    const [first, second] = names;

    const intact = await readMonitorsAsNewDevice(new MemoryKVStore(server.clone()), seed);
    expect(intact.map((m) => m.name).sort()).toEqual([...names].sort());
    expect(readChannelMonitorsWithLdk(monitorReaderOver(new MemoryKVStore(server.clone()), seed)).map((m) => m.name).sort()).toEqual([...names].sort());

    // The first channel's monitor (a stale copy of it) written over the second channel's.
    const copied = new MemoryKVStore(server.clone());
    await copied.write('monitors', '', second, await copied.read('monitors', '', first));
    const err = await readMonitorsAsNewDevice(copied, seed).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptStateError);
    expect(err).toMatchObject({ primaryNamespace: 'monitors', secondaryNamespace: '', key: second });
    expect((err as Error).message).toBe(`monitor stored as ${second} belongs to ${first}`);
    expect(() => readChannelMonitorsWithLdk(monitorReaderOver(copied, seed))).toThrow(CorruptStateError);

    // The two monitors swapped: each one is whole, but under the other's key.
    const swapped = new MemoryKVStore(server.clone());
    const [a, b] = [await swapped.read('monitors', '', first), await swapped.read('monitors', '', second)];
    await swapped.write('monitors', '', first, b);
    await swapped.write('monitors', '', second, a);
    await expect(readMonitorsAsNewDevice(swapped, seed)).rejects.toBeInstanceOf(CorruptStateError);
    expect(() => readChannelMonitorsWithLdk(monitorReaderOver(swapped, seed))).toThrow(CorruptStateError);
  });
});
