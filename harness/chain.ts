/**
 * A synthetic regtest chain for in-process LDK nodes. LDK checks neither proof of work nor
 * merkle roots, so blocks are 80-byte headers that chain correctly from regtest genesis
 * (LDK's `Listen` panics the whole WASM instance on a prev-hash or height mismatch, so the
 * chain and the nodes both verify continuity before handing a block over).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { randomBytes } from 'node:crypto';

export interface Block {
  height: number;
  /** Block hash in Bitcoin's internal byte order (what LDK passes around). */
  hash: Uint8Array;
  header: Uint8Array;
  transactions: Uint8Array[];
}

/** Regtest's easiest target: every header passes any difficulty check. */
const REGTEST_BITS = 0x207fffff;

export function sha256d(data: Uint8Array): Uint8Array {
  return sha256(sha256(data));
}

/** Hex of a hash in display order (reversed), as block explorers and LDK's monitor names show txids. */
export function displayHex(hash: Uint8Array): string {
  return Buffer.from(hash).reverse().toString('hex');
}

function writeU32LE(target: Uint8Array, offset: number, value: number): void {
  new DataView(target.buffer, target.byteOffset, target.byteLength).setUint32(offset, value >>> 0, true);
}

export class SyntheticChain {
  private readonly blocks: Block[];
  /** Transactions broadcast by nodes and not yet mined, in broadcast order. */
  private readonly mempool: Uint8Array[] = [];
  private readonly minedTxids = new Set<string>();
  /** Outpoints (`txid:vout`) spent by mined transactions. */
  private readonly minedSpends = new Set<string>();

  /** `genesisHash` is internal byte order, e.g. `BestBlock.constructor_from_network(Regtest).get_block_hash()`. */
  constructor(genesisHash: Uint8Array, private readonly startTime = Math.floor(Date.now() / 1000)) {
    this.blocks = [{ height: 0, hash: Uint8Array.from(genesisHash), header: new Uint8Array(80), transactions: [] }];
  }

  get tip(): Block {
    return this.blocks[this.blocks.length - 1];
  }

  get height(): number {
    return this.tip.height;
  }

  block(height: number): Block {
    const block = this.blocks[height];
    if (!block) throw new RangeError(`no block at height ${height} (tip ${this.height})`);
    return block;
  }

  /** Blocks strictly above `height`, in order. */
  blocksAfter(height: number): Block[] {
    return this.blocks.slice(height + 1);
  }

  /**
   * Queues a transaction for the next block. Duplicates and already-mined ones are ignored, and
   * so is a transaction spending an outpoint that a mined or queued one already spends (first
   * seen wins, as a node without replacement does): a chain never confirms two spends of one
   * output, e.g. both sides' commitment transactions. Returns whether it was queued.
   */
  broadcast(tx: Uint8Array): boolean {
    const id = txidHex(tx);
    if (this.minedTxids.has(id) || this.mempool.some((t) => txidHex(t) === id)) return false;
    const spends = spentOutpoints(tx);
    const queued = new Set(this.mempool.flatMap(spentOutpoints));
    if (spends.some((o) => this.minedSpends.has(o) || queued.has(o))) return false;
    this.mempool.push(Uint8Array.from(tx));
    return true;
  }

  pendingTransactions(): Uint8Array[] {
    return [...this.mempool];
  }

  /** Mines one block with `transactions` (default: the whole mempool). */
  mine(transactions: Uint8Array[] = this.mempool.splice(0)): Block {
    const prev = this.tip;
    const header = new Uint8Array(80);
    writeU32LE(header, 0, 0x20000000);
    header.set(prev.hash, 4);
    // The merkle root is never checked; random bytes keep headers of empty blocks distinct.
    header.set(randomBytes(32), 36);
    writeU32LE(header, 68, this.startTime + prev.height + 1);
    writeU32LE(header, 72, REGTEST_BITS);
    writeU32LE(header, 76, 0);
    const block: Block = { height: prev.height + 1, hash: sha256d(header), header, transactions: transactions.map((t) => Uint8Array.from(t)) };
    this.recordMined(block.transactions);
    this.blocks.push(block);
    return block;
  }

  /**
   * Appends a block mined elsewhere (e.g. the harness's chain in another process, mirrored
   * into a child wallet's). It must extend the tip.
   */
  append(block: Block): void {
    const prev = this.tip;
    if (block.height !== prev.height + 1 || Buffer.compare(Buffer.from(block.header.subarray(4, 36)), Buffer.from(prev.hash)) !== 0) {
      throw new Error(`block ${block.height} does not extend the tip ${prev.height}`);
    }
    const copy: Block = { height: block.height, hash: Uint8Array.from(block.hash), header: Uint8Array.from(block.header), transactions: block.transactions.map((t) => Uint8Array.from(t)) };
    this.recordMined(copy.transactions);
    this.blocks.push(copy);
  }

