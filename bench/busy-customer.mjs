// Work per second on PostgreSQL when one customer is busy, as a ratio to the same load spread over many
// customers, measured in the same run: what queuing on one customer's rows costs when several processes
// (queue mode's workers) serve it. Two measures: session admissions (every one a new conversation, the write
// every first message makes; they meet on the subscription row) and ledger hold+settle pairs (they meet on
// the customer's balance row).
// BENCH_PROCS processes (default 2) each run BENCH_CONCURRENCY loops (default 16) for BENCH_SECONDS
// (default 5) per slice; slices alternate one customer / BENCH_CUSTOMERS customers (default 16),
// BENCH_ROUNDS times (default 3). BENCH_BUSY_MS (default 2) keeps each process's event loop busy that long
// every millisecond or so, as a Flowise worker's is at saturation: an answer waits for the loop, and a lock
// held across it is held that much longer. BENCH_MEASURES (admissions,pairs) picks the measures.
//   npm run build && node bench/busy-customer.mjs
// Env: BENCH_PG (postgres://postgres@127.0.0.1:5432/flowise_billing_bench, created when missing; a schema is made and
// dropped). FB_BACKENDS without postgres skips it.
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ensurePgDatabaseOrExit } from '../test/support/pg-database.mjs';

const require = createRequire(import.meta.url);
const PROCS = Number(process.env.BENCH_PROCS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 16);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BUSY_MS = Number(process.env.BENCH_BUSY_MS ?? 2);
const MEASURES = (process.env.BENCH_MEASURES ?? 'admissions,pairs').split(',').map((m) => m.trim());
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
  process.on('message', async ({ measure, customers, until, tag }) => {
    let n = 0;
    let k = 0;
    const errors = new Map();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async (_, lane) => {
        while (Date.now() < until) {
          const customerId = customers[(lane + k++) % customers.length];
          const key = `${tag}-${process.pid}-${lane}-${k}`;
          try {
            if (measure === 'admissions') await quota.admitRun({ customerId, conversationId: key });
            else {
              const h = await ledger.hold({ customerId, amount: 1_000_000n, idempotencyKey: key });
              await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${key}:s` });
            }
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
  const schema = `bench_busy_${process.pid}`;
  // Created when missing and kept, as bench/run.mjs keeps its pgbench database.
  await ensurePgDatabaseOrExit(BASE, { what: 'This benchmark measures PostgreSQL', skip: 'FB_BACKENDS=sqlite npm run bench' });
  const target = `${BASE}?schema=${schema}`;
  const { openLedger } = require('../dist/src/ledger/open.js');
  const { QuotaService } = require('../dist/src/quota/service.js');
  const ledger = await openLedger(target);
  const quota = new QuotaService(ledger, { actor: 'bench' });
  await quota.createPlan({ id: 'bench', name: 'Bench', basePriceUsd: '0', sessionsIncluded: 100_000_000, managedModels: true });
  const ids = Array.from({ length: CUSTOMERS }, (_, i) => `adm${i}`);
  for (const id of ids) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 10n ** 15n, idempotencyKey: `${id}-topup` });
    await quota.subscribe({ customerId: id, planId: 'bench' });
    await quota.admitRun({ customerId: id, conversationId: 'first' });
  }
  const kids = await Promise.all(
    Array.from({ length: PROCS }, () => {
      const c = fork(fileURLToPath(import.meta.url), ['--child'], { env: { ...process.env, TARGET: target } });
      return new Promise((resolve) => c.once('message', () => resolve(c)));
    }),
  );
  const slice = async (measure, customers, tag) => {
    const until = Date.now() + SECONDS * 1000;
    const t0 = performance.now();
    const outs = await Promise.all(kids.map((c) => new Promise((resolve) => {
      c.once('message', resolve);
      c.send({ measure, customers, until, tag });
    })));
    const secs = (performance.now() - t0) / 1000;
    const errs = outs.flatMap((o) => o.errors);
    if (errs.length) console.log(`  (${tag}: errors ${JSON.stringify(errs)})`);
    return outs.reduce((s, o) => s + o.n, 0) / secs;
  };
  console.log(`PostgreSQL, ${PROCS} processes × ${CONCURRENCY} concurrent, event loop busy ${BUSY_MS} ms per turn, ${SECONDS}s slices, one customer vs ${CUSTOMERS} (baseline, same run)`);
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  for (const measure of MEASURES.filter((m) => m === 'admissions' || m === 'pairs')) {
    const unit = measure === 'admissions' ? 'admissions' : 'hold+settle pairs';
    const one = [];
    const many = [];
    for (let r = 0; r < ROUNDS; r++) {
      one.push(await slice(measure, [ids[0]], `${measure}-one${r}`));
      many.push(await slice(measure, ids, `${measure}-many${r}`));
      console.log(`  ${measure} round ${r + 1}: one customer ${one[r].toFixed(0)}/s, ${CUSTOMERS} customers ${many[r].toFixed(0)}/s (ratio ${(one[r] / many[r]).toFixed(3)})`);
    }
    console.log(`${unit}: one customer ${mean(one).toFixed(0)}/s; ${CUSTOMERS} customers ${mean(many).toFixed(0)}/s; ratio ${(mean(one) / mean(many)).toFixed(3)}`);
  }
  for (const c of kids) c.disconnect();
  console.log(`ledger invariants ${(await ledger.checkInvariants()).ok ? 'ok' : 'VIOLATED'}`);
  await ledger.close();
  const drop = new pg.Client({ connectionString: BASE });
  await drop.connect();
  await drop.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await drop.end();
}

if (process.argv.includes('--child')) await child();
else if (process.env.FB_BACKENDS && !process.env.FB_BACKENDS.split(',').some((b) => b.trim() === 'postgres')) {
  console.log(`busy customer: not run (PostgreSQL only; FB_BACKENDS=${process.env.FB_BACKENDS})`);
} else await main();
