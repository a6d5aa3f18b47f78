/**
 * What the wallets of a fleet persisted, over every incarnation (crashes and restores
 * included): writes per kind, bytes, and time-to-durable of monitor updates as VssPersister
 * measures it (from LDK's callback to the server's acknowledgement).
 */
import type { Wallet, WalletFleet } from './wallets.js';

export interface PersistenceFigures {
  /** Monitor update ids LDK was told are durable. */
  monitorUpdatesPersisted: number;
  monitorDeltaWrites: number;
  fullMonitorWrites: number;
  managerWrites: number;
  /** Plaintext bytes of every durable write (the server stores them encrypted, ~+30 B each). */
  bytesWritten: number;
  /** Time-to-durable of each monitor write, ms. */
  monitorLatenciesMs: number[];
}

export class PersistenceMeter {
  private readonly figures: PersistenceFigures = { monitorUpdatesPersisted: 0, monitorDeltaWrites: 0, fullMonitorWrites: 0, managerWrites: 0, bytesWritten: 0, monitorLatenciesMs: [] };
  private readonly watched = new WeakSet<Wallet>();

  /** Starts counting for every current and future wallet of `fleet`. */
  constructor(fleet: WalletFleet, names: readonly string[] = []) {
    for (const name of names) this.watch(fleet.wallet(name));
    fleet.onWallet((w) => this.watch(w));
  }

  watch(wallet: Wallet): void {
    if (this.watched.has(wallet)) return;
    this.watched.add(wallet);
    const f = this.figures;
    wallet.store.onWrite((w) => {
      f.bytesWritten += w.bytes;
      if (w.kind === 'manager') f.managerWrites++;
      else if (w.kind === 'monitor-update') f.monitorDeltaWrites++;
      else if (w.kind === 'monitor') f.fullMonitorWrites++;
    });
    wallet.node.persistence.vssPersister?.on('durable', (e) => {
      if (e.kind === 'archive') return;
      f.monitorUpdatesPersisted += e.completedUpdateIds.length;
      f.monitorLatenciesMs.push(e.latencyMs);
    });
  }

  snapshot(): PersistenceFigures {
    return { ...this.figures, monitorLatenciesMs: [...this.figures.monitorLatenciesMs] };
  }
}
