// What the metered step's p99 is made of: bench/metering.mjs's first figure (one LLM call, hold before
// and settle after, SQLite, synchronous=NORMAL), each call timed, with V8's GC events beside them. Prints
// the call's percentiles, then the slowest 1 %: how many overlapped a young-generation GC (a scavenge),
// a full GC, took over 20 ms without one (the WAL checkpoint the writer runs every 16,000 pages), or
// neither; and the scavenges' length and rate. Runs against dist/ (npm run build first).
//   node bench/metering-tail.mjs [--calls 20000] [--warmup 2000]
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { cliOption } from './allocations.mjs';
import { meteredStep } from './metered-step.mjs';

const args = process.argv.slice(2);
const opt = cliOption(args);
const count = (name, dflt) => {
  const v = Number(opt(name, dflt));
  if (!Number.isInteger(v) || v < 0 || (name === 'calls' && v < 100)) {
    console.error(`usage: node bench/metering-tail.mjs [--calls N ≥ 100] [--warmup N ≥ 0] (bad --${name})`);
    process.exit(2);
  }
  return v;
};
if (args.includes('--help')) {
  console.log('usage: node bench/metering-tail.mjs [--calls 20000] [--warmup 2000]');
  process.exit(0);
}
const CALLS = count('calls', 20_000);
const WARMUP = count('warmup', 2_000);

const step = await meteredStep({ tmpPrefix: 'fb-bench-tail-' });

for (let i = 0; i < WARMUP; i++) await step.metered();

// Times in typed arrays: the record itself must not allocate what it measures.
const start = new Float64Array(CALLS);
const took = new Float64Array(CALLS);
const gcs = [];
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ at: e.startTime, ms: e.duration, minor: (e.detail?.kind ?? e.kind) === constants.NODE_PERFORMANCE_GC_MINOR });
});
obs.observe({ entryTypes: ['gc'] });
for (let i = 0; i < CALLS; i++) {
  const t = performance.now();
  await step.metered();
  start[i] = t;
  took[i] = performance.now() - t;
}
await new Promise((r) => setTimeout(r, 20));
obs.disconnect();
await step.close();

const sorted = Float64Array.from(took).sort();
const at = (q) => sorted[Math.min(CALLS - 1, Math.floor(CALLS * q))];
const ms = (v) => `${v.toFixed(3)} ms`;
console.log(`metered LLM step (hold + settle), ${CALLS} calls after ${WARMUP} warm-up, SQLite WAL synchronous=NORMAL, Node ${process.version}`);
console.log(`  p50 ${ms(at(0.5))}  p90 ${ms(at(0.9))}  p98 ${ms(at(0.98))}  p99 ${ms(at(0.99))}  p99.9 ${ms(at(0.999))}`);

const threshold = at(0.99);
const kinds = { scavenge: 0, full: 0, long: 0, other: 0 };
const otherTimes = [];
for (let i = 0; i < CALLS; i++) {
  if (took[i] < threshold) continue;
  const inCall = gcs.filter((g) => g.at >= start[i] && g.at <= start[i] + took[i]);
  if (inCall.some((g) => !g.minor)) kinds.full++;
  else if (inCall.length) kinds.scavenge++;
  else if (took[i] > 20) kinds.long++;
  else {
    kinds.other++;
    otherTimes.push(took[i]);
  }
}
const slow = kinds.scavenge + kinds.full + kinds.long + kinds.other;
console.log(`slowest 1 % (${slow} calls of ${ms(threshold)} or more): ${kinds.scavenge} overlapped a scavenge, ${kinds.full} a full GC, ${kinds.long} took over 20 ms without one (a WAL checkpoint), ${kinds.other} neither`);
if (otherTimes.length) {
  otherTimes.sort((a, b) => a - b);
  console.log(`  the neither: ${ms(otherTimes[0])} to ${ms(otherTimes[otherTimes.length - 1])}, median ${ms(otherTimes[Math.floor(otherTimes.length / 2)])}`);
}
const scavenges = gcs.filter((g) => g.minor).map((g) => g.ms).sort((a, b) => a - b);
if (scavenges.length) {
  console.log(`scavenges: ${((scavenges.length * 1000) / CALLS).toFixed(2)} per 1,000 calls, each ${ms(scavenges[Math.floor(scavenges.length / 2)])} (median), longest ${ms(scavenges[scavenges.length - 1])}; full GCs: ${gcs.length - scavenges.length}`);
}
