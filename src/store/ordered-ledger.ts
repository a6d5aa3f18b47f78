/**
 * Keeps the version records of one key in call order, whatever the ledger does with
 * overlapping calls. A ledger over an app's database may run two `record` calls at once and
 * finish them in any order; most of the store's records are ordered by the key's write queue,
 * but a version a read learned is recorded outside it. Recorded slowly, it could then land
 * after a later remove of the key had forgotten the key, and the ledger would claim a key the
 * server rightly lacks: a false rollback at the next open, a node that refuses to start.
 *
 * So a record waits for the unfinished records of its keys (other keys are not held up). The
 * blocking API cannot wait: a blocking remove whose key still has a record in progress fails
 * before it is sent (the ledger's error, retrying is safe). A blocking write goes ahead: the
 * older record landing last can only make the ledger under-state the key, never over-state it.
 * A ledger that applies records in call order by itself (`recordsInCallOrder`, the file ledger)
 * is called straight through.
 */
import type { VersionChange, VersionLedger } from './version-ledger.js';

export class OrderedLedger {
  readonly #ledger: VersionLedger;
  /** Per ledger id, the last record of it that has not finished (settled, never rejects). */
  readonly #pending = new Map<string, Promise<void>>();

  constructor(ledger: VersionLedger) {
    this.#ledger = ledger;
  }

  /**
   * Records `changes` once every unfinished record of the same ids has finished. With none,
   * the ledger is called at once (no extra turn of the event loop). `mayStart` is asked just
   * before a deferred call (it throws to refuse, e.g. once the store is aborted).
   */
  record(changes: readonly VersionChange[], mayStart: () => void = () => {}): Promise<void> {
    if (this.#ledger.recordsInCallOrder) return this.#ledger.record(changes);
    const earlier = new Set<Promise<void>>();
    for (const { id } of changes) {
      const pending = this.#pending.get(id);
      if (pending) earlier.add(pending);
    }
    const call = (): Promise<void> => {
      try {
        return Promise.resolve(this.#ledger.record(changes));
      } catch (error) {
        return Promise.reject(error);
      }
    };
    const done =
      earlier.size === 0
        ? call()
        : Promise.all(earlier).then(() => {
            mayStart();
            return call();
          });
    const finished = done.then(
      () => {},
      () => {},
    );
    for (const { id } of changes) this.#pending.set(id, finished);
    void finished.then(() => {
      for (const { id } of changes) if (this.#pending.get(id) === finished) this.#pending.delete(id);
    });
    return done;
  }

  /** The blocking record; see the module comment for what it does when a record is unfinished. */
  recordSync(changes: readonly VersionChange[]): void {
    if (changes.some(({ id, version }) => version === null && this.#pending.has(id))) {
      throw new Error('an earlier version record of this key is still in progress (a slow ledger); nothing was sent, retry');
    }
    this.#ledger.recordSync?.(changes);
  }
}
