/**
 * Child process for version-ledger-crash.test.ts: records ever newer versions of a few keys
 * through a fileVersionLedger (fsync on) until it is killed, printing `acked <n>` once the
 * batch of version n is recorded, i.e. once a store would acknowledge it. Batches alternate
 * between small and large (large appends are the ones a kill can tear), and every fourth round
 * removes a key first and re-creates it, as a store's remove and later write do. The log passes
 * the compaction threshold every few hundred rounds, so kills also land mid-compaction.
 */
import { fileVersionLedger, versionId } from '../../../src/store/index.js';

const [path, keyCount] = [process.argv[2]!, Number(process.argv[3] ?? '40')];
const ids = Array.from({ length: keyCount }, (_, i) => versionId('crash', `k${i}`));
const ledger = fileVersionLedger(path);
const loaded = await ledger.load();
let n = 0n;
for (const v of loaded.values()) if (v > n) n = v;
process.stdout.write(`start ${n}\n`);
for (;;) {
  n += 1n;
  if (n % 4n === 0n) await ledger.record([{ id: ids[0]!, version: null }]);
  const batch = n % 2n === 0n ? ids : ids.slice(0, 3);
  await ledger.record(batch.map((id) => ({ id, version: n })));
  process.stdout.write(`acked ${n} ${batch.length}\n`);
}
