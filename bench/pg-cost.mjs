// node bench/pg-cost.mjs: CPU per ledger operation on PostgreSQL, 1 caller, from counters that do
// not depend on the machine's load (a busy machine stretches wall time, not CPU time):
//   client   this process's user+system CPU (process.cpuUsage) per operation, and its main thread's
//            alone (/proc/self/task; the rest is V8's garbage collector and compiler threads)
//   server   the ledger's backend processes' CPU (/proc/<pid>/stat, 10 ms ticks) per operation
//   wake-ups this process's context switches (/proc/self/status) per operation
// and the same for pgbench's TPC-B-like script (1 client) when BENCH_PGBENCH=1 (needs the
// database flowise_billing_bench that bench/run.mjs initialises; pgbench's own CPU from /usr/bin/time).
// The server must run on this machine (its backends' /proc entries are read).
// Env: FB_TEST_PG_URL, BENCH_PAIRS (default 2000), BENCH_DIST (default ../dist), BENCH_PGBENCH.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensurePgDatabaseOrExit } from '../test/support/pg-database.mjs';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(process.env.BENCH_DIST ?? path.join(here, '..', 'dist'));
const { openLedger } = require(path.join(dist, 'src/ledger/open.js'));
const pg = require('pg');

const PG = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';
await ensurePgDatabaseOrExit(PG, { what: 'This benchmark measures PostgreSQL', skip: 'node bench/sqlite-cost.mjs' });
const PAIRS = Number(process.env.BENCH_PAIRS ?? 2000);
const app = `fb_cost_${process.pid}`;
const schema = `cost_${process.pid}_${Date.now()}`;
const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

const procTimes = (pid) => {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return { user: Number(f[11]) * TICK_MS, sys: Number(f[12]) * TICK_MS };
  } catch {
    return { user: 0, sys: 0 };
  }
};
const procCpuMs = (pid) => {
  const t = procTimes(pid);
  return t.user + t.sys;
};
const switches = () => {
  const s = fs.readFileSync('/proc/self/status', 'utf8');
  return Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(s)[1]) + Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(s)[1]);
};

const monitor = new pg.Client({ connectionString: PG });
await monitor.connect();
const backends = async (name) => (await monitor.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [name])).rows.map((r) => r.pid);

const sep = PG.includes('?') ? '&' : '?';
const ledger = await openLedger(`${PG}${sep}schema=${schema}&application_name=${app}`);
await ledger.createCustomer({ id: 'cost-a' });
await ledger.topUp({ customerId: 'cost-a', amount: 1_000_000_000_000n, idempotencyKey: 'cost-seed' });

async function pairs(n, tag) {
  for (let i = 0; i < n; i++) {
    const h = await ledger.hold({ customerId: 'cost-a', amount: 1_000_000n, idempotencyKey: `${tag}:${i}` });
    await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${tag}:${i}:s` });
  }
}
await pairs(Math.max(300, PAIRS / 4), 'warm'); // JIT, prepared statements, pool

const pids = await backends(app);
const server0 = pids.reduce((n, p) => n + procCpuMs(p), 0);
const serverSys0 = pids.reduce((n, p) => n + procTimes(p).sys, 0);
const main0 = procCpuMs(`self/task/${process.pid}`);
const cpu0 = process.cpuUsage();
const sw0 = switches();
const t0 = performance.now();
await pairs(PAIRS, 'run');
const wall = performance.now() - t0;
const sw = switches() - sw0;
const cpu = process.cpuUsage(cpu0);
const mainThread = procCpuMs(`self/task/${process.pid}`) - main0;
const pidsAfter = await backends(app);
const server = pidsAfter.reduce((n, p) => n + procCpuMs(p), 0) - server0;
const serverSys = pidsAfter.reduce((n, p) => n + procTimes(p).sys, 0) - serverSys0;
const ops = 2 * PAIRS;
const check = await ledger.checkInvariants();
await ledger.close();
await monitor.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);

console.log(`PostgreSQL ledger CPU, 1 caller, ${PAIRS} hold+settle pairs (${dist}; load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')})`);
console.log(
  `  ledger   client ${((cpu.user + cpu.system) / 1000 / ops).toFixed(3)} ms/op (user ${(cpu.user / 1000 / ops).toFixed(3)}, sys ${(cpu.system / 1000 / ops).toFixed(3)}; main thread ${(mainThread / ops).toFixed(3)})` +
    `  server ${(server / ops).toFixed(3)} ms/op (sys ${(serverSys / ops).toFixed(3)}; ${pidsAfter.length} backend${pidsAfter.length === 1 ? '' : 's'}${pidsAfter.join() === pids.join() ? '' : ', changed during the run'})` +
    `  wake-ups ${(sw / ops).toFixed(2)}/op  wall ${(wall / ops).toFixed(3)} ms/op`,
);

if (process.env.BENCH_PGBENCH === '1') {
  const u = new URL(PG);
  const tx = ops;
  const child = spawn('/usr/bin/time', ['-f', '%U %S', 'pgbench', '-n', '-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres'), '-c', '1', '-t', String(tx), 'flowise_billing_bench'], {
    env: { ...process.env, PGPASSWORD: decodeURIComponent(u.password), PGAPPNAME: `${app}_pgbench` },
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  // pgbench's backend exits with it: sample its CPU until then.
  let last = 0;
  const poll = setInterval(async () => {
    const [p] = await backends(`${app}_pgbench`).catch(() => []);
    if (p) last = Math.max(last, procCpuMs(p));
  }, 20);
  await new Promise((r) => child.on('exit', r));
  clearInterval(poll);
  const [user, sys] = err.trim().split('\n').at(-1).split(' ').map(Number);
  console.log(`  pgbench  client ${(((user + sys) * 1000) / tx).toFixed(3)} ms/tx  server ${(last / tx).toFixed(3)} ms/tx (its backend, sampled every 20 ms)`);
}
await monitor.end();
if (!check.ok) throw new Error(`invariants broken: ${JSON.stringify(check.violations.slice(0, 3))}`);
