import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fileVersionLedger, StoreOpenError, versionId } from '../../src/store/index.js';

const dirs: string[] = [];
function tempFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ldk-vss-ledger-'));
  dirs.push(dir);
  return join(dir, 'versions.log');
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const a = versionId('store', 'key-a');
const b = versionId('store', 'key-b');

describe('versionId', () => {
  it('is a 22-character opaque id bound to store and key', () => {
    expect(a).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(versionId('store', 'key-a')).toBe(a);
    expect(versionId('other', 'key-a')).not.toBe(a);
    expect(a).not.toBe(b);
  });
});

describe('fileVersionLedger', () => {
  it('starts empty and remembers recorded versions and deletions across instances', async () => {
    const path = tempFile();
    const first = fileVersionLedger(path);
    expect((await first.load()).size).toBe(0);
    await first.record([{ id: a, version: 1n }, { id: b, version: 4n }]);
    first.recordSync!([{ id: a, version: 2n }]);
    await first.record([{ id: b, version: null }]);
    await first.close?.();
    const second = fileVersionLedger(path);
    expect(await second.load()).toEqual(new Map([[a, 2n]]));
  });

  it('ignores a torn last line from a crash in the middle of an append', async () => {
    const path = tempFile();
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    await ledger.record([{ id: a, version: 7n }]);
    await ledger.close?.();
    appendFileSync(path, `${b} 12`); // no newline: the append never completed
    expect(await fileVersionLedger(path).load()).toEqual(new Map([[a, 7n]]));
  });

  it('fails closed on corrupt content or a foreign file', async () => {
    const corrupt = tempFile();
    writeFileSync(corrupt, `ldk-vss-versions 1\n${a} 1\nnot a line\n${b} 2\n`);
    await expect(fileVersionLedger(corrupt).load()).rejects.toBeInstanceOf(StoreOpenError);
    const foreign = tempFile();
    writeFileSync(foreign, 'hello\n');
    await expect(fileVersionLedger(foreign).load()).rejects.toBeInstanceOf(StoreOpenError);
  });

  it('compacts the log once it is mostly superseded lines, keeping the live versions', async () => {
    const path = tempFile();
    const ledger = fileVersionLedger(path, { fsync: false });
    await ledger.load();
    for (let v = 1n; v <= 1500n; v++) await ledger.record([{ id: a, version: v }]);
    await ledger.record([{ id: b, version: 3n }]);
    await ledger.close?.();
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    expect(lines.length).toBeLessThan(600);
    expect(await fileVersionLedger(path).load()).toEqual(new Map([[a, 1500n], [b, 3n]]));
  });
});

describe('fileVersionLedger after a crash mid-append', () => {
  it('the run after a torn append records normally, and the run after that still opens with every version', async () => {
    const path = tempFile();
    const first = fileVersionLedger(path, { fsync: false });
    await first.load();
    await first.record([{ id: a, version: 7n }]);
    await first.close?.();
    appendFileSync(path, `${b} 12`); // the crash: this append never completed (no newline)

    // Next run: the torn line is ignored, and the device keeps recording.
    const second = fileVersionLedger(path, { fsync: false });
    expect(await second.load()).toEqual(new Map([[a, 7n]]));
    await second.record([{ id: b, version: 13n }]);
    await second.record([{ id: a, version: 8n }]);
    await second.close?.();

    // The run after: the new records did not fuse with the torn fragment into a "corrupt" line
    // (which would refuse to open the store until the ledger was deleted).
    const third = fileVersionLedger(path, { fsync: false });
    expect(await third.load()).toEqual(new Map([[a, 8n], [b, 13n]]));
    expect(readFileSync(path, 'utf8').endsWith('\n')).toBe(true);
  });

  it('a header torn while the file was created is not taken for a foreign file on the run after next', async () => {
    const path = tempFile();
    writeFileSync(path, 'ldk-vss-ver'); // crash while the new file's header was written
    const second = fileVersionLedger(path, { fsync: false });
    expect((await second.load()).size).toBe(0);
    await second.record([{ id: a, version: 1n }]);
    await second.close?.();
    expect(await fileVersionLedger(path, { fsync: false }).load()).toEqual(new Map([[a, 1n]]));
  });

  it('a foreign file without a final newline is refused and left untouched', async () => {
    const path = tempFile();
    writeFileSync(path, 'my notes');
    await expect(fileVersionLedger(path).load()).rejects.toThrow(/not an ldk-vss version ledger/);
    expect(readFileSync(path, 'utf8')).toBe('my notes');
  });
});