  /** Marks transactions mined and drops what they confirmed or conflict with from the mempool. */
  private recordMined(transactions: readonly Uint8Array[]): void {
    for (const tx of transactions) {
      this.minedTxids.add(txidHex(tx));
      for (const outpoint of spentOutpoints(tx)) this.minedSpends.add(outpoint);
    }
    const remaining = this.mempool.filter((t) => !this.minedTxids.has(txidHex(t)) && !spentOutpoints(t).some((o) => this.minedSpends.has(o)));
    this.mempool.splice(0, this.mempool.length, ...remaining);
  }

  mineBlocks(count: number): Block[] {
    const mined: Block[] = [];
    for (let i = 0; i < count; i++) mined.push(this.mine(i === 0 ? undefined : []));
    return mined;
  }

  /** Height at which a transaction was mined, or undefined. */
  confirmationHeight(txid: string): number | undefined {
    for (const block of this.blocks) if (block.transactions.some((t) => txidHex(t) === txid)) return block.height;
    return undefined;
  }
}

/** Reads a Bitcoin CompactSize integer at `offset`: its value and the offset after it. */
export function readVarInt(bytes: Uint8Array, offset: number): [value: number, next: number] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = bytes[offset];
  if (first === undefined) throw new RangeError('truncated transaction');
  if (first < 0xfd) return [first, offset + 1];
  if (first === 0xfd) return [view.getUint16(offset + 1, true), offset + 3];
  if (first === 0xfe) return [view.getUint32(offset + 1, true), offset + 5];
  return [Number(view.getBigUint64(offset + 1, true)), offset + 9];
}

/** The outpoints a transaction spends, as `txid:vout` (txid in display order). */
export function spentOutpoints(tx: Uint8Array): string[] {
  let pos = tx[4] === 0 && tx[5] === 1 ? 6 : 4;
  const [inputs, afterCount] = readVarInt(tx, pos);
  pos = afterCount;
  const spent: string[] = [];
  for (let i = 0; i < inputs; i++) {
    const vout = new DataView(tx.buffer, tx.byteOffset + pos + 32, 4).getUint32(0, true);
    spent.push(`${displayHex(tx.subarray(pos, pos + 32))}:${vout}`);
    pos += 36;
    const [scriptLen, next] = readVarInt(tx, pos);
    pos = next + scriptLen + 4;
  }
  return spent;
}

/** The transaction without its segwit marker, flag and witnesses (what the txid commits to). */
export function stripWitness(tx: Uint8Array): Uint8Array {
  if (tx[4] !== 0 || tx[5] !== 1) return tx;
  let pos = 6;
  const [inputs, afterInCount] = readVarInt(tx, pos);
  pos = afterInCount;
  for (let i = 0; i < inputs; i++) {
    pos += 36;
    const [scriptLen, next] = readVarInt(tx, pos);
    pos = next + scriptLen + 4;
  }
  const [outputs, afterOutCount] = readVarInt(tx, pos);
  pos = afterOutCount;
  for (let i = 0; i < outputs; i++) {
    pos += 8;
    const [scriptLen, next] = readVarInt(tx, pos);
    pos = next + scriptLen;
  }
  const ioEnd = pos;
  for (let i = 0; i < inputs; i++) {
    const [items, next] = readVarInt(tx, pos);
    pos = next;
    for (let j = 0; j < items; j++) {
      const [len, afterLen] = readVarInt(tx, pos);
      pos = afterLen + len;
    }
  }
  const out = new Uint8Array(4 + (ioEnd - 6) + 4);
  out.set(tx.subarray(0, 4), 0);
  out.set(tx.subarray(6, ioEnd), 4);
  out.set(tx.subarray(pos, pos + 4), 4 + (ioEnd - 6));
  return out;
}

/** Transaction id in display order (as in LDK's monitor names). */
export function txidHex(tx: Uint8Array): string {
  return displayHex(sha256d(stripWitness(tx)));
}

/**
 * A segwit transaction paying `valueSat` to `outputScript` from a random (nonexistent)
 * outpoint: enough for LDK, which never validates inputs of a funding transaction.
 */
export function syntheticFundingTransaction(outputScript: Uint8Array, valueSat: bigint): Uint8Array {
  const witnessPos = 58 + outputScript.length;
  const tx = new Uint8Array(witnessPos + 7);
  writeU32LE(tx, 0, 2);
  tx[4] = 0; // segwit marker
  tx[5] = 1; // segwit flag
  tx[6] = 1; // one input
  tx.set(randomBytes(36), 7); // random prevout keeps every funding txid unique
  tx[43] = 0; // empty scriptSig
  writeU32LE(tx, 44, 0xffffffff);
  tx[48] = 1; // one output
  new DataView(tx.buffer).setBigUint64(49, valueSat, true);
  tx[57] = outputScript.length;
  tx.set(outputScript, 58);
  tx[witnessPos] = 1; // one witness item
  tx[witnessPos + 1] = 1; // of one byte
  tx[witnessPos + 2] = 0xff;
  writeU32LE(tx, witnessPos + 3, 0); // locktime
  return tx;
}
