// Memory allocated per metered LLM call, the load-independent side of bench/metering.mjs's p99: the
// call's garbage is what sets how often V8's young-generation GC (a scavenge, ~1 ms) lands in a call.
// For the same fake chat model call, bare (`model.invoke`) and metered (BillingCallbackHandler with
// fee and compute off: one hold before the call and its settle after, SQLite ledger, synchronous=NORMAL),
// it prints bytes allocated per call (a sampled heap profile that keeps objects a GC already collected)
// and scavenges per 1000 calls (PerformanceObserver 'gc', counted over a loop run without the profiler),
// then where the metered call's bytes go, by package and by allocating function.
//   node bench/metering-alloc.mjs [--calls 3000] [--gc-calls 20000] [--top 25] [--stacks 0] [--dist dist] [--json]
// --calls: calls profiled per variant; --gc-calls: calls over which scavenges are counted (one comes every
// ~16 MB allocated, the young generation's size, so a few thousand calls see only a few of them).
// Runs against dist/ (npm run build first); --dist measures another build (e.g. ../alloc-base/dist).
// --stacks N shows, for the N largest allocating functions, the callers that made them allocate.
import path from 'node:path';
import { cliOption, frameSite, gcCounter, sampleAllocations } from './allocations.mjs';
import { meteredStep } from './metered-step.mjs';

const args = process.argv.slice(2);
const opt = cliOption(args);
const CALLS = Number(opt('calls', 3000));
const GC_CALLS = Number(opt('gc-calls', 20_000));
const TOP = Number(opt('top', 25));
const STACKS = Number(opt('stacks', 0));
const JSON_OUT = args.includes('--json');
const DIST = path.resolve(opt('dist', new URL('../dist', import.meta.url).pathname));
const step = await meteredStep({ dist: DIST, tmpPrefix: 'fb-bench-alloc-' });
const variants = { bare: step.bare, metered: step.metered };

async function measure(call) {
  for (let i = 0; i < Math.max(2000, CALLS); i++) await call(); // compiled code, statement caches, rate card
  // Scavenges without the profiler attached; entries arrive asynchronously, so wait a turn before counting.
  await new Promise((r) => setTimeout(r, 20));
  const gcs = gcCounter();
  gcs.start();
  for (let i = 0; i < GC_CALLS; i++) await call();
  const { minor } = await gcs.stop();
  const profile = await sampleAllocations(async () => {
    for (let i = 0; i < CALLS; i++) await call();
  }, 512);
  return { scavengesPer1000: (minor * 1000) / GC_CALLS, ...attribute(profile) };
}

function pkg(url) {
  if (url.includes('/dist/src/')) return 'fb:' + url.replace(/^.*\/dist\/src\//, '').split('/')[0].replace(/\.js$/, '');
  if (url.includes('node_modules/')) {
    const parts = url.replace(/^.*node_modules\//, '').split('/');
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  if (url.startsWith('node:')) return 'node';
  return url ? 'bench' : 'native (builtins, driver)';
}

/** Bytes by package and by function (self), and by chains of the function and its callers. */
function attribute(profile) {
  let total = 0;
  const byPkg = new Map();
  const bySite = new Map();
  const byStack = new Map();
  const add = (m, k, v) => m.set(k, (m.get(k) ?? 0) + v);
  const walk = (n, callers) => {
    const f = n.callFrame;
    const frames = [f, ...callers];
    if (n.selfSize) {
      total += n.selfSize;
      // A builtin (Map, Set, the SQLite driver's rows) counts under the package of the code that called it.
      const owner = frames.find((x) => x.url);
      add(byPkg, f.url ? pkg(f.url) : `${owner ? pkg(owner.url) : 'native'} (builtins)`, n.selfSize);
      add(bySite, frameSite(f), n.selfSize);
      add(byStack, frames.slice(0, 4).map(frameSite).join('  <  '), n.selfSize);
    }
    for (const c of n.children) walk(c, frames);
  };
  walk(profile.head, []);
  return { total, byPkg, bySite, byStack };
}

const results = {};
for (const [name, call] of Object.entries(variants)) results[name] = await measure(call);
await step.close();

const per = (b) => Math.round(b / CALLS);
const { bare, metered } = results;
if (JSON_OUT) {
  console.log(JSON.stringify({
    calls: CALLS,
    bare: { bytesPerCall: per(bare.total), scavengesPer1000: bare.scavengesPer1000 },
    metered: { bytesPerCall: per(metered.total), scavengesPer1000: metered.scavengesPer1000 },
    addedBytesPerCall: per(metered.total - bare.total),
  }));
  process.exit(0);
}
console.log(`allocation per LLM call, ${CALLS} calls profiled and ${GC_CALLS} counted per variant, Node ${process.version}, ${path.relative(process.cwd(), DIST) || '.'}`);
for (const [name, r] of Object.entries(results)) console.log(`  ${name.padEnd(8)} ${String(per(r.total)).padStart(7)} bytes/call   ${r.scavengesPer1000.toFixed(2).padStart(6)} scavenges/1000 calls`);
console.log(`  added by metering: ${per(metered.total - bare.total)} bytes/call, ${(metered.scavengesPer1000 - bare.scavengesPer1000).toFixed(2)} scavenges/1000 calls`);
if (TOP > 0) {
  console.log('metered call, bytes/call by package (a builtin counts under its caller):');
  for (const [k, b] of [...metered.byPkg].sort((a, b) => b[1] - a[1])) if (per(b) > 0) console.log(`  ${String(per(b)).padStart(7)}  ${k}`);
  console.log(`metered call, the ${TOP} largest allocating functions (self bytes/call):`);
  for (const [k, b] of [...metered.bySite].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${String(per(b)).padStart(7)}  ${k}`);
}
if (STACKS > 0) {
  console.log(`metered call, the ${STACKS} largest (function < callers) chains:`);
  for (const [k, b] of [...metered.byStack].sort((a, b) => b[1] - a[1]).slice(0, STACKS)) console.log(`  ${String(per(b)).padStart(7)}  ${k}`);
}
