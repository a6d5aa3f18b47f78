/** Fixed parts of the server's HTTP surface. */

/** Every VSS operation lives under this path prefix, e.g. `/vss/getObject`. */
export const VSS_BASE_PATH = '/vss';
/** Liveness/readiness probe: 200 when the storage backend answers, 503 otherwise. */
export const HEALTH_PATH = '/health';
/** Prometheus exposition endpoint (only when metrics are enabled). */
export const METRICS_PATH = '/metrics';
/** Port `ldk-vss serve` listens on when VSS_BIND_ADDRESS is not set. */
export const DEFAULT_PORT = 8080;
export const DEFAULT_HOST = '127.0.0.1';
