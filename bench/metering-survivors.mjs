// What each young-generation GC (a scavenge) has to copy during metered LLM calls: a scavenge costs about
// what survives it, and whatever survives two is promoted to the old generation (which then needs full
// GCs). For the same fake chat model call, bare, with a LangChain handler that does nothing, and metered
// (bench/metered-step.mjs: hold before, settle after, SQLite), it runs the calls in a child process under
// V8's --trace-gc-nvp and prints, per scavenge, the bytes that survived and were promoted, its pause,
// and the full GCs in the run. Load-independent except for the pauses. Runs against dist/ (npm run
// build first); --dist measures another build.
//   node bench/metering-survivors.mjs [--calls 20000] [--dist dist]
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliOption } from './allocations.mjs';
import { meteredStep } from './metered-step.mjs';

const args = process.argv.slice(2);
const opt = cliOption(args);
const CALLS = Number(opt('calls', 20_000));
const DIST = path.resolve(opt('dist', new URL('../dist', import.meta.url).pathname));
if (!Number.isInteger(CALLS) || CALLS < 1000) {
  console.error('usage: node bench/metering-survivors.mjs [--calls N ≥ 1000] [--dist DIR]');
  process.exit(2);
}

const variant = opt('variant', undefined);
if (variant) {
  // The child: warm up, then mark the measured stretch on stdout around the calls.
  const require = createRequire(import.meta.url);
  const { BaseCallbackHandler } = require('@langchain/core/callbacks/base');
  const step = await meteredStep({ dist: DIST, tmpPrefix: 'fb-bench-survivors-' });
  class Noop extends BaseCallbackHandler {
    name = 'noop';
    awaitHandlers = true;
    async handleChatModelStart() {}
    async handleLLMEnd() {}
  }
  const noop = new Noop();
  const call = variant === 'noop' ? () => step.model.invoke(step.msgs, { callbacks: [noop] }) : step[variant];
  for (let i = 0; i < 3000; i++) await call();
  console.log('--- start');
  for (let i = 0; i < CALLS; i++) await call();
  console.log('--- end');
  await step.close();
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
const field = (line, name) => Number(new RegExp(`(?:^|\\s)${name}=([\\d.]+)`).exec(line)?.[1] ?? NaN);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const kb = (b) => `${(b / 1024).toFixed(1).padStart(7)} KB`;

console.log(`young-generation GCs over ${CALLS} calls per variant (after 3,000 warm-up calls), Node ${process.version}, ${path.relative(process.cwd(), DIST) || '.'}`);
console.log('variant      scavenges  survived/scavenge  promoted/scavenge  pause (median)  full GCs');
for (const v of ['bare', 'noop', 'metered']) {
  const r = spawnSync(process.execPath, ['--trace-gc-nvp', self, '--variant', v, '--calls', String(CALLS), '--dist', DIST], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) {
    console.error(`${v}: the child failed (exit ${r.status}):\n${r.stderr.slice(-2000)}`);
    process.exit(1);
  }
  const lines = r.stdout.split('\n');
  const from = lines.indexOf('--- start');
  const to = lines.indexOf('--- end');
  const stretch = lines.slice(from + 1, to);
  const scavenges = stretch.filter((l) => / gc=s /.test(l));
  const full = stretch.filter((l) => / gc=(mc|mmc) /.test(l)).length;
  const avg = (name) => scavenges.reduce((s, l) => s + field(l, name), 0) / Math.max(1, scavenges.length);
  const label = { bare: 'bare', noop: 'no-op handler', metered: 'metered' }[v];
  console.log(`${label.padEnd(13)}${String(scavenges.length).padStart(9)}  ${kb(avg('new_space_survived')).padStart(17)}  ${kb(avg('promoted')).padStart(17)}  ${`${median(scavenges.map((l) => field(l, 'pause'))).toFixed(2)} ms`.padStart(14)}  ${String(full).padStart(8)}`);
}
