/**
 * Sweeping with LDK's own `OutputSweeper`, persisted in the wallet's VSS store through the
 * blocking store view (LDK writes its state under `("", "", "output_sweeper")` on every
 * change). Unlike signing the outputs at once (`sweepSpendableOutputs`), the outputs to sweep
 * survive a crash: a wallet restored from its seed and store id picks the sweep up again.
 *
 * The sweeper needs a synchronous KVStore, so the VSS server must not run on the thread that
 * blocks (run it in another process or worker thread).
 */
import * as ldk from 'lightningdevkit';
import type { SyncKVStore } from '../src/store/types.js';
import { KeyNotFoundError } from '../src/store/errors.js';
import { OUTPUT_SWEEPER_NAMESPACE, silentLogger, toLdkKVStore } from '../src/ldk/index.js';
import type { Block, SyntheticChain } from './chain.js';
import type { WalletNode } from './node.js';
import { walletScript } from './wallet-ops.js';

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export interface TrackedOutput {
  valueSat: bigint;
  status: 'pending-broadcast' | 'pending-first-confirmation' | 'pending-threshold-confirmations';
}

export class WalletSweeper {
  private constructor(
    readonly sweeper: ldk.OutputSweeper,
    private readonly node: WalletNode,
  ) {}

  private static parts(node: WalletNode, syncStore: SyncKVStore, destination: Uint8Array) {
    return {
      spender: node.keysManager.as_OutputSpender(),
      change: ldk.ChangeDestinationSource.new_impl({ get_change_destination_script: () => ldk.Result_CVec_u8ZNoneZ.constructor_ok(destination) }),
      kvStore: toLdkKVStore(syncStore, { log: silentLogger }),
    };
  }

  /** A new sweeper at the node's current best block. */
  static create(node: WalletNode, syncStore: SyncKVStore, destination: Uint8Array = walletScript(node)): WalletSweeper {
    const { spender, change, kvStore } = WalletSweeper.parts(node, syncStore, destination);
    const best = node.channelManager.current_best_block();
    const sweeper = ldk.OutputSweeper.constructor_new(best, node.broadcaster, node.feeEstimator, ldk.Option_FilterZ.constructor_none(), spender, change, kvStore, node.logger);
    return new WalletSweeper(sweeper, node);
  }

  /**
   * The sweeper a wallet persisted (a restored node's), or a new one if it never stored one.
   * Fails on stored state that does not load (never starts empty over unreadable state).
   */
  static restore(node: WalletNode, syncStore: SyncKVStore, destination: Uint8Array = walletScript(node)): WalletSweeper {
    let bytes: Uint8Array;
    try {
      bytes = syncStore.read(OUTPUT_SWEEPER_NAMESPACE.primary, OUTPUT_SWEEPER_NAMESPACE.secondary, OUTPUT_SWEEPER_NAMESPACE.key);
    } catch (err) {
      if (err instanceof KeyNotFoundError) return WalletSweeper.create(node, syncStore, destination);
      throw err;
    }
    const { spender, change, kvStore } = WalletSweeper.parts(node, syncStore, destination);
    const res = ldk.OutputSweeper.constructor_read(bytes, node.broadcaster, node.feeEstimator, ldk.Option_FilterZ.constructor_none(), spender, change, kvStore, node.logger);
    if (!(res instanceof ldk.Result_OutputSweeperDecodeErrorZ_OK)) throw new Error(`${node.name}: stored OutputSweeper state does not load`);
    return new WalletSweeper(res.res, node);
  }

  /**
   * Hands the node's collected `SpendableOutputs` to the sweeper (which persists them before
   * returning) and feeds it the blocks it has not seen. Call after mining. With
   * `delayBlocks`, new outputs are swept only that many blocks later (to batch sweeps).
   */
  sync(chain: SyntheticChain, options: { delayBlocks?: number } = {}): void {
    const outputs = this.node.spendableOutputs.splice(0);
    if (outputs.length > 0) {
      const delay = options.delayBlocks ? ldk.Option_u32Z.constructor_some(this.sweeper.current_best_block().get_height() + options.delayBlocks) : ldk.Option_u32Z.constructor_none();
      const res = this.sweeper.track_spendable_outputs(outputs, null, false, delay);
      if (!res.is_ok()) {
        this.node.spendableOutputs.push(...outputs);
        throw new Error(`${this.node.name}: the sweeper could not persist the outputs to sweep`);
      }
    }
    const best = this.sweeper.current_best_block();
    for (const block of chain.blocksAfter(best.get_height())) this.connect(block);
  }

  private connect(block: Block): void {
    const best = this.sweeper.current_best_block();
    // LDK panics (and poisons the WASM instance) on a block that does not extend its tip.
    if (block.height !== best.get_height() + 1 || hex(block.header.subarray(4, 36)) !== hex(best.get_block_hash())) {
      throw new Error(`block ${block.height} does not extend the sweeper's best block ${best.get_height()}`);
    }
    const txdata = block.transactions.map((tx, i) => ldk.TwoTuple_usizeTransactionZ.constructor_new(i + 1, tx));
    this.sweeper.as_Listen().filtered_block_connected(block.header, txdata, block.height);
  }

  tracked(): TrackedOutput[] {
    return this.sweeper.tracked_spendable_outputs().map((t) => {
      const d = t.get_descriptor();
      const status = t.get_status();
      const valueSat =
        d instanceof ldk.SpendableOutputDescriptor_StaticOutput
          ? d.output.value
          : d instanceof ldk.SpendableOutputDescriptor_DelayedPaymentOutput
            ? d.delayed_payment_output.get_output().value
            : d instanceof ldk.SpendableOutputDescriptor_StaticPaymentOutput
              ? d.static_payment_output.get_output().value
              : 0n;
      return {
        valueSat,
        status:
          status instanceof ldk.OutputSpendStatus_PendingInitialBroadcast
            ? 'pending-broadcast'
            : status instanceof ldk.OutputSpendStatus_PendingFirstConfirmation
              ? 'pending-first-confirmation'
              : 'pending-threshold-confirmations',
      };
    });
  }
}
