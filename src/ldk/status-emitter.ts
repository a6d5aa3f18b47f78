/**
 * Status events of the persistence components (durable, retry, stalled, fatal …) go to
 * observers: dashboards, metrics, logs. A listener that throws must not become a persistence
 * failure: with a plain EventEmitter the exception surfaces inside the write loop that emitted
 * (where it looks like a failed write and is retried forever, or stops persistence) or inside a
 * timer (where it crashes the process). `notify` calls every listener, logs the ones that throw
 * and carries on.
 */
import { EventEmitter } from 'node:events';
import { describeError, type PersistenceLogger } from './log.js';

type Events<T> = { [K in keyof T]: unknown[] };

export abstract class StatusEmitter<T extends Events<T>> extends EventEmitter<T> {
  protected abstract readonly log: PersistenceLogger;

  /** Emits `event` to every listener; a throwing listener is logged, not propagated. */
  protected notify<K extends keyof T & string>(event: K, ...args: T[K]): void {
    const listeners = (this as EventEmitter).rawListeners(event) as Array<(...values: unknown[]) => unknown>;
    const failed = (error: unknown) => this.log.error({ event, cause: describeError(error) }, `a '${event}' listener threw; ignored, persistence carries on`);
    for (const listener of listeners) {
      try {
        const returned = listener.apply(this, args);
        // An async listener's rejection would otherwise be an unhandled rejection (fatal in Node).
        if (returned instanceof Promise) returned.catch(failed);
      } catch (error) {
        failed(error);
      }
    }
  }
}
