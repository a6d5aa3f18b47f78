/**
 * A restore on a new device, measured in a fresh process: bench/ldk.ts's in-process restore
 * runs warm (the WebAssembly module compiled, the JIT trained on the same monitors by the
 * reads before it), which a phone restoring a wallet never is.
 *
 * Parent side: `coldRestore(input)` forks this module and returns what the child measured.
 * Child side (`LDK_VSS_COLD_RESTORE=1`): loads LDK's WebAssembly, rebuilds the parent's chain
 * from the blocks it was sent (a new device learns them from its chain source; replaying them
 * is part of the restore), opens the store from its seed and id alone, and restores the node.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Block } from '../harness/chain.js';
import { WalletNetwork } from '../harness/network.js';
import { vssPersistence } from '../harness/persistence.js';
import { initLdk } from '../src/ldk/index.js';
import { VssStore } from '../src/store/index.js';

export interface ColdRestoreInput {
  serverUrl: string;
  storeId: string;
  /** Seed of the store's keys (VssStore `keys.seed`). */
  storeSeed: Uint8Array;
  /** The LDK node's seed. */
  nodeSeed: Uint8Array;
  /** The chain after genesis, so the restored node can sync to the same tip. */
  blocks: Block[];
}

export interface ColdRestoreResult {
  /** From the fork call to the restored node, as the parent saw it. */
  wallMs: number;
  /** From the child's process start until its modules were loaded. */
  startupMs: number;
  /** Loading and compiling LDK's WebAssembly. */
  initLdkMs: number;
  /** Opening the store (one listing of every key). */
  openMs: number;
  /** restoreNode: reading and decoding monitors and manager, replaying updates and blocks. */
  restoreMs: number;
  monitors: number;
  updatesApplied: number;
  bytesRead: number;
}

const CHILD_ENV = 'LDK_VSS_COLD_RESTORE';
const TIMEOUT_MS = 120_000;

type ChildReply = { result: Omit<ColdRestoreResult, 'wallMs'> } | { error: string };

export function coldRestore(input: ColdRestoreInput): Promise<ColdRestoreResult> {
  const started = performance.now();
  const child = fork(fileURLToPath(import.meta.url), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, [CHILD_ENV]: '1' },
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`cold restore did not finish within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    const finish = (outcome: () => void): void => {
      clearTimeout(timer);
      child.removeAllListeners();
      outcome();
    };
    let reply: ChildReply | undefined;
    let wallMs = 0;
    child.once('message', (message: ChildReply) => {
      wallMs = performance.now() - started;
      reply = message;
      child.kill('SIGTERM');
    });
    // Settled on exit, so nothing of the child is still writing when the parent goes on.
    child.once('exit', (code, signal) =>
      finish(() => {
        if (reply === undefined) reject(new Error(`cold restore child exited (${signal ?? code}) before answering`));
        else if ('error' in reply) reject(new Error(`cold restore failed in the child: ${reply.error}`));
        else resolve({ wallMs, ...reply.result });
      }),
    );
    child.once('error', (error) => finish(() => reject(error)));
    child.send(input);
  });
}

async function runChild(input: ColdRestoreInput, startupMs: number): Promise<Omit<ColdRestoreResult, 'wallMs'>> {
  let t = performance.now();
  await initLdk();
  const initLdkMs = performance.now() - t;
  const net = await WalletNetwork.create();
  for (const block of input.blocks) net.chain.append(block);
  t = performance.now();
  const store = await VssStore.open({ storeId: input.storeId, client: { baseUrl: input.serverUrl }, keys: { seed: input.storeSeed } });
  const openMs = performance.now() - t;
  t = performance.now();
  const { node, restored } = await net.restoreNode({ name: 'A', seed: input.nodeSeed, persistence: vssPersistence(store) });
  const restoreMs = performance.now() - t;
  // The writes the restore started (monitors re-persisted as they are watched) land before the
  // child reports, so it exits with nothing in flight.
  await node.persistence.vssPersister?.flush();
  await store.close();
  const { monitors, updatesApplied, bytesRead } = restored.stats;
  return { startupMs, initLdkMs, openMs, restoreMs, monitors, updatesApplied, bytesRead };
}

if (process.env[CHILD_ENV] === '1' && process.send) {
  // performance.now() counts from this process's start: everything before here is start-up.
  const startupMs = performance.now();
  process.once('message', (input: ColdRestoreInput) => {
    runChild(input, startupMs).then(
      (result) => process.send!({ result } satisfies ChildReply),
      (error: unknown) => process.send!({ error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) } satisfies ChildReply),
    );
  });
}
