/**
 * End-to-end failure modes on a real VSS server: an outage through the fault proxy, a server
 * rolled back to an older backup (same device vs new device), two instances of one wallet on
 * one store, and restores across the two persistence paths (VssPersister and LDK's
 * MonitorUpdatingPersister over the blocking store).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBackend } from '../../src/server/index.js';
import { ConcurrentWriterError, RollbackDetectedError } from '../../src/store/index.js';
import { FaultProxy } from '../../harness/fault-proxy.js';
import { CrashableStore } from '../../harness/crash-store.js';
import { channelView, forceCloseChannel, mineUntil, transactionOutputs, walletScript } from '../../harness/wallet-ops.js';
import { WalletSweeper } from '../../harness/wallet-sweeper.js';
import { vssStoreOpener, openVssWalletStore } from '../../harness/vss-wallet.js';
import { WalletFleet } from '../../harness/wallets.js';
import { expectConsistent, openPair, startServer, type Pair, useE2eServer } from './helpers/e2e.js';
import { startServerThread, type ServerThread } from '../store/helpers/server-thread.js';

const server = useE2eServer();
let pair: Pair | undefined;
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  await pair?.fleet.shutdown();
  pair = undefined;
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('server outage through the fault proxy', () => {
  it('holds the channel (no channel-advancing message, payment pending, nothing panics) and completes by itself when the server returns', async () => {
    const proxy = await FaultProxy.start({ target: server().url });
    cleanups.push(() => proxy.close());
    pair = await openPair(`${proxy.url}/vss`, { wallet: { timeoutMs: 1_000 } });
    const { fleet, channel } = pair;
    const a = fleet.node('A');
    const b = fleet.node('B');
    const initialA = channelView(a, channel)!.outboundMsat;
    await fleet.pay('A', 'B', 10_000n, { settled: true });

    await proxy.outage();
    const sentBefore = fleet.net.bytesSent(a, b);
    const handle = fleet.sendPayment('A', 'B', 20_000n);
    await fleet.net.runFor(2_000);
    expect(fleet.net.bytesSent(a, b)).toBe(sentBefore); // not a byte to B: no update_add_htlc, no commitment_signed
    expect(channelView(b, channel)!.pendingInboundHtlcs).toBe(0);
    expect(fleet.net.paymentState(handle).sender?.status).toBe('pending');
    expect(fleet.net.paymentState(handle).receiver).toBeUndefined();
    const persister = a.persistence.vssPersister!;
    expect(persister.pending().length).toBeGreaterThan(0);
    expect(persister.stats.retries + a.eventLoop!.stats.retries).toBeGreaterThan(0);
    expect(persister.fatalError).toBeUndefined();
    expect(a.eventLoop!.fatalError).toBeUndefined();
    expect(channelView(a, channel)!.usable).toBe(true);

    // Black hole (connections accepted, never answered) for a while, then the server returns.
    await proxy.blackHole();
    await fleet.net.runFor(1_500);
    expect(fleet.net.bytesSent(a, b)).toBe(sentBefore);
    await proxy.normal();
    await fleet.net.waitForPayment(handle, { settled: true, timeoutMs: 30_000 });
    expect(persister.fatalError).toBeUndefined();
    await expectConsistent(pair, initialA);
    await fleet.pay('B', 'A', 3_000n, { settled: true });
  });
});

describe('server rolled back to an older backup', () => {
  it('same device: the restore refuses with RollbackDetectedError; new device: restores what the server has and says so', async () => {
    const backend = new MemoryBackend();
    const memoryServer = await startServer(backend);
    const ledgerDir = mkdtempSync(join(tmpdir(), 'ldk-vss-e2e-ledger-'));
    cleanups.push(() => memoryServer.close(), () => rmSync(ledgerDir, { recursive: true, force: true }));
    pair = await openPair(memoryServer.url, { wallet: { versionLedgerDir: ledgerDir } });
    const { fleet } = pair;
    for (let i = 0; i < 2; i++) await fleet.pay('A', 'B', 10_000n, { settled: true });
    await fleet.node('A').eventLoop!.persistIfNeeded();
    const backup = backend.snapshot();
    const oldUpdateId = fleet.node('A').persistence.vssPersister!.monitors()[0].durableUpdateId;
    for (let i = 0; i < 3; i++) await fleet.pay('A', 'B', 10_000n, { settled: true });
    await fleet.node('A').eventLoop!.persistIfNeeded();
    const newUpdateId = fleet.node('A').persistence.vssPersister!.monitors()[0].durableUpdateId!;
    expect(newUpdateId).toBeGreaterThan(oldUpdateId!);
    await fleet.crash('A');

    backend.restore(backup); // the operator restored last night's backup
    const rejected = await fleet.restore('A').catch((e: unknown) => e);
    expect(rejected).toBeInstanceOf(RollbackDetectedError);
    expect(fleet.node('A').crashed).toBe(true); // no node was started on the old state
    expect(fleet.ledger.closures).toEqual([]);

    // A new device (no local record of versions) restores from what the server has, and says so.
    const elsewhere = await WalletFleet.create(vssStoreOpener({ serverUrl: memoryServer.url, versionLedgerDir: mkdtempSync(join(ledgerDir, 'new-device-')) }));
    cleanups.push(() => elsewhere.shutdown());
    elsewhere.syncChainFrom(fleet.net.chain);
    const w = fleet.wallet('A');
    const restored = await elsewhere.restoreFrom({ name: 'A', seed: w.seed, storeId: w.storeId });
    expect(restored.restoreReport!.newDevice).toBe(true);
    expect(restored.restoreReport!.monitors).toEqual([{ name: pair.channel.monitorName, updateId: oldUpdateId }]);
  });
});

describe('two instances of one wallet on one store', () => {
  it('the second instance is stopped with ConcurrentWriterError before it changes any state; the first keeps working and the store stays restorable', async () => {
    pair = await openPair(server().url);
    const { fleet, channel } = pair;
    const initialA = channelView(fleet.node('A'), channel)!.outboundMsat;
    await fleet.pay('A', 'B', 10_000n, { settled: true });
    const w = fleet.wallet('A');

    // The same wallet starts elsewhere (same seed, same store id) while the first one runs.
    let gate: CrashableStore | undefined;
    const second = await WalletFleet.create(async (identity) => {
      gate = new CrashableStore(await openVssWalletStore(identity, { serverUrl: server().url }));
      return { store: gate };
    });
    cleanups.push(() => second.shutdown());
    second.syncChainFrom(fleet.net.chain);
    let release: () => void = () => {};
    const restoring = second.restoreFrom({ name: 'A', seed: w.seed, storeId: w.storeId });
    await new Promise<void>((resolve) => {
      const check = (): void => (gate ? resolve() : void setTimeout(check, 5));
      check();
    });
    release = gate!.pauseWrites();
    const twin = await restoring;
    // Meanwhile the first instance pays (its writes land).
    await fleet.pay('A', 'B', 15_000n, { settled: true });
    release();
    const persister = twin.node.persistence.vssPersister!;
    await second.net.waitFor(() => persister.fatalError !== undefined || twin.node.eventLoop?.fatalError !== undefined, { what: 'the second instance to stop' });
    const stoppedWith = persister.fatalError ?? twin.node.eventLoop!.fatalError;
    expect(stoppedWith).toBeInstanceOf(ConcurrentWriterError);
    // Compare-and-set let through only writes to keys the first instance had not changed since
    // the second read them: at most its re-registration of the full monitor, which restates
    // the state it read (the first's newer deltas still apply on top). Never the manager.
    expect(gate!.writes.filter((x) => x.kind !== 'monitor')).toEqual([]);
    expect(gate!.writes.length).toBeLessThanOrEqual(1);

    // The first instance is unaffected, and what it stored restores on a third instance.
    await fleet.pay('A', 'B', 20_000n, { settled: true });
    await fleet.node('A').eventLoop!.persistIfNeeded();
    await fleet.crash('A');
    await fleet.restore('A');
    await fleet.pay('A', 'B', 5_000n, { settled: true });
    await expectConsistent(pair, initialA);
  });
});

describe('restores across the two persistence paths', () => {
  let thread: ServerThread;
  beforeAll(async () => {
    // The blocking store freezes this thread while it waits: the server must run elsewhere.
    thread = await startServerThread({ backend: 'pglite' });
  });
  afterAll(async () => {
    await thread?.close();
  });

  it('a store written by the sync KVStore path (LDK MonitorUpdatingPersister) restores with VssPersister, and back', async () => {
    pair = await openPair(thread.url, { mode: 'ldk-sync' });
    const { fleet, channel } = pair;
    const initialA = channelView(fleet.node('A'), channel)!.outboundMsat;
    for (let i = 0; i < 3; i++) await fleet.pay('A', 'B', 10_000n, { settled: true });
    await fleet.node('A').eventLoop!.persistIfNeeded();
    await fleet.crash('A');

    const viaPersister = await fleet.restore('A', { mode: 'vss-persister' });
    expect(viaPersister.restoreReport!.monitors).toHaveLength(1);
    for (let i = 0; i < 2; i++) await fleet.pay('A', 'B', 10_000n, { settled: true });
    await expectConsistent(pair, initialA);
    await fleet.node('A').eventLoop!.persistIfNeeded();
    await fleet.crash('A');

    const viaSync = await fleet.restore('A', { mode: 'ldk-sync' });
    expect(viaSync.restoreReport!.monitors[0].updateId).toBe(viaPersister.node.persistence.vssPersister!.monitors()[0].latestUpdateId);
    await fleet.pay('A', 'B', 10_000n, { settled: true });
    await expectConsistent(pair, initialA);
  });
  it("LDK's OutputSweeper keeps the outputs to sweep in VSS: a wallet crashed after a force-close is restored and its sweeper finishes the sweep", async () => {
    pair = await openPair(thread.url);
    const { fleet, channel } = pair;
    await fleet.pay('A', 'B', 50_000_000n, { settled: true });
    const a = fleet.node('A');
    const sweeper = WalletSweeper.create(a, fleet.wallet('A').handle.syncStore!());
    await forceCloseChannel(fleet.net, a, channel, fleet.node('B').nodeId, [fleet.node('B')]);
    await mineUntil(
      fleet.net,
      () => {
        // Batched: swept 3 blocks later, so the crash below comes before any broadcast.
        sweeper.sync(fleet.net.chain, { delayBlocks: 3 });
        return sweeper.tracked().length > 0;
      },
      { maxBlocks: 200, what: "A's delayed output handed to the sweeper" },
    );
    expect(sweeper.tracked()).toHaveLength(1);
    const destination = walletScript(a);
    const isSweep = (tx: Uint8Array): boolean => transactionOutputs(tx).some((o) => Buffer.from(o.script).equals(Buffer.from(destination)));
    const swept = (): Uint8Array | undefined => fleet.net.chain.blocksAfter(0).flatMap((b) => b.transactions).find(isSweep);
    expect(swept()).toBeUndefined();
    expect(fleet.net.chain.pendingTransactions().some(isSweep)).toBe(false); // not even broadcast yet
    await fleet.crash('A');

    const restored = await fleet.restore('A', { reconnect: false });
    const resumed = WalletSweeper.restore(restored.node, restored.handle.syncStore!(), destination);
    expect(resumed.tracked().map((t) => t.valueSat)).toEqual(sweeper.tracked().map((t) => t.valueSat));
    await mineUntil(
      fleet.net,
      () => {
        resumed.sync(fleet.net.chain);
        return swept() !== undefined && resumed.tracked().length === 0;
      },
      { maxBlocks: 30, what: 'the sweep mined and settled' },
    );
    const value = transactionOutputs(swept()!).filter((o) => Buffer.from(o.script).equals(Buffer.from(destination))).reduce((n, o) => n + o.valueSat, 0n);
    // 1,000,000 - 300,000 pushed - 50,000 paid, less the commitment and sweep fees.
    expect(value).toBeGreaterThan(645_000n);
    expect(value).toBeLessThan(650_000n);
  }, 120_000);
});
