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
    this.records += 1;
    for (const { id, version } of changes) {
      if (version === null) this.versions.delete(id);
      else this.versions.set(id, version);
    }
  }
}
