// JavaScript cost per SQLite ledger operation, in figures that depend little on the machine's load:
// CPU µs per operation (process.cpuUsage, user + system, over N hold+settle pairs after a warm-up),
// young-generation GCs (scavenges) per 1000 operations (PerformanceObserver 'gc'), and bytes allocated
// per operation (a sampled heap profile that keeps objects a GC already collected; --no-alloc skips it).
//   node bench/batch-cpu.mjs [--lanes 32] [--pairs 20000] [--dist dist] [--no-alloc] [--top 0] [--json]
// --dist measures another build (e.g. ../batch-base/dist). --top N prints the N largest allocation sites.
// A hold+settle pair is two operations. Run with --cpu-prof for a CPU profile of the same loop.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cliOption, frameSite, gcCounter, sampleAllocations } from './allocations.mjs';
import { holdSettlePairs } from './pairs.mjs';

const args = process.argv.slice(2);
const opt = cliOption(args);
const LANES = Number(opt('lanes', 32));
const PAIRS = Number(opt('pairs', 20_000));
const DIST = path.resolve(opt('dist', new URL('../dist', import.meta.url).pathname));
const ALLOC = !args.includes('--no-alloc');
const TOP = Number(opt('top', 0));
const require = createRequire(import.meta.url);
const { openLedger } = require(path.join(DIST, 'src/ledger/open.js'));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-batch-cpu-'));
const ledger = await openLedger(path.join(tmp, 'cpu.sqlite'), { sqlite: { synchronous: 'NORMAL' } });
await ledger.createCustomer({ id: 'c' });
await ledger.topUp({ customerId: 'c', amount: 10n ** 17n, idempotencyKey: 'seed' });

async function loop(pairs, label) {
  const perLane = Math.ceil(pairs / LANES);
  await holdSettlePairs(ledger, LANES, perLane, label);
  return perLane * LANES * 2;
}

// Warm-up: compiled code, statement caches filled.
await loop(Math.min(PAIRS, 4000), 'warm');

const gcs = gcCounter();
gcs.start();
// Write system calls (pwrite of WAL frames, checkpoints, temporary files) from /proc, where there is one.
const io = () => {
  try {
    return Object.fromEntries(fs.readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
  } catch {
    return null;
  }
};
const io0 = io();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const ops = await loop(PAIRS, 'cpu');
const wall = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const io1 = io();
const { minor: scavenges, major: majors } = await gcs.stop();

let bytesPerOp = null;
let sites = [];
if (ALLOC) {
  let allocOps = 0;
  const profile = await sampleAllocations(async () => {
    allocOps = await loop(Math.ceil(PAIRS / 4), 'alloc');
  }, 1024);
  const bySite = new Map();
  let total = 0;
  const walk = (n) => {
    if (n.selfSize) {
      total += n.selfSize;
      const here = frameSite(n.callFrame);
      bySite.set(here, (bySite.get(here) ?? 0) + n.selfSize);
    }
    for (const c of n.children) walk(c);
  };
  walk(profile.head);
  bytesPerOp = total / allocOps;
  sites = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([site, b]) => ({ site, bytesPerOp: Math.round(b / allocOps) }));
}

const check = await ledger.checkInvariants();
await ledger.close();
fs.rmSync(tmp, { recursive: true, force: true });
if (!check.ok) throw new Error(`invariants broken: ${JSON.stringify(check.violations.slice(0, 3))}`);

const out = {
  dist: DIST,
  lanes: LANES,
  ops,
  cpuUsPerOp: +((cpu.user + cpu.system) / ops).toFixed(2),
  userUsPerOp: +(cpu.user / ops).toFixed(2),
  wallUsPerOp: +((wall * 1000) / ops).toFixed(2),
  scavengesPer1000Ops: +((scavenges * 1000) / ops).toFixed(2),
  majorGcs: majors,
  bytesPerOp: bytesPerOp === null ? null : Math.round(bytesPerOp),
  writeCallsPerOp: io0 && io1 ? +((io1.syscw - io0.syscw) / ops).toFixed(2) : null,
  load: os.loadavg()[0].toFixed(1),
};
if (args.includes('--json')) console.log(JSON.stringify(out));
else {
  console.log(
    `${LANES} callers, ${ops} ops: CPU ${out.cpuUsPerOp} µs/op (user ${out.userUsPerOp}), wall ${out.wallUsPerOp} µs/op, ` +
      `${out.scavengesPer1000Ops} scavenges/1000 ops, ${majors} major GCs, ${out.bytesPerOp ?? '-'} bytes allocated/op, ` +
      `${out.writeCallsPerOp ?? '-'} write calls/op, load ${out.load}`,
  );
  for (const s of sites) console.log(`  ${String(s.bytesPerOp).padStart(6)} B/op  ${s.site}`);
}
