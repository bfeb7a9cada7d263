// npm run bench: prints throughput and latency figures for the ledger on each backend.
// Options (env): BENCH_SECONDS (default 3 per measurement), FB_BACKENDS=sqlite|postgres, FB_TEST_PG_URL.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { openLedger } = require('../dist/src/ledger/open.js');

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const PG = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';
const only = process.env.FB_BACKENDS?.split(',');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-'));

const backends = [
  { name: 'sqlite', label: 'sqlite (synchronous=NORMAL, default)', target: () => path.join(tmp, `bench-${Date.now()}.sqlite`), opts: { sqlite: { synchronous: 'NORMAL' } } },
  { name: 'sqlite', label: 'sqlite (synchronous=FULL)', target: () => path.join(tmp, `bench-full-${Date.now()}.sqlite`), opts: { sqlite: { synchronous: 'FULL' } } },
  { name: 'postgres', label: 'postgres', target: () => `${PG}?schema=bench_${Date.now()}`, opts: {} },
].filter((b) => !only || only.includes(b.name));

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
const ms = (v) => `${v.toFixed(3)} ms`;

async function measure(ledger, concurrency, customers, label) {
  const holdLat = [];
  let pairs = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      const customerId = customers[lane % customers.length];
      for (let i = 0; performance.now() < deadline; i++) {
        const key = `${label}:${lane}:${i}`;
        const t = performance.now();
        const h = await ledger.hold({ customerId, amount: 1_000_000n, idempotencyKey: key });
        holdLat.push(performance.now() - t);
        await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${key}:s` });
        pairs++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  holdLat.sort((a, b) => a - b);
  return { pairsPerSec: Math.round(pairs / elapsed), p50: pct(holdLat, 0.5), p99: pct(holdLat, 0.99), pairs };
}

console.log(`flowise-billing ledger benchmark — ${os.cpus().length} cores, ${SECONDS}s per measurement, node ${process.version}`);
console.log('hold+settle pairs per second (each pair = 2 durable ledger operations), and hold latency\n');
const rows = [];
for (const b of backends) {
  const ledger = await openLedger(b.target(), b.opts);
  console.log(b.label);
  const customers = ['bench-a', 'bench-b', 'bench-c', 'bench-d'];
  for (const id of customers) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000_000_000n, idempotencyKey: `seed-${id}` });
  }
  for (const [concurrency, custs] of [[1, customers.slice(0, 1)], [32, customers.slice(0, 1)], [32, customers]]) {
    const r = await measure(ledger, concurrency, custs, `c${concurrency}x${custs.length}`);
    rows.push({ backend: b.label, concurrency, customers: custs.length, ...r });
    console.log(
      `  concurrency ${String(concurrency).padStart(2)} customers ${custs.length}  ${String(r.pairsPerSec).padStart(7)} pairs/s   hold p50 ${ms(r.p50)}  p99 ${ms(r.p99)}`,
    );
  }
  const check = await ledger.checkInvariants();
  if (!check.ok) throw new Error(`invariants broken after bench: ${JSON.stringify(check.violations.slice(0, 3))}`);
  await ledger.close();
}
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
