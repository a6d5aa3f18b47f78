/**
 * The bindings hand "None" for some optional arguments as a wrapper object around a null
 * pointer instead of `null` (e.g. the ChannelMonitorUpdate of a chain-sync persist). The
 * pointer is a protected field of CommonBase, so it is read reflectively here, in one place.
 */
export function isNullPointer(obj: object): boolean {
  const ptr: unknown = Reflect.get(obj, 'ptr');
  return ptr === 0n || ptr === 0;
}
