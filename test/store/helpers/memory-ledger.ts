/**
 * A VersionLedger kept in memory, as an app would supply one over its own database. Tests read
 * `versions` to see what the store recorded and `records` to count its calls.
 */
import type { VersionChange, VersionLedger } from '../../../src/store/index.js';

export class MemoryLedger implements VersionLedger {
  readonly versions = new Map<string, bigint>();
  records = 0;

  async load(): Promise<ReadonlyMap<string, bigint>> {
    return new Map(this.versions);
  }

  async record(changes: readonly VersionChange[]): Promise<void> {
    this.apply(changes);
  }

  protected apply(changes: readonly VersionChange[]): void {
    this.records += 1;
    for (const { id, version } of changes) {
      if (version === null) this.versions.delete(id);
      else this.versions.set(id, version);
    }
  }
}

/** MemoryLedger with the blocking record the sync API needs. */
export class SyncMemoryLedger extends MemoryLedger {
  recordSync(changes: readonly VersionChange[]): void {
    this.apply(changes);
  }
}

/**
 * A ledger (say, over an app's database) whose first `slow` records take 50 ms each; calls may
 * overlap and finish out of order.
 */
export class SlowFirstLedger extends SyncMemoryLedger {
  slow = 0;

  override async record(changes: readonly VersionChange[]): Promise<void> {
    if (this.slow > 0) {
      this.slow -= 1;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return super.record(changes);
  }
}
