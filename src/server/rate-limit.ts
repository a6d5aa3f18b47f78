/**
 * Token-bucket rate limiting keyed by client address (before authentication) and by user
 * token (after it). Buckets live in memory; a server fleet needs one limit per instance.
 */
import { isIP } from 'node:net';
import { detached } from './text.js';

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
  /** The key as stored in the map: a copy that shares no memory with the caller's string. */
  key: string;
  tokens: number;
  updatedAt: number;
}

/**
 * How many keys one rule tracks at most. Users are free to create (signature auth) and an IPv6
 * client has many addresses, so within one window the number of keys is the attacker's choice;
 * past this many, the least recently seen key is forgotten (about 200 bytes each).
 */
export const DEFAULT_MAX_TRACKED_KEYS = 100_000;

/**
 * Why a rule cannot be applied, or undefined when it can. A limit under 1 never grants a request
 * (every one answered 429 with a Retry-After that is never true), and an unbounded count or
 * window puts NaN or Infinity into the bucket arithmetic and the Retry-After header.
 */
export function rateLimitRuleProblem(rule: RateLimitRule): string | undefined {
  if (!Number.isSafeInteger(rule.limit) || rule.limit < 1) return `limit must be an integer from 1 to ${Number.MAX_SAFE_INTEGER} (got ${rule.limit})`;
  if (!Number.isFinite(rule.windowMs) || rule.windowMs <= 0 || rule.windowMs > Number.MAX_SAFE_INTEGER) {
    return `windowMs must be a positive number of milliseconds up to ${Number.MAX_SAFE_INTEGER} (got ${rule.windowMs})`;
  }
  return undefined;
}

/** One rule applied to many keys. */
export class TokenBuckets {
  /** In least recently used order: every take() moves its key to the end. */
  private readonly buckets = new Map<string, Bucket>();
  private lastSweep: number;
  private readonly refillPerMs: number;

  constructor(
    readonly rule: RateLimitRule,
    private readonly now: () => number = () => performance.now(),
    private readonly maxKeys: number = DEFAULT_MAX_TRACKED_KEYS,
  ) {
    const problem = rateLimitRuleProblem(rule);
    if (problem !== undefined) throw new RangeError(problem);
    if (!(maxKeys >= 1)) throw new RangeError('at least one key must be tracked');
    this.refillPerMs = rule.limit / rule.windowMs;
    this.lastSweep = now();
  }

  /** Takes one token for `key`; returns 0 when allowed, else the seconds until a token is available. */
  take(key: string): number {
    const now = this.now();
    this.sweep(now);
    let bucket = this.buckets.get(key);
    if (bucket !== undefined) this.buckets.delete(key);
    else {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      // A user token is cut from its request's Authorization header (a signature header may be
      // kilobytes of leading zeros), and V8 keeps the whole parent of a cut string alive: stored
      // as given, 100,000 such keys would hold over a gigabyte of headers.
      bucket = { key: detached(key), tokens: this.rule.limit, updatedAt: now };
    }
    bucket.tokens = Math.min(this.rule.limit, bucket.tokens + (now - bucket.updatedAt) * this.refillPerMs);
    bucket.updatedAt = now;
    // Re-inserted under the stored copy: the caller's string of this request is not kept either.
    this.buckets.set(bucket.key, bucket);
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

/** The eight 16-bit groups of an IPv6 address, or undefined if malformed. */
function ipv6Groups(address: string): number[] | undefined {
  let text = address;
  // An embedded IPv4 tail (::ffff:192.0.2.1) is the last two groups.
  const ipv4Tail = /:(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (ipv4Tail) {
    const [a, b, c, d] = ipv4Tail.slice(1).map(Number);
    text = `${text.slice(0, ipv4Tail.index)}:${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] === '' ? [] : halves[0].split(':');
  const tail = halves.length === 2 && halves[1] !== '' ? halves[1].split(':') : [];
  const groups = halves.length === 2 ? [...head, ...Array<string>(Math.max(0, 8 - head.length - tail.length)).fill('0'), ...tail] : head;
  if (groups.length !== 8 || !groups.every((group) => /^[0-9a-f]{1,4}$/i.test(group))) return undefined;
  return groups.map((group) => parseInt(group, 16));
}

/**
 * Longest per-IP key kept for an address that is not an IP address. An X-Forwarded-For entry is
 * whatever the client wrote when every hop is trusted (`trustProxy: true`): kept whole, 100,000
 * distinct header-sized entries would hold over a gigabyte instead of the ~200 bytes a key costs.
 */
export const MAX_NON_IP_KEY_LENGTH = 64;

/**
 * The per-IP rate-limit key of a client address (the socket's, or an X-Forwarded-For entry).
 * A port some proxies append (`203.0.113.9:41234`, `[2001:db8::1]:443`) is dropped, as it changes
 * with every connection; an IPv4-mapped IPv6 address counts as the IPv4 address; and an IPv6
 * address counts as its /64 network, which one host or subscriber usually gets whole, so
 * rotating through its addresses does not escape the limit.
 */
export function ipRateLimitKey(address: string): string {
  let text = address.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(text);
  if (bracketed) text = bracketed[1];
  else {
    const ipv4WithPort = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(text);
    if (ipv4WithPort) text = ipv4WithPort[1];
  }
  text = text.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
  if (mapped) return mapped[1];
  if (isIP(text) === 6) {
    const groups = ipv6Groups(text);
    if (groups !== undefined) {
      // IPv4-mapped in another spelling (::ffff:c000:201, 0:0:0:0:0:ffff:192.0.2.1): the IPv4
      // client it is, not the ::/64 network that every such client would otherwise share.
      if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
        return [groups[6] >> 8, groups[6] & 0xff, groups[7] >> 8, groups[7] & 0xff].join('.');
      }
      return `${groups
        .slice(0, 4)
        .map((group) => group.toString(16))
        .join(':')}::/64`;
    }
  }
  return detached(isIP(text) === 0 ? text.slice(0, MAX_NON_IP_KEY_LENGTH) : text);
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
  const rule = { limit, windowMs };
  const problem = rateLimitRuleProblem(rule);
  if (problem !== undefined) throw new RangeError(`"${text}": ${problem}`);
  return rule;
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
    // Twice the same target is a conflict (which one did the operator mean?), not last-wins.
    if ((target === 'user' && options.perUser) || (target === 'ip' && options.perIp)) throw new RangeError(`${target}= is given twice`);
    if (target === 'user') options.perUser = parseRateLimitRule(value);
    else if (target === 'ip') options.perIp = parseRateLimitRule(value);
    else throw new RangeError(`unknown rate limit target "${name.trim()}" (use user= or ip=)`);
  }
  return options;
}
