// node bench/queue-floor.mjs: bench/queue.mjs with the metered variant's bookings (the session admission,
// the reservation, the capture) replaced by the floor's two statements (bench/prediction-floor.mjs: one
// before the call, one after, the server deciding), the calls still priced. What `variant` costs in this
// run is then what any design that writes each prediction durably would cost, measured against the same
// run's plain flow. Compare its variant/off with bench/queue.mjs's on the same machine.
// The floor build is this checkout's HEAD with bench/floor-build.patch applied, built in a throw-away git
// worktree (uncommitted changes are not in it) and removed afterwards: it calls the provider unpaid, so it
// never exists in this tree. Env: FB_FLOOR (sync: commits wait for the log, as a hold must; async: they do
// not; skip: no statement, what the metered node costs without bookings), BENCH_VARIANTS (off,variant),
// and everything bench/queue.mjs reads.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLOOR_MODES } from './prediction-floor.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODE = process.env.FB_FLOOR ?? 'sync';
if (!FLOOR_MODES.includes(MODE)) {
  console.error(`FB_FLOOR must be ${FLOOR_MODES.join(', ')}, got "${MODE}"`);
  process.exit(2);
}
const git = (args, opts = {}) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8', ...opts });
if (git(['rev-parse', '--verify', 'HEAD']).status !== 0) {
  console.error('bench/queue-floor.mjs builds HEAD in a git worktree: run it from a git checkout with a commit.');
  process.exit(2);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-floor-build-'));
let added = false;
function cleanUp() {
  if (added) git(['worktree', 'remove', '--force', dir]);
  git(['worktree', 'prune']);
  fs.rmSync(dir, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => (cleanUp(), process.exit(130)));

function step(what, cmd, args, opts) {
  console.log(`[queue-floor] ${what} …`);
  const r = spawnSync(cmd, args, { cwd: dir, stdio: 'inherit', ...opts });
  if (r.status !== 0) throw new Error(`${what} failed (${r.error?.message ?? `exit ${r.status}`})`);
}

let status = 1;
try {
  const w = git(['worktree', 'add', '--detach', dir, 'HEAD']);
  if (w.status !== 0) throw new Error(`git worktree add failed: ${w.stderr.trim()}`);
  added = true;
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const check = git(['apply', '--check', path.join(dir, 'bench', 'floor-build.patch')], { cwd: dir });
  if (check.status !== 0) throw new Error(`bench/floor-build.patch no longer applies to HEAD (${check.stderr.trim()}); update it to the current src/plugin/flow-run.ts`);
  step('applying bench/floor-build.patch', 'git', ['apply', path.join('bench', 'floor-build.patch')]);
  step('building the floor build (npm run build)', 'npm', ['run', 'build', '--silent']);
  const env = {
    ...process.env,
    FB_FLOOR: MODE,
    FB_FLOOR_MODULE: path.join(dir, 'bench', 'prediction-floor.mjs'),
    FB_FLOOR_SCHEMA: `floor_${process.pid}`,
    BENCH_VARIANTS: process.env.BENCH_VARIANTS ?? 'off,variant',
  };
  console.log(`[queue-floor] FB_FLOOR=${MODE}: "variant" books with the floor's statements, not the ledger`);
  const r = spawnSync(process.execPath, [path.join('bench', 'queue.mjs')], { cwd: dir, stdio: 'inherit', env });
  status = r.status ?? 1;
} catch (e) {
  console.error(`[queue-floor] ${e.message}`);
} finally {
  cleanUp();
}
process.exit(status);
