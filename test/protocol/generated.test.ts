import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const scratch = mkdtempSync(join(tmpdir(), 'ldk-vss-proto-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('generated protobuf code', () => {
  it('is exactly what `npm run proto:generate` produces from proto/vss.proto', () => {
    execFileSync(process.execPath, [join(root, 'scripts/generate-proto.mjs'), scratch], { cwd: root, stdio: 'pipe' });
    for (const file of ['vss.js', 'vss.d.ts']) {
      const fresh = readFileSync(join(scratch, file), 'utf8');
      const committed = readFileSync(join(root, 'src/protocol/generated', file), 'utf8');
      expect(fresh === committed, `${file} differs from a fresh generation; run npm run proto:generate`).toBe(true);
    }
  });
});
