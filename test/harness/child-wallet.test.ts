/**
 * ChildWallet (harness/child-wallet.ts) on its own: talking to a child whose IPC channel is
 * closing must fail that call, never crash the parent with an unhandled 'error'.
 */
import { describe, expect, it } from 'vitest';
import { ChildWallet, ChildWalletError } from '../../harness/child-wallet.js';

describe('ChildWallet', () => {
  it('a request made while the child is being stopped fails with ChildWalletError, and stop() completes', async () => {
    const child = ChildWallet.spawn();
    // Wait for the child to be up (it answers: the wallet is not started yet).
    await expect(child.state()).rejects.toThrow(/wallet not started/);
    const stopping = child.stop(); // closes the IPC channel at once
    await expect(child.state()).rejects.toBeInstanceOf(ChildWalletError);
    await stopping;
    await expect(child.state()).rejects.toThrow(/exited/);
  }, 60_000);

  it('a child that crashes says why: the error quotes the end of its stderr', async () => {
    const child = ChildWallet.spawn();
    try {
      await expect(child.state()).rejects.toThrow(/wallet not started/);
      // A message the child cannot read: its handler throws, uncaught, and the process dies
      // (exit code 1) with the stack on stderr, while a request waits for its answer.
      child.process.send(null as unknown as string); // (null is sent as is; the types do not list it)
      const waiting = child.state();
      await expect(waiting).rejects.toBeInstanceOf(ChildWalletError);
      await expect(waiting).rejects.toThrow(/^child wallet exited \(1\) before answering; its stderr ended with:\n[^]*TypeError: Cannot read properties of null \(reading 'request'\)/);
      // A request after the exit gets the same reason.
      await expect(child.state()).rejects.toThrow(/^child wallet has exited \(1\); its stderr ended with:\n[^]*TypeError: Cannot read properties of null/);
    } finally {
      await child.kill();
    }
  }, 60_000);
});
