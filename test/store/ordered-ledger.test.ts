/**
 * OrderedLedger: the records of one key reach the ledger in call order, even when the ledger
 * runs overlapping calls and finishes them in any order; other keys are not held up.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileVersionLedger, type VersionChange, type VersionLedger } from '../../src/store/index.js';
import { OrderedLedger } from '../../src/store/ordered-ledger.js';

/** A ledger whose calls finish when the test says, in any order; `applied` is what landed, in landing order. */
class ManualLedger implements VersionLedger {
  readonly applied: VersionChange[][] = [];
  readonly started: VersionChange[][] = [];
  readonly #finish: Array<{ changes: readonly VersionChange[]; resolve: () => void; reject: (e: unknown) => void }> = [];
  synced: VersionChange[][] = [];

  async load(): Promise<ReadonlyMap<string, bigint>> {
    return new Map();
  }
  record(changes: readonly VersionChange[]): Promise<void> {
    this.started.push([...changes]);
    return new Promise((resolve, reject) => this.#finish.push({ changes, resolve, reject }));
  }
  recordSync(changes: readonly VersionChange[]): void {
    this.synced.push([...changes]);
  }
  /** Finishes the i-th unfinished call (in start order). */
  finish(i: number, error?: Error): void {
    const [call] = this.#finish.splice(i, 1);
    if (error) return call.reject(error);
    this.applied.push([...call.changes]);
    call.resolve();
  }
}

const turn = () => new Promise((r) => setTimeout(r, 0));

describe('OrderedLedger', () => {
  it('holds a record of a key until the unfinished record of that key finished; other keys go at once', async () => {
    const ledger = new ManualLedger();
    const ordered = new OrderedLedger(ledger);
    const first = ordered.record([{ id: 'a', version: 2n }]);
    const second = ordered.record([{ id: 'a', version: null }]);
    const other = ordered.record([{ id: 'b', version: 1n }]);
    await turn();
    expect(ledger.started).toEqual([[{ id: 'a', version: 2n }], [{ id: 'b', version: 1n }]]);
    ledger.finish(1); // b
    await other;
    ledger.finish(0); // a = 2
    await first;
    await turn();
    expect(ledger.started).toHaveLength(3); // only now the remove of a
    ledger.finish(0);
    await second;
    expect(ledger.applied).toEqual([[{ id: 'b', version: 1n }], [{ id: 'a', version: 2n }], [{ id: 'a', version: null }]]);
  });

  it('a failed earlier record does not block or fail the next one; a refusal by mayStart leaves the ledger alone', async () => {
    const ledger = new ManualLedger();
    const ordered = new OrderedLedger(ledger);
    const first = ordered.record([{ id: 'a', version: 1n }]);
    const second = ordered.record([{ id: 'a', version: 2n }]);
    ledger.finish(0, new Error('disk full'));
    await expect(first).rejects.toThrow('disk full');
    await turn();
    ledger.finish(0);
    await second;
    const third = ordered.record([{ id: 'b', version: 1n }]);
    const refused = ordered.record([{ id: 'b', version: 2n }], () => {
      throw new Error('aborted');
    });
    ledger.finish(0);
    await third;
    await expect(refused).rejects.toThrow('aborted');
    expect(ledger.applied).toEqual([[{ id: 'a', version: 2n }], [{ id: 'b', version: 1n }]]);
  });

  it('a blocking record forgetting a key refuses while an async record of that key is unfinished; versions, and other keys, go through', async () => {
    const ledger = new ManualLedger();
    const ordered = new OrderedLedger(ledger);
    const pending = ordered.record([{ id: 'a', version: 2n }]);
    expect(() => ordered.recordSync([{ id: 'a', version: null }])).toThrow(/still in progress/);
    ordered.recordSync([{ id: 'a', version: 3n }]);
    ordered.recordSync([{ id: 'b', version: null }]);
    expect(ledger.synced).toEqual([[{ id: 'a', version: 3n }], [{ id: 'b', version: null }]]);
    ledger.finish(0);
    await pending;
    await turn();
    ordered.recordSync([{ id: 'a', version: null }]);
    expect(ledger.synced).toHaveLength(3);
  });

  it('calls a ledger that records in call order by itself (the file ledger) straight through, and never refuses a blocking record', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ordered-ledger-'));
    try {
      const file = fileVersionLedger(join(dir, 'v'), { fsync: false });
      expect(file.recordsInCallOrder).toBe(true);
      await file.load();
      const ordered = new OrderedLedger(file);
      const pending = ordered.record([{ id: 'AAAAAAAAAAAAAAAAAAAAAA', version: 2n }]);
      ordered.recordSync([{ id: 'AAAAAAAAAAAAAAAAAAAAAA', version: null }]);
      await pending;
      expect((await file.load()).has('AAAAAAAAAAAAAAAAAAAAAA')).toBe(false);
      await file.close?.();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
