/**
 * The synthetic chain's transaction rules: what it parses from a transaction, and that it never
 * confirms two spends of one output (first seen wins, later conflicts are refused or evicted).
 */
import { describe, expect, it } from 'vitest';
import * as ldk from 'lightningdevkit';
import { initLdk } from '../../src/ldk/index.js';
import { SyntheticChain, spentOutpoints, syntheticFundingTransaction, txidHex } from '../../harness/chain.js';

const script = Uint8Array.from([0x00, 0x14, ...new Uint8Array(20).fill(7)]);

/** `tx` with its single input replaced by `txid:vout` (txid in display order). */
function spending(tx: Uint8Array, txid: string, vout: number): Uint8Array {
  const copy = Uint8Array.from(tx);
  copy.set(Buffer.from(txid, 'hex').reverse(), 7);
  new DataView(copy.buffer).setUint32(39, vout, true);
  return copy;
}

/** The same transaction paying a different amount: another txid, the same input. */
function conflicting(tx: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(tx);
  copy[49] ^= 1;
  return copy;
}

async function newChain(): Promise<SyntheticChain> {
  await initLdk();
  return new SyntheticChain(ldk.BestBlock.constructor_from_network(ldk.Network.LDKNetwork_Regtest).get_block_hash());
}

describe('SyntheticChain', () => {
  it('reads the outpoints a transaction spends', () => {
    const parent = syntheticFundingTransaction(script, 50_000n);
    const child = spending(syntheticFundingTransaction(script, 40_000n), txidHex(parent), 3);
    expect(spentOutpoints(child)).toEqual([`${txidHex(parent)}:3`]);
    // A non-segwit serialization of the same input reads the same.
    const legacy = Uint8Array.from([...child.subarray(0, 4), ...child.subarray(6, child.length - 7), ...child.subarray(child.length - 4)]);
    expect(spentOutpoints(legacy)).toEqual([`${txidHex(parent)}:3`]);
  });

  it('keeps the first of two spends of one output and never confirms the second', async () => {
    const chain = await newChain();
    const first = syntheticFundingTransaction(script, 50_000n);
    const second = conflicting(first);
    expect(txidHex(second)).not.toBe(txidHex(first));
    expect(chain.broadcast(first)).toBe(true);
    expect(chain.broadcast(first)).toBe(false); // duplicate
    expect(chain.broadcast(second)).toBe(false); // conflicts with the queued one
    chain.mine();
    expect(chain.confirmationHeight(txidHex(first))).toBe(1);
    expect(chain.broadcast(second)).toBe(false); // conflicts with a mined one
    chain.mine();
    expect(chain.confirmationHeight(txidHex(second))).toBeUndefined();
    expect(chain.pendingTransactions()).toEqual([]);
  });

  it('evicts a queued transaction when a block confirms a conflicting one, and keeps unrelated ones', async () => {
    const chain = await newChain();
    const queued = syntheticFundingTransaction(script, 50_000n);
    const unrelated = syntheticFundingTransaction(script, 60_000n);
    chain.broadcast(queued);
    chain.broadcast(unrelated);
    const winner = conflicting(queued);
    chain.mine([winner]);
    expect(chain.pendingTransactions().map(txidHex)).toEqual([txidHex(unrelated)]);
    // A spend of the winner's output is a new, valid transaction.
    expect(chain.broadcast(spending(syntheticFundingTransaction(script, 1_000n), txidHex(winner), 0))).toBe(true);
  });
});
