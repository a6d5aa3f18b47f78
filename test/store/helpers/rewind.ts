import { VssClient } from '../../../src/client/index.js';
import { keyValue } from '../../../src/protocol/index.js';

/**
 * Puts the store's only key at version 2 back to version 1 behind the store's back, the way a
 * server restored from an older backup would look (an unconditional put resets to version 1).
 */
export async function rewindVersion2Key(serverUrl: string, storeId: string): Promise<void> {
  const raw = new VssClient(serverUrl);
  const listing = await raw.listKeyVersions({ storeId });
  const dataKey = listing.keyVersions.find((kv) => kv.version?.toString() === '2')!.key!;
  const value = (await raw.getObject({ storeId, key: dataKey })).value!.value!;
  await raw.putObjects({ storeId, transactionItems: [keyValue(dataKey, -1n, value)] });
}
