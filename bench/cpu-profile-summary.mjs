// node bench/cpu-profile-summary.mjs <file.cpuprofile | dir> [--top 40] [--filter <substring>] [--rounds <rounds.json>]
// Summarises V8 CPU profiles (node --cpu-prof, e.g. BENCH_CPU_PROF of bench/queue.mjs): self time by
// package group (this plugin's dist/, Flowise, LangChain, pg, typeorm, zod, crypto, …), then self and
// total (inclusive) time by function. Several files are summed. --filter keeps only samples whose stack
// contains a frame matching the substring (e.g. --filter node_modules/flowise-billing/), to see what one part costs.
// --rounds (bench/queue.mjs writes it beside the profiles) keeps only samples taken during the measured
// rounds and adds a column of ms per prediction answered in them.
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const TOP = Number(opt('--top', 40));
const FILTER = opt('--filter', undefined);
const ROUNDS = opt('--rounds', undefined);
/** [from, to] µs windows on the profiles' clock (CLOCK_MONOTONIC), and the predictions answered in them. */
const windows = ROUNDS ? JSON.parse(fs.readFileSync(ROUNDS, 'utf8')) : null;
const predictions = windows ? windows.reduce((n, w) => n + w.predictions, 0) : 0;
const inRounds = (t) => !windows || windows.some((w) => t >= w.from && t <= w.to);
const target = args[0];
if (!target) {
  console.error('usage: node bench/cpu-profile-summary.mjs <file.cpuprofile | dir> [--top N] [--filter substring]');
  process.exit(2);
}
const files = fs.statSync(target).isDirectory() ? fs.readdirSync(target).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(target, f)) : [target];

/** Which part of the process a script URL belongs to. */
function group(url, fn) {
  if (!url) return fn === '(garbage collector)' ? 'gc' : fn === '(program)' || fn === '(idle)' ? fn : 'native/other';
  const u = url.replace(/^file:\/\//, '');
  if (u.startsWith('node:')) return `node:${u.slice(5).split('/')[0]}`;
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(u);
  if (!m) return 'other';
  const [, pkg, rest] = m;
  if (pkg === 'flowise-components' && /nodes\/billing|credentials\/billing|flowise-billing/i.test(rest)) return 'PLUGIN (installed)';
  // By package, not by the whole path: the Flowise the tests install lives under ~/.cache/flowise-billing/.
  if (pkg === 'flowise-billing' || (pkg === 'flowise-components' && /billing/.test(rest))) return 'PLUGIN';
  return pkg;
}

const selfByGroup = new Map();
const selfByFn = new Map();
const totalByFn = new Map();
let totalMs = 0;
let kept = 0;
for (const file of files) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const dt = new Map();
  const at = [];
  // timeDeltas[i] is the time before sample i; attribute it to that sample.
  let t = p.startTime;
  p.samples.forEach((id, i) => {
    dt.set(i, (p.timeDeltas[i] ?? 0) / 1000);
    at.push((t += p.timeDeltas[i] ?? 0));
  });
  const label = (n) => {
    const cf = n.callFrame;
    const u = (cf.url || '').replace(/^file:\/\//, '');
    const short = u.includes('node_modules/') ? u.slice(u.lastIndexOf('node_modules/') + 13) : u;
    return `${cf.functionName || '(anonymous)'} ${short}:${cf.lineNumber + 1}`;
  };
  for (let i = 0; i < p.samples.length; i++) {
    const ms = dt.get(i);
    const leaf = byId.get(p.samples[i]);
    const fn = leaf.callFrame.functionName;
    if (fn === '(idle)' || fn === '(program)' || !inRounds(at[i])) continue;
    const stack = [];
    for (let id = leaf.id; id !== undefined; id = parent.get(id)) stack.push(byId.get(id));
    if (FILTER && !stack.some((n) => (n.callFrame.url || '').includes(FILTER) || n.callFrame.functionName.includes(FILTER))) continue;
    totalMs += ms;
    kept++;
    const g = group(leaf.callFrame.url, fn);
    selfByGroup.set(g, (selfByGroup.get(g) ?? 0) + ms);
    const l = label(leaf);
    selfByFn.set(l, (selfByFn.get(l) ?? 0) + ms);
    const seen = new Set();
    for (const n of stack) {
      const k = label(n);
      if (seen.has(k)) continue;
      seen.add(k);
      totalByFn.set(k, (totalByFn.get(k) ?? 0) + ms);
    }
  }
}
const perPrediction = (ms) => (predictions ? `${(ms / predictions).toFixed(3).padStart(7)} ms/pred ` : '');
const pct = (ms) => `${((100 * ms) / totalMs).toFixed(1).padStart(5)} % ${perPrediction(ms)}`;
const show = (title, m, n) => {
  console.log(`\n${title}`);
  for (const [k, ms] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${pct(ms)} ${ms.toFixed(0).padStart(7)} ms  ${k}`);
};
console.log(`${files.length} profile(s), ${kept} busy samples, ${totalMs.toFixed(0)} ms busy${FILTER ? ` (stacks containing "${FILTER}")` : ''}`);
if (windows) console.log(`measured rounds only: ${windows.length}, ${predictions} predictions, ${(totalMs / Math.max(1, predictions)).toFixed(2)} ms busy per prediction`);
show('self time by package', selfByGroup, 30);
show('self time by function', selfByFn, TOP);
show('total (inclusive) time by function', totalByFn, TOP);
