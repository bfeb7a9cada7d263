// Meter-event delivery throughput against the loopback Stripe double (real stripe SDK, real ledger):
// rows a second for one heavy customer and for 20 customers, with Stripe's "one concurrent call per
// customer and meter" rule enforced by the double and without it, next to Stripe's documented
// live-mode limit of 1,000 meter events a second. Each meter-event call takes LATENCY ms at the double.
// Usage: npm run build && node bench/stripe.mjs [rows=2000] [latencyMs=5] [postgres-url]
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

/** The Stripe double is TypeScript (test/support); transpile it and the loopback helper it requires into a temp dir. */
function loadStripeServer() {
  const ts = require('typescript');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-'));
  for (const name of ['stripe-server', 'loopback']) {
    const src = fs.readFileSync(path.join(root, 'test/support', `${name}.ts`), 'utf8');
    const out = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
    // .js in a folder without package.json is CommonJS, and `require('./loopback')` resolves it.
    fs.writeFileSync(path.join(dir, `${name}.js`), out.outputText);
  }
  return require(path.join(dir, 'stripe-server.js'));
}

const rows = Number(process.argv[2] ?? 2000);
const latency = Number(process.argv[3] ?? 5);
const pg = process.argv[4];
const LIVE_LIMIT = 1000; // https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits
const { startStripeServer } = loadStripeServer();

async function run(customerCount, enforced) {
  const server = await startStripeServer({ meterEventLatencyMs: latency, oneCallPerCustomerMeter: enforced });
  const target = pg ? `${pg}?schema=t_bench_${Date.now()}` : path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-')), 'ledger.sqlite');
  const ledger = await openLedger(target);
  const stripe = createStripeClient({ secretKey: server.secretKey, apiBase: server.url });
  await configureOutbox(ledger);
  await ensureMeter(stripe, 'flowise_billing_usage');
  const customers = Array.from({ length: customerCount }, (_, i) => `bench${i}`);
  for (const id of customers) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000_000_000n, idempotencyKey: `seed:${id}` });
    await ensureStripeCustomer(ledger, stripe, id);
  }
  for (let i = 0; i < rows; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, rows - i) }, (_, j) =>
        ledger.charge({ customerId: customers[(i + j) % customers.length], amount: 25_000n * BigInt(1 + ((i + j) % 100)), idempotencyKey: `b${i + j}` }),
      ),
    );
  }
  const t0 = performance.now();
  // Live-mode settings: the rate limit at Stripe's documented meter-event limit, 16 customers at a time.
  const status = await stripeSync(ledger, { stripe, ratePerSecond: LIVE_LIMIT, concurrency: 16 });
  const ms = performance.now() - t0;
  const posts = server.requests.filter((r) => r.path === '/v1/billing/meter_events');
  const limited = posts.filter((r) => r.status === 429).length;
  await ledger.close();
  await server.close();
  return { perSecond: status.delivered / (ms / 1000), delivered: status.delivered, requests: posts.length, limited, maxPerCustomer: server.maxMeterCallsPerCustomerMeter };
}

/** The ceiling measured in the same run: bare SDK calls, no ledger, one at a time per customer, `lanes` customers at once. */
async function bare(customerCount, lanes, calls) {
  const server = await startStripeServer({ meterEventLatencyMs: latency });
  const stripe = createStripeClient({ secretKey: server.secretKey, apiBase: server.url });
  const ids = [];
  for (let i = 0; i < customerCount; i++) ids.push((await stripe.customers.create()).id);
  // Warm-up (JIT, sockets), not timed.
  for (let i = 0; i < 50; i++) await stripe.billing.meterEvents.create({ event_name: 'bare', identifier: `warm_${i}`, payload: { stripe_customer_id: ids[0], value: '1' } });
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(lanes, customerCount) }, async (_, lane) => {
      for (let n = next++; n < calls; n = next++) {
        await stripe.billing.meterEvents.create({ event_name: 'bare', identifier: `bare_${n}`, payload: { stripe_customer_id: ids[lane], value: '1' } });
      }
    }),
  );
  const perSecond = calls / ((performance.now() - t0) / 1000);
  await server.close();
  return perSecond;
}

console.log(`stripe meter-event delivery on ${pg ? 'postgres' : 'sqlite'}: ${rows} rows, ${latency} ms per meter-event call at the loopback Stripe double`);
console.log(`baseline: Stripe's documented live-mode limit, ${LIVE_LIMIT} meter events/s per account (and one call at a time per customer and meter)`);
for (const customers of [1, 20]) {
  const ceiling = await bare(customers, 16, Math.min(rows, 1000));
  console.log(`${(customers === 1 ? 'one heavy customer' : '20 customers') + ', bare SDK calls'}`.padEnd(34) + ` ${String(Math.round(ceiling)).padStart(5)} calls/s (no ledger: the ceiling on this machine)`);
  for (const enforced of [true, false]) {
    const r = await run(customers, enforced);
    const label = `${customers === 1 ? 'one heavy customer' : '20 customers'}, rule ${enforced ? 'enforced' : 'off'}`;
    console.log(
      `${label.padEnd(34)} ${String(Math.round(r.perSecond)).padStart(5)} rows/s = ${(r.perSecond / LIVE_LIMIT).toFixed(2)}× the live limit, ${(r.perSecond / ceiling).toFixed(2)}× bare calls` +
        `  (${r.delivered} delivered, ${r.requests} requests, ${r.limited} × 429, at most ${r.maxPerCustomer} in flight per customer)`,
    );
  }
}
console.log(`one customer and meter is bounded by 1 / call latency (${Math.round(1000 / latency)}/s here); against the real API use --aggregate-seconds for heavy customers`);
process.exit(0);
