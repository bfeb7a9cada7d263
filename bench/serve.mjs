// `serve` over HTTP (autocannon) next to the ledger called directly, same machine, same run:
// balance reads and top-ups per second with p99 latency, on each backend.
// Options (env): BENCH_SECONDS (default 3), BENCH_CONNECTIONS (default 32), FB_BACKENDS=sqlite|postgres, FB_TEST_PG_URL.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensurePgDatabaseOrExit } from '../test/support/pg-database.mjs';
import autocannon from 'autocannon';

const require = createRequire(import.meta.url);
const { openLedger } = require('../dist/src/ledger/open.js');
const { ApiKeyStore } = require('../dist/src/server/apikeys.js');
const { migrateServer } = require('../dist/src/server/schema.js');

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const PG = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';
const only = process.env.FB_BACKENDS?.split(',');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-serve-'));
const MAIN = path.resolve(import.meta.dirname, '..', 'dist', 'src', 'cli', 'main.js');
const CUSTOMERS = Array.from({ length: 8 }, (_, i) => `bench-${i}`);

const backends = [
  { name: 'sqlite', target: (tag) => path.join(tmp, `${tag}.sqlite`) },
  { name: 'postgres', target: (tag) => `${PG}?schema=bench_serve_${tag}_${Date.now()}` },
].filter((b) => !only || only.includes(b.name));

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

/** The ledger called directly by CONNECTIONS concurrent lanes: operations per second and p99 latency. */
async function direct(ledger, op) {
  const lat = [];
  let n = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, lane) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const t = performance.now();
        await op(CUSTOMERS[lane % CUSTOMERS.length], `${lane}:${i}`);
        lat.push(performance.now() - t);
        n++;
      }
    }),
  );
  lat.sort((a, b) => a - b);
  return { perSec: Math.round(n / ((performance.now() - started) / 1000)), p99: pct(lat, 0.99) };
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startServe(db, port) {
  const child = spawn(process.execPath, [MAIN, '--db', db, 'serve', '--port', String(port), '--log-level', 'warn', '--rate-limit', '10000000', '--no-deliver'], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill();
  throw new Error('serve did not start');
}

async function cannon(opts) {
  const r = await autocannon({ connections: CONNECTIONS, duration: SECONDS, ...opts });
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${opts.title}: ${r.non2xx} non-2xx responses, ${r.errors} errors`);
  return { perSec: Math.round(r.requests.average), p99: r.latency.p99 };
}

const fmt = (r) => `${String(r.perSec).padStart(7)} /s  p99 ${r.p99.toFixed(2).padStart(7)} ms`;

console.log(`flowise-billing serve benchmark — ${os.cpus().length} cores, ${SECONDS}s per measurement, ${CONNECTIONS} concurrent clients, node ${process.version}`);
console.log('each row: the ledger called in-process (baseline) | the same operation through `serve` over HTTP (autocannon)\n');
for (const b of backends) {
  if (b.name === 'postgres') await ensurePgDatabaseOrExit(PG, { what: 'The serve benchmarks run against SQLite and PostgreSQL', skip: 'FB_BACKENDS=sqlite npm run bench' });
  // Baseline: the ledger in-process, on its own database.
  const ledger = await openLedger(b.target('direct'));
  for (const id of CUSTOMERS) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000_000n, idempotencyKey: `seed-${id}` });
  }
  const dRead = await direct(ledger, (id) => ledger.balance(id));
  const dTop = await direct(ledger, (id, k) => ledger.topUp({ customerId: id, amount: 1_000_000n, idempotencyKey: `d:${k}` }));
  await ledger.close();

  // serve, on a fresh database of the same backend.
  const db = b.target('serve');
  const seed = await openLedger(db);
  await migrateServer(seed.dialect);
  const { token } = await new ApiKeyStore(seed.dialect).create({ scope: 'write', name: 'bench' });
  for (const id of CUSTOMERS) {
    await seed.createCustomer({ id });
    await seed.topUp({ customerId: id, amount: 1_000_000_000n, idempotencyKey: `seed-${id}` });
  }
  await seed.close();
  const port = await freePort();
  const child = await startServe(db, port);
  const url = `http://127.0.0.1:${port}`;
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  try {
    let i = 0;
    const sRead = await cannon({
      title: 'balance',
      url,
      requests: [{ method: 'GET', headers, setupRequest: (req) => ({ ...req, path: `/v1/customers/${CUSTOMERS[i++ % CUSTOMERS.length]}/balance` }) }],
    });
    let j = 0;
    const sTop = await cannon({
      title: 'topup',
      url,
      requests: [
        {
          method: 'POST',
          body: JSON.stringify({ amountUsd: '0.001' }),
          setupRequest: (req) => {
            const n = j++;
            return { ...req, path: `/v1/customers/${CUSTOMERS[n % CUSTOMERS.length]}/topups`, headers: { ...headers, 'idempotency-key': `bench-${n}` } };
          },
        },
      ],
    });
    console.log(`${b.name}`);
    console.log(`  balance read   ledger ${fmt(dRead)}   |  serve ${fmt(sRead)}`);
    console.log(`  top-up         ledger ${fmt(dTop)}   |  serve ${fmt(sTop)}`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  const check = await openLedger(db);
  const inv = await check.checkInvariants();
  await check.close();
  if (!inv.ok) throw new Error(`invariants broken after bench: ${JSON.stringify(inv.violations.slice(0, 3))}`);
}
