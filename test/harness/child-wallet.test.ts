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
});
