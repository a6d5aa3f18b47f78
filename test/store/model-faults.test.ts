/**
 * A seeded model test of VssStore's conditional-write engine under transport faults: random
 * write / writeBatch / remove / read / list over a few keys, several in flight, while requests
 * lose their replies after the server applied them, fail before being sent, get 5xx (before or
 * after applying), are overtaken, or land late after the client saw them fail. The model and
 * its checks are in helpers/model-run.ts, the transport in helpers/model-transport.ts.
 *
 * The seed lists are fixed so CI is reproducible (the in-process transport replays a seed
 * exactly). Locally:
 *   MODEL_SEEDS=500 npx vitest run test/store/model-faults.test.ts   # seeds 1..500 in each scenario
 *   MODEL_SEED=1234 npx vitest run test/store/model-faults.test.ts   # one seed, full trace on failure
 *   MODEL_LATE=anytime …            # late requests may land at any time (with removes, some can undo acknowledged state: see BOUNDED_LATE)
 *   MODEL_TWO_WRITER_REMOVES=1 …    # removes in the two-writer scenario (breaks on version reuse: see `removes`)
 */
import { describe, expect, it } from 'vitest';
import { BOUNDED_LATE, runScenario, type ScenarioOptions, type ScenarioResult } from './helpers/model-run.js';

function seedList(ciSeeds: readonly number[]): number[] {
  const one = process.env.MODEL_SEED;
  if (one !== undefined && one !== '') return [Number(one)];
  const many = Number(process.env.MODEL_SEEDS ?? '');
  if (Number.isInteger(many) && many > 0) return Array.from({ length: many }, (_, i) => i + 1);
  return [...ciSeeds];
}

const LATE = process.env.MODEL_LATE === 'anytime' ? undefined : BOUNDED_LATE;
const TWO_WRITER_REMOVES = process.env.MODEL_TWO_WRITER_REMOVES === '1';
/** Per seed; an in-process seed takes well under a second, a hang is caught by the driver itself. */
const SEED_TIMEOUT_MS = 30_000;

function report(options: ScenarioOptions, result: ScenarioResult): string {
  const full = process.env.MODEL_SEED !== undefined;
  const trace = full ? result.trace : result.trace.slice(-150);
  return [
    `seed ${options.seed} (${JSON.stringify({ ...options, seed: undefined, late: options.late ?? 'anytime' })}): ${result.violations.length} violation(s)`,
    ...result.violations.map((v) => `  - ${v}`),
    `replay: ${[
      `MODEL_SEED=${options.seed}`,
      ...(process.env.MODEL_LATE ? [`MODEL_LATE=${process.env.MODEL_LATE}`] : []),
      ...(process.env.MODEL_TWO_WRITER_REMOVES ? [`MODEL_TWO_WRITER_REMOVES=${process.env.MODEL_TWO_WRITER_REMOVES}`] : []),
    ].join(' ')} npx vitest run test/store/model-faults.test.ts`,
    full ? 'trace:' : 'trace (last 150 lines; MODEL_SEED shows all):',
    ...trace,
  ].join('\n');
}

async function runChecked(options: ScenarioOptions): Promise<ScenarioResult> {
  const result = await runScenario(options);
  if (result.violations.length > 0) expect.fail(report(options, result));
  return result;
}

describe('VssStore model under transport faults', () => {
  describe('one writer, in-process transport', () => {
    const totals = { failed: 0, lateLandings: 0, faults: 0 };
    it.each(seedList(Array.from({ length: 40 }, (_, i) => 101 + i)))(
      'seed %i: acknowledged writes and removes hold, reads never go back, no false conflict',
      async (seed) => {
        const result = await runChecked({ seed, writers: 1, transport: 'direct', operations: 80, removes: true, late: LATE });
        totals.failed += result.stats.failed;
        totals.lateLandings += result.stats.lateLandings;
        totals.faults += Object.values(result.stats.faults).reduce((a, b) => a + b, 0);
        expect(result.stats.conflicts).toBe(0);
      },
      SEED_TIMEOUT_MS,
    );
    it('the seeds above met faults, failed operations and late landings (the model is not vacuous)', () => {
      expect(totals.faults).toBeGreaterThan(0);
      expect(totals.failed).toBeGreaterThan(0);
      expect(totals.lateLandings).toBeGreaterThan(0);
    });
  });

  describe('one writer, writes only, late requests landing at any time', () => {
    // Without removes a key's version only grows, so a late request can never apply after a
    // newer write did, however late it lands: the store must cope with unbounded lateness.
    it.each(seedList(Array.from({ length: 30 }, (_, i) => 301 + i)))(
      'seed %i',
      async (seed) => {
        const result = await runChecked({ seed, writers: 1, transport: 'direct', operations: 80, removes: false, late: undefined });
        expect(result.stats.conflicts).toBe(0);
      },
      SEED_TIMEOUT_MS,
    );
  });

  describe('one writer, real server on loopback', () => {
    it.each(seedList([901, 902, 903]))(
      'seed %i',
      async (seed) => {
        const result = await runChecked({ seed, writers: 1, transport: 'http', operations: 60, removes: true, late: LATE });
        expect(result.stats.conflicts).toBe(0);
      },
      SEED_TIMEOUT_MS,
    );
  });

  describe('two writers on the same keys', () => {
    let conflicts = 0;
    it.each(seedList(Array.from({ length: 30 }, (_, i) => 501 + i)))(
      'seed %i: no write is silently overwritten by the other writer',
      async (seed) => {
        const result = await runChecked({ seed, writers: 2, transport: 'direct', operations: 80, removes: TWO_WRITER_REMOVES, late: LATE });
        conflicts += result.stats.conflicts;
      },
      SEED_TIMEOUT_MS,
    );
    it('the two writers collided: ConcurrentWriterError was raised', () => {
      expect(conflicts).toBeGreaterThan(0);
    });
  });
});
