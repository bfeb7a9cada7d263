// Outbox throughput: meter events a second delivered by the sync loop to the loopback Stripe double.
// Usage: npm run build && node bench/stripe.mjs [events=5000] [postgres-url]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { openLedger } = require(path.join(root, 'dist/src/ledger/open.js'));
const { configureOutbox, ensureMeter, ensureStripeCustomer } = require(path.join(root, 'dist/src/stripe/customers.js'));
const { createStripeClient } = require(path.join(root, 'dist/src/stripe/client.js'));
const { stripeSync } = require(path.join(root, 'dist/src/stripe/cli.js'));

/** The Stripe double is TypeScript (test/support); transpile it once into a temp CommonJS file. */
function loadStripeServer() {
  const ts = require('typescript');
  const src = fs.readFileSync(path.join(root, 'test/support/stripe-server.ts'), 'utf8');
  const out = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-')), 'stripe-server.cjs');
  fs.writeFileSync(file, out.outputText);
  return require(file);
}

const events = Number(process.argv[2] ?? 5000);
const pg = process.argv[3];
const { startStripeServer } = loadStripeServer();

async function run(label, syncOpts) {
  const server = await startStripeServer();
  const target = pg ? `${pg}?schema=t_bench_${Date.now()}` : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-')), 'ledger.sqlite');
  const ledger = await openLedger(target);
  const stripe = createStripeClient({ secretKey: server.secretKey, apiBase: server.url });
  await configureOutbox(ledger);
  await ensureMeter(stripe, 'flowise_billing_usage');
  const customers = Array.from({ length: 10 }, (_, i) => `bench${i}`);
  for (const id of customers) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000_000_000n, idempotencyKey: `seed:${id}` });
    await ensureStripeCustomer(ledger, stripe, id);
  }
  const t0 = performance.now();
  const chunk = 500;
  for (let i = 0; i < events; i += chunk) {
    await Promise.all(
      Array.from({ length: Math.min(chunk, events - i) }, (_, j) =>
        ledger.charge({ customerId: customers[(i + j) % customers.length], amount: 25_000n * BigInt(1 + ((i + j) % 100)), idempotencyKey: `b${i + j}` }),
      ),
    );
  }
  const chargeMs = performance.now() - t0;
  const t1 = performance.now();
  const status = await stripeSync(ledger, { stripe, ...syncOpts });
  const syncMs = performance.now() - t1;
  const requests = server.requests.filter((r) => r.path === '/v1/billing/meter_events').length;
  console.log(
    `${label.padEnd(34)} ${events} charges (with outbox rows) in ${chargeMs.toFixed(0)} ms = ${Math.round(events / (chargeMs / 1000))}/s; ` +
      `delivered ${status.delivered} in ${syncMs.toFixed(0)} ms = ${Math.round(status.delivered / (syncMs / 1000))} events/s (${requests} requests)`,
  );
  await ledger.close();
  await server.close();
}

console.log(`stripe outbox bench on ${pg ? 'postgres' : 'sqlite'} (loopback Stripe double, real stripe SDK)`);
await run('one request per event, 16 parallel', { concurrency: 16, ratePerSecond: 1_000_000, batchSize: 500 });
await run('rate-limited to 1,000 req/s', { concurrency: 16, ratePerSecond: 1000, batchSize: 500 });
process.exit(0);
