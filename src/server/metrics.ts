/**
 * Prometheus metrics: request counts and latency per operation and status, in a registry
 * of the server's own (so several servers in one process do not share counters).
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

let processRegistry: Registry | undefined;

/**
 * The process metrics (CPU, memory, event loop, GC), collected once per process: they describe
 * the process, not a server, and prom-client's collector keeps a GC observer running for good,
 * so one collector per server would pile up in a process that starts many (tests, embedding).
 */
function processMetricsRegistry(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class ServerMetrics {
  /** What /metrics serves: this server's request metrics, plus the process metrics if asked for. */
  readonly registry: Registry;
  private readonly requests: Counter<'operation' | 'status'>;
  private readonly duration: Histogram<'operation' | 'status'>;

  constructor(options: { processMetrics?: boolean } = {}) {
    const own = new Registry();
    this.requests = new Counter({
      name: 'vss_http_requests_total',
      help: 'VSS HTTP requests by operation and response status',
      labelNames: ['operation', 'status'],
      registers: [own],
    });
    this.duration = new Histogram({
      name: 'vss_http_request_duration_seconds',
      help: 'VSS HTTP request latency by operation and response status',
      labelNames: ['operation', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [own],
    });
    this.registry = options.processMetrics ? Registry.merge([own, processMetricsRegistry()]) : own;
  }

  /**
   * `status` is the response's status code, or `aborted` for a response never completed.
   * Without `seconds` the request is only counted: one refused before it was parsed has no
   * start time, and a made-up duration would distort the latency histogram.
   */
  observe(operation: string, status: number | string, seconds?: number): void {
    const labels = { operation, status: String(status) };
    this.requests.inc(labels);
    if (seconds !== undefined) this.duration.observe(labels, seconds);
  }
}
