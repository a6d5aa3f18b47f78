/**
 * The migration runner trusts `vss_db_version` to say how many migrations ran. A row that is not
 * such a count (hand-edited, or damaged) must stop the start-up with a clear error instead of
 * choosing migrations from it.
 */
import { PGlite } from '@electric-sql/pglite';
import { afterEach, describe, expect, it } from 'vitest';
import { MIGRATIONS, migrate } from '../../src/server/backends/migrations.js';
import { PgliteDriver } from '../../src/server/backends/pglite.js';

describe('migration bookkeeping that is not a migration count', () => {
  let driver: PgliteDriver | undefined;
  afterEach(async () => {
    await driver?.close();
    driver = undefined;
  });

  const migratedThenSet = async (value: string) => {
    driver = new PgliteDriver(await PGlite.create());
    await migrate(driver);
    await driver.query({ text: `UPDATE vss_db_version SET db_version = ${value}` });
    return driver;
  };

  it('refuses a negative db_version instead of running the last migrations and recording all of them', async () => {
    const d = await migratedThenSet('-1');
    await expect(migrate(d)).rejects.toThrow(/vss_db_version holds -1/);
    // Nothing was recorded: the bookkeeping still shows the one real run and the bad value.
    expect((await d.query({ text: 'SELECT upgrade_from FROM vss_db_upgrades' })).rows).toEqual([{ upgrade_from: 0 }]);
    expect((await d.query({ text: 'SELECT db_version FROM vss_db_version' })).rows).toEqual([{ db_version: -1 }]);
  });

  it('refuses a NULL db_version instead of treating it as a fresh database', async () => {
    const d = await migratedThenSet('NULL');
    await expect(migrate(d)).rejects.toThrow(/vss_db_version holds null/);
  });

  it('still accepts every real count', async () => {
    const d = await migratedThenSet(String(MIGRATIONS.length));
    expect(await migrate(d)).toEqual({ from: MIGRATIONS.length, to: MIGRATIONS.length });
  });
});
