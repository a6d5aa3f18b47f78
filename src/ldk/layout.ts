/**
 * LDK's storage layout: the namespaces and keys that LDK's own persisters use (see
 * lightning::util::persist), so data written here is readable by LDK and vice versa.
 */
import type * as ldk from 'lightningdevkit';

export const CHANNEL_MANAGER_NAMESPACE = { primary: '', secondary: '', key: 'manager' } as const;
export const NETWORK_GRAPH_NAMESPACE = { primary: '', secondary: '', key: 'network_graph' } as const;
export const SCORER_NAMESPACE = { primary: '', secondary: '', key: 'scorer' } as const;
export const OUTPUT_SWEEPER_NAMESPACE = { primary: '', secondary: '', key: 'output_sweeper' } as const;
/** Full ChannelMonitors: `("monitors", "", <monitor name>)`. */
export const CHANNEL_MONITOR_NAMESPACE = { primary: 'monitors', secondary: '' } as const;
/** Incremental updates: `("monitor_updates", <monitor name>, <update id>)`. */
export const CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE = 'monitor_updates';
/** Monitors of fully resolved channels: `("archived_monitors", "", <monitor name>)`. */
export const ARCHIVED_CHANNEL_MONITOR_NAMESPACE = { primary: 'archived_monitors', secondary: '' } as const;

/**
 * Prefix LDK's MonitorUpdatingPersister puts before every full monitor it writes. It makes
 * the plain `read_channel_monitors` reader refuse such monitors (their updates would be
 * silently ignored).
 */
export const MONITOR_UPDATING_PERSISTER_SENTINEL = Uint8Array.of(0xff, 0xff);

/** LDK's update id for updates of channels closed before update ids were kept after close. */
export const LEGACY_CLOSED_CHANNEL_UPDATE_ID = 0xffff_ffff_ffff_ffffn;

/** Hex of bytes in reverse order: Bitcoin's display order for txids. */
function reversedHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).reverse().toString('hex');
}

/** LDK's monitor name for a V1 channel: `<funding txid in display hex>_<output index>`. */
export function monitorName(fundingOutpoint: ldk.OutPoint): string {
  return `${reversedHex(fundingOutpoint.get_txid())}_${fundingOutpoint.get_index()}`;
}

/** Parses a monitor name back to (txid in internal byte order, index); undefined if malformed. */
export function parseMonitorName(name: string): { txid: Uint8Array; index: number } | undefined {
  const match = /^([0-9a-f]{64})_(\d{1,5})$/.exec(name);
  if (!match) return undefined;
  const index = Number(match[2]);
  if (index > 0xffff) return undefined;
  return { txid: Uint8Array.from(Buffer.from(match[1], 'hex').reverse()), index };
}

/** The key of one monitor update: its id in decimal. */
export function updateKey(updateId: bigint): string {
  return updateId.toString(10);
}

/** Parses an update key; undefined for anything that is not a canonical decimal u64. */
export function parseUpdateKey(key: string): bigint | undefined {
  if (!/^(0|[1-9]\d{0,19})$/.test(key)) return undefined;
  const id = BigInt(key);
  return id <= 0xffff_ffff_ffff_ffffn ? id : undefined;
}

/** Full monitor bytes as LDK's MonitorUpdatingPersister stores them. */
export function withSentinel(monitorBytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(MONITOR_UPDATING_PERSISTER_SENTINEL.length + monitorBytes.length);
  out.set(MONITOR_UPDATING_PERSISTER_SENTINEL, 0);
  out.set(monitorBytes, MONITOR_UPDATING_PERSISTER_SENTINEL.length);
  return out;
}

/** Strips the sentinel if present (LDK reads both forms). */
export function withoutSentinel(stored: Uint8Array): Uint8Array {
  const s = MONITOR_UPDATING_PERSISTER_SENTINEL;
  return stored.length >= s.length && stored[0] === s[0] && stored[1] === s[1] ? stored.subarray(s.length) : stored;
}
