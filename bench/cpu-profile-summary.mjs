// node bench/cpu-profile-summary.mjs <file.cpuprofile | dir> [--top 40] [--filter <substring>] [--rounds <rounds.json>]
//   [--compare <label A> <label B>]
// Summarises V8 CPU profiles (node --cpu-prof, e.g. BENCH_CPU_PROF of bench/queue.mjs): self time by
// package group (this plugin's dist/, Flowise, LangChain, pg, typeorm, zod, crypto, …), then self and
// total (inclusive) time by function. Several files are summed. --filter keeps only samples whose stack
// contains a frame matching the substring (e.g. --filter node_modules/flowise-billing/), to see what one part costs.
// --rounds (bench/queue.mjs writes it beside the profiles) keeps only samples taken during the measured
// rounds and adds a column of ms per prediction answered in them. --compare (with --rounds) takes the rounds whose
// label starts with A (e.g. `off`) and those starting with B (`variant`), from the same processes of one run, and
// prints what B spends per prediction beyond A, by package and by function, largest first.
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
const ci = args.indexOf('--compare');
const COMPARE = ci < 0 ? null : args.splice(ci, 3).slice(1);
const USAGE = 'usage: node bench/cpu-profile-summary.mjs <file.cpuprofile | dir> [--top N] [--filter substring] [--rounds rounds.json [--compare labelA labelB]]';
const target = args[0];
if (!target || args.length > 1 || target.startsWith('-') || !Number.isInteger(TOP) || TOP <= 0 || (COMPARE && (COMPARE.length < 2 || !ROUNDS))) {
  console.error(USAGE);
  process.exit(2);
}
for (const f of [target, ROUNDS].filter(Boolean)) {
  if (!fs.existsSync(f)) {
    console.error(`no such file or directory: ${f}\n${USAGE}`);
    process.exit(2);
  }
}
/** [from, to] µs windows on the profiles' clock (CLOCK_MONOTONIC), and the predictions answered in them. */
const windows = ROUNDS ? JSON.parse(fs.readFileSync(ROUNDS, 'utf8')) : null;
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

const profiles = files.map((file) => JSON.parse(fs.readFileSync(file, 'utf8')));

/** Busy time in `wins` (null: all), by package, by function (self) and by function (inclusive). */
function aggregate(wins) {
  const inRounds = (t) => !wins || wins.some((w) => t >= w.from && t <= w.to);
  const selfByGroup = new Map();
  const selfByFn = new Map();
  const totalByFn = new Map();
  let totalMs = 0;
  let kept = 0;
  for (const p of profiles) {
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
  return { selfByGroup, selfByFn, totalByFn, totalMs, kept, predictions: wins ? wins.reduce((n, w) => n + w.predictions, 0) : 0 };
}

const shown = (ms, predictions, totalMs) => `${((100 * ms) / totalMs).toFixed(1).padStart(5)} % ${predictions ? `${(ms / predictions).toFixed(3).padStart(7)} ms/pred ` : ''}`;
const show = (a, title, m, n) => {
  console.log(`\n${title}`);
  for (const [k, ms] of [...m].sort((x, y) => y[1] - x[1]).slice(0, n)) console.log(`${shown(ms, a.predictions, a.totalMs)} ${ms.toFixed(0).padStart(7)} ms  ${k}`);
};
const showDelta = (a, b, title, pick, n) => {
  const keys = new Set([...pick(a).keys(), ...pick(b).keys()]);
  const per = (x, k) => (pick(x).get(k) ?? 0) / Math.max(1, x.predictions);
  const rows = [...keys].map((k) => [k, per(a, k), per(b, k)]).sort((x, y) => Math.abs(y[2] - y[1]) - Math.abs(x[2] - x[1])).slice(0, n);
  console.log(`\n${title} (ms per prediction: ${COMPARE[0]}, ${COMPARE[1]}, difference)`);
  for (const [k, x, y] of rows) console.log(`${x.toFixed(3).padStart(8)} ${y.toFixed(3).padStart(8)} ${(y - x >= 0 ? '+' : '') + (y - x).toFixed(3).padStart(7)}  ${k}`);
};
if (COMPARE) {
  const [a, b] = COMPARE.map((label) => {
    const wins = windows.filter((w) => w.label.startsWith(label));
    if (!wins.length) {
      console.error(`no round labelled ${label}… in ${ROUNDS} (labels: ${windows.map((w) => w.label).join(', ')})`);
      process.exit(2);
    }
    return aggregate(wins);
  });
  console.log(`${files.length} profile(s)${FILTER ? `, stacks containing "${FILTER}"` : ''}: ${COMPARE[0]} ${(a.totalMs / Math.max(1, a.predictions)).toFixed(2)} ms busy per prediction (${a.predictions} predictions), ${COMPARE[1]} ${(b.totalMs / Math.max(1, b.predictions)).toFixed(2)} (${b.predictions})`);
  showDelta(a, b, 'self time by package', (x) => x.selfByGroup, 30);
  showDelta(a, b, 'self time by function', (x) => x.selfByFn, TOP);
  showDelta(a, b, 'total (inclusive) time by function', (x) => x.totalByFn, TOP);
} else {
  const a = aggregate(windows);
  console.log(`${files.length} profile(s), ${a.kept} busy samples, ${a.totalMs.toFixed(0)} ms busy${FILTER ? ` (stacks containing "${FILTER}")` : ''}`);
  if (windows) console.log(`measured rounds only: ${windows.length}, ${a.predictions} predictions, ${(a.totalMs / Math.max(1, a.predictions)).toFixed(2)} ms busy per prediction`);
  show(a, 'self time by package', a.selfByGroup, 30);
  show(a, 'self time by function', a.selfByFn, TOP);
  show(a, 'total (inclusive) time by function', a.totalByFn, TOP);
}
