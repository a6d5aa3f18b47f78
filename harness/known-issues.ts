/**
 * Crash windows where the LDK version this project is pinned to (`lightningdevkit` 0.1.0)
 * cannot restore, whatever the persistence layer does.
 *
 * Mid-claim manager (fixed upstream in rust-lightning PR #3772, after 0.1.0): when a
 * receiver claims a payment, LDK moves it to "being claimed" in the ChannelManager and puts
 * the preimage (with claim details) in a monitor update. A crash after that update is
 * durable but before a manager written after the claim completed is durable leaves a stored
 * manager that still lists the claim as in progress next to a monitor that has its preimage.
 * LDK 0.1.0 then refuses to read the manager (`DecodeError::InvalidValue`); restore fails
 * closed with `CorruptStateError`. Any write order has this window (a monitor update must not
 * be durable before a manager that knows it), so only an LDK upgrade removes it.
 *
 * `ClaimWindowTracker` follows a receiving wallet and says whether a crash at a given write
 * could land in that window, so crash sweeps place their crashes around it and a dedicated
 * test places one inside it.
 */
import * as ldk from 'lightningdevkit';
import type { CrashableStore, CrashTiming, WriteKind } from './crash-store.js';
import type { WalletNode } from './node.js';

export class ClaimWindowTracker {
  private open = false;
  /** PaymentClaimed was handled and no manager write was made since. */
  private claimCompleted = false;
  private node: WalletNode | undefined;
  /** What each write call means for the window, by call sequence of the current store. */
  private readonly calls = new Map<number, 'claim-update' | 'closing-manager'>();

  /** Follow a (new incarnation of the) receiving wallet. */
  watch(node: WalletNode, store: CrashableStore): void {
    this.node = node;
    this.calls.clear();
    node.on('event', (event) => {
      if (event instanceof ldk.Event_PaymentClaimed) this.claimCompleted = true;
    });
    store.onCall((callSeq, kind) => {
      if (kind === 'monitor-update' && this.claimInProgress()) this.calls.set(callSeq, 'claim-update');
      if (kind === 'manager' && this.claimCompleted) {
        this.claimCompleted = false;
        this.calls.set(callSeq, 'closing-manager');
      }
    });
    store.onWrite((record) => {
      const meaning = this.calls.get(record.callSeq);
      if (meaning === 'claim-update') this.open = true;
      if (meaning === 'closing-manager') this.open = false;
    });
  }

  /** The receiver handed a payment to `claim_funds` and has not seen PaymentClaimed yet. */
  claimInProgress(): boolean {
    return [...(this.node?.payments.values() ?? [])].some((p) => p.direction === 'inbound' && p.status === 'pending');
  }

  /** True while the stored state is one LDK 0.1.0 cannot load. */
  get windowOpen(): boolean {
    return this.open;
  }

  /**
   * Whether a crash at a write being made now, with `timing`, could land in the window.
   * Use as a `CrashPoint.when` (negated) to place crashes outside it.
   */
  crashLandsInWindow(kind: WriteKind, timing: CrashTiming): boolean {
    if (this.open) return true;
    // The claim's own preimage update: once durable, the window is open.
    return timing === 'after-durable' && kind === 'monitor-update' && this.claimInProgress();
  }
}
