/**
 * A key and a store id within their limits (600 and 120 characters) whose characters are 4 bytes
 * each in UTF-8 do not fit, with the user token, in one entry of the primary-key index (2704
 * bytes).
 * PostgreSQL refuses the write (SQLSTATE 54000); the server answers that as the client's
 * mistake, 400, instead of a 500 its client would retry until the budget ran out, and every
 * other write batched with it still gets its own outcome.
 */
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { backendCase, expectFailure, INVALID, NO_SUCH_KEY, newIdentity, str, TestClient, text, type OpenedBackend } from './helpers.js';

/** `length` random characters from outside the BMP: 4 bytes each in UTF-8, not compressible. */
function widest(length: number): string {
  return Array.from({ length }, () => String.fromCodePoint(0x20000 + randomInt(0x10000))).join('');
}
/** The widest key (600 characters): with the widest store id, over 2.9 KB for one index entry. */
const widestKey = () => widest(600);

for (const name of ['pglite', 'postgres'] as const) {
  const backendUnderTest = backendCase(name);
  const title = backendUnderTest.skipReason ? `index entry limit on ${name} — SKIPPED: ${backendUnderTest.skipReason}` : `index entry limit on ${name}`;

  describe.skipIf(backendUnderTest.skipReason !== undefined)(title, () => {
    let opened: OpenedBackend;
    let server: StartedVssServer;
    let client: TestClient;
    beforeAll(async () => {
      opened = await backendUnderTest.open();
      server = await startVssServer({ backend: opened.backend, port: 0 });
      const identity = newIdentity();
      client = new TestClient(server.url, widest(120), () => identity.header());
    });
    afterAll(async () => {
      await server?.close();
      await opened?.dispose();
    });

    it('answers a key too wide for the index with 400 naming the limit, and nothing is written', async () => {
      const key = widestKey();
      const error = await expectFailure(client.put(undefined, [{ key, version: 0n, value: text('v') }]), INVALID);
      expect(error.message).toMatch(/too large.*index entry/);
      await expectFailure(client.get(key), NO_SUCH_KEY);
      // A multi-item put with such a key is refused whole.
      await expectFailure(client.put(undefined, [{ key: 'fine', version: 0n, value: text('a') }, { key: widestKey(), version: 0n, value: text('b') }]), INVALID);
      await expectFailure(client.get('fine'), NO_SUCH_KEY);
    });

    it('gives the other writes batched with it their own outcome', async () => {
      const wide = Array.from({ length: 8 }, () => client.put(undefined, [{ key: widestKey(), version: -1n, value: text('w') }]).then(() => 'ok', (e: Error) => e));
      const normal = Array.from({ length: 8 }, (_, i) => client.put(undefined, [{ key: `k${i}`, version: -1n, value: text(`v${i}`) }]).then(() => 'ok'));
      const [wideOutcomes, normalOutcomes] = await Promise.all([Promise.all(wide), Promise.all(normal)]);
      expect(normalOutcomes).toEqual(Array(8).fill('ok'));
      for (const outcome of wideOutcomes) expect(outcome).toMatchObject({ status: 400 });
      for (let i = 0; i < 8; i++) expect(str((await client.get(`k${i}`)).value)).toBe(`v${i}`);
    });
  });
}
