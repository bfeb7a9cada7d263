// Session admissions per second on PostgreSQL when one customer is busy, as a ratio to the same load spread
// over many customers, measured in the same run: the cost of admissions queuing on one subscription row.
// BENCH_PROCS processes (default 2, like queue mode's workers) each run BENCH_CONCURRENCY admission loops
// (default 16), every admission a new conversation (a new session, the write every first message makes),
// for BENCH_SECONDS (default 5) per slice; slices alternate one customer / BENCH_CUSTOMERS customers
// (default 16), BENCH_ROUNDS times (default 3). BENCH_BUSY_MS (default 2) keeps each process's event loop
// busy that long every millisecond or so, as a Flowise worker's is at saturation: an answer waits for the loop,
// and a lock held across it is held that much longer.
//   npm run build && node bench/admission.mjs
// Env: BENCH_PG (postgres://postgres@127.0.0.1:5432/flowise_billing_bench; a schema is made and dropped).
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const require = createRequire(import.meta.url);
const PROCS = Number(process.env.BENCH_PROCS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 16);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BUSY_MS = Number(process.env.BENCH_BUSY_MS ?? 2);
const BASE = process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_bench';

async function child() {
  const { openLedger } = require('../dist/src/ledger/open.js');
  const { QuotaService } = require('../dist/src/quota/service.js');
  const ledger = await openLedger(process.env.TARGET);
  const quota = new QuotaService(ledger, { actor: 'bench' });
  // A busy event loop: BUSY_MS of synchronous work, then a turn for I/O.
  let busy = true;
  (function spin() {
    if (!busy) return;
    const until = performance.now() + BUSY_MS;
    while (performance.now() < until);
    setTimeout(spin, 1);
  })();
  process.on('message', async ({ customers, until, tag }) => {
    let n = 0;
    let k = 0;
    const errors = new Map();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async (_, lane) => {
        while (Date.now() < until) {
          const customerId = customers[(lane + k++) % customers.length];
          try {
            await quota.admitRun({ customerId, conversationId: `${tag}-${process.pid}-${lane}-${k}` });
            n++;
          } catch (e) {
            errors.set(e.code, (errors.get(e.code) ?? 0) + 1);
          }
        }
      }),
    );
    process.send({ n, errors: [...errors] });
  });
  process.on('disconnect', async () => {
    busy = false;
    await ledger.close();
    process.exit(0);
  });
  process.send({ ready: true });
}

async function main() {
  const schema = `bench_adm_${process.pid}`;
  const admin = new pg.Client({ connectionString: BASE.replace(/\/[^/]*$/, '/postgres') });
  await admin.connect();
  const db = new URL(BASE).pathname.slice(1);
  if (!(await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [db])).rowCount) await admin.query(`CREATE DATABASE "${db}"`);
  await admin.end();
  const target = `${BASE}?schema=${schema}`;
  const { openLedger } = require('../dist/src/ledger/open.js');
  const { QuotaService } = require('../dist/src/quota/service.js');
  const ledger = await openLedger(target);
  const quota = new QuotaService(ledger, { actor: 'bench' });
  await quota.createPlan({ id: 'bench', name: 'Bench', basePriceUsd: '0', sessionsIncluded: 100_000_000, managedModels: true });
  const ids = Array.from({ length: CUSTOMERS }, (_, i) => `adm${i}`);
  for (const id of ids) {
    await ledger.createCustomer({ id });
    await quota.subscribe({ customerId: id, planId: 'bench' });
    await quota.admitRun({ customerId: id, conversationId: 'first' });
  }
  const kids = await Promise.all(
    Array.from({ length: PROCS }, () => {
      const c = fork(fileURLToPath(import.meta.url), ['--child'], { env: { ...process.env, TARGET: target } });
      return new Promise((resolve) => c.once('message', () => resolve(c)));
    }),
  );
  const slice = async (customers, tag) => {
    const until = Date.now() + SECONDS * 1000;
    const t0 = performance.now();
    const outs = await Promise.all(kids.map((c) => new Promise((resolve) => {
      c.once('message', resolve);
      c.send({ customers, until, tag });
    })));
    const secs = (performance.now() - t0) / 1000;
    const errs = outs.flatMap((o) => o.errors);
    if (errs.length) console.log(`  (${tag}: errors ${JSON.stringify(errs)})`);
    return outs.reduce((s, o) => s + o.n, 0) / secs;
  };
  console.log(`admissions on PostgreSQL: ${PROCS} processes × ${CONCURRENCY} concurrent, event loop busy ${BUSY_MS} ms per turn, ${SECONDS}s slices, one customer vs ${CUSTOMERS}`);
  const one = [];
  const many = [];
  for (let r = 0; r < ROUNDS; r++) {
    one.push(await slice([ids[0]], `one${r}`));
    many.push(await slice(ids, `many${r}`));
    console.log(`  round ${r + 1}: one customer ${one[r].toFixed(0)}/s, ${CUSTOMERS} customers ${many[r].toFixed(0)}/s (ratio ${(one[r] / many[r]).toFixed(3)})`);
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`one customer: ${mean(one).toFixed(0)} admissions/s; ${CUSTOMERS} customers (baseline, same run): ${mean(many).toFixed(0)}/s; ratio ${(mean(one) / mean(many)).toFixed(3)}`);
  for (const c of kids) c.disconnect();
  const used = (await quota.usage(ids[0])).sessionsUsed;
  console.log(`sessions counted for the busy customer: ${used}; invariants ${(await ledger.checkInvariants()).ok ? 'ok' : 'VIOLATED'}`);
  await ledger.close();
  const drop = new pg.Client({ connectionString: BASE });
  await drop.connect();
  await drop.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await drop.end();
}

if (process.argv.includes('--child')) await child();
else await main();
