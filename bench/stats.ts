/** Statistics shared by the benchmarks. */

/** The median; with an even count (e.g. BENCH_ROUNDS=2) the mean of the middle two, not the upper one. */
export function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
