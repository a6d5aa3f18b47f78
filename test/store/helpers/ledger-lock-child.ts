/**
 * Child process for version-ledger-lock.test.ts: opens a fileVersionLedger in another process.
 * `hold`: loads it (taking its lock), records one version, prints `held <pid>` and stays alive
 * until killed. `try`: loads it and prints `opened` or `refused <error name> <message>`, then exits.
 */
import { fileVersionLedger, versionId } from '../../../src/store/index.js';

const [mode, path] = [process.argv[2], process.argv[3]!];
const ledger = fileVersionLedger(path);
if (mode === 'hold') {
  await ledger.load();
  await ledger.record([{ id: versionId('lock', 'k'), version: 5n }]);
  process.stdout.write(`held ${process.pid}\n`);
  setInterval(() => {}, 60_000);
} else {
  try {
    await ledger.load();
    await ledger.close?.();
    process.stdout.write('opened\n');
  } catch (error) {
    process.stdout.write(`refused ${(error as Error).name} ${(error as Error).message}\n`);
  }
}
