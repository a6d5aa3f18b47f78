/**
 * Token-bucket rate limiting keyed by client address (before authentication) and by user
 * token (after it). Buckets live in memory; a server fleet needs one limit per instance.
 */

export interface RateLimitRule {
  /** Requests allowed per window (also the burst size). */
  limit: number;
  windowMs: number;
}

export interface RateLimitOptions {
  perUser?: RateLimitRule;
  perIp?: RateLimitRule;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** One rule applied to many keys. */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private lastSweep: number;
  private readonly refillPerMs: number;

  constructor(
    readonly rule: RateLimitRule,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(rule.limit > 0) || !(rule.windowMs > 0)) throw new RangeError('rate limit and window must be positive');
    this.refillPerMs = rule.limit / rule.windowMs;
    this.lastSweep = now();
  }

  /** Takes one token for `key`; returns 0 when allowed, else the seconds until a token is available. */
  take(key: string): number {
    const now = this.now();
    this.sweep(now);
    const bucket = this.buckets.get(key) ?? { tokens: this.rule.limit, updatedAt: now };
    bucket.tokens = Math.min(this.rule.limit, bucket.tokens + (now - bucket.updatedAt) * this.refillPerMs);
    bucket.updatedAt = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.refillPerMs / 1000));
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Forgets buckets that have refilled completely, so idle clients cost no memory. */
  private sweep(now: number): void {
    if (now - this.lastSweep < this.rule.windowMs) return;
    this.lastSweep = now;
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + (now - bucket.updatedAt) * this.refillPerMs >= this.rule.limit) this.buckets.delete(key);
    }
  }
}

const UNITS: Record<string, number> = { s: 1000, sec: 1000, second: 1000, m: 60_000, min: 60_000, minute: 60_000, h: 3_600_000, hour: 3_600_000 };

/** Parses `100/s`, `600/min` or `5000/hour`. */
export function parseRateLimitRule(text: string): RateLimitRule {
  const match = /^\s*(\d+)\s*\/\s*([a-z]+)\s*$/i.exec(text);
  const windowMs = match ? UNITS[match[2].toLowerCase()] : undefined;
  const limit = match ? Number(match[1]) : 0;
  if (!match || windowMs === undefined || limit <= 0) {
    throw new RangeError(`"${text}" is not a rate such as 100/s, 600/min or 5000/hour`);
  }
  return { limit, windowMs };
}

/**
 * Parses VSS_RATE_LIMIT: either one rate applied per user and per IP (`100/s`), or
 * `user=100/s,ip=1000/s` with either part optional.
 */
export function parseRateLimit(text: string): RateLimitOptions {
  if (!text.includes('=')) {
    const rule = parseRateLimitRule(text);
    return { perUser: rule, perIp: rule };
  }
  const options: RateLimitOptions = {};
  for (const part of text.split(',')) {
    const [name, value, ...rest] = part.split('=');
    if (value === undefined || rest.length > 0) throw new RangeError(`"${part}" is not of the form user=RATE or ip=RATE`);
    const target = name.trim().toLowerCase();
    if (target === 'user') options.perUser = parseRateLimitRule(value);
    else if (target === 'ip') options.perIp = parseRateLimitRule(value);
    else throw new RangeError(`unknown rate limit target "${name.trim()}" (use user= or ip=)`);
  }
  return options;
}
