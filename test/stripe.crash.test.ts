import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { stripeReconcile } from '../src/stripe/cli';
import { BACKENDS } from './support/backends';
import { ROOT, spawnWorker } from './support/processes';
import { eventsByIdentifier, outboxRows, stripeLedger } from './support/stripe-fixture';
import { startStripeServer, type StripeTestServer } from './support/stripe-server';

describe.each(BACKENDS)('stripe sync worker crash safety on $name', (backend) => {
  let server: StripeTestServer;
  beforeEach(async () => {
    server = await startStripeServer();
  });
  afterEach(async () => {
    expect(server.internalErrors).toEqual([]);
    await server.close();
  });

  it('SIGKILL mid-batch, twice, then restart: every event reaches Stripe exactly once and reconcile shows zero difference', async () => {
    const customers = ['acme', 'beta', 'gamma'];
    const { ledger, target, stripe } = await stripeLedger(backend, server, { customers });
    const charges = await Promise.all(
      Array.from({ length: 450 }, (_, i) => ledger.charge({ customerId: customers[i % 3]!, amount: parseUsd('0.01') + BigInt(i * 7_000), idempotencyKey: `k${i}` })),
    );
    for (let i = 0; i < 15; i++) await ledger.refund({ chargeId: charges[i * 10]!.id, amount: 3_000_000n, idempotencyKey: `rf${i}` });
    const total = (await outboxRows(ledger)).length;
    expect(total).toBe(465);
    // Some requests are processed by Stripe but the answer is lost, as in a crash right after sending.
    server.injectFaults({ kind: 'reset', count: 10, path: '/v1/billing/meter_events', afterProcessing: true });

    for (const killAt of [60, 200]) {
      const w = spawnWorker('stripe-sync-worker.cjs', [target, server.url, server.secretKey, '300']);
      await w.ready;
      const deadline = Date.now() + 30_000;
      while (server.meterEvents().length < killAt && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      w.child.kill('SIGKILL');
      await w.result.catch(() => undefined);
      expect(w.child.signalCode).toBe('SIGKILL');
    }
    const midway = server.meterEvents().length;
    expect(midway).toBeGreaterThanOrEqual(200);
    expect(midway).toBeLessThan(total);

    const w = spawnWorker('stripe-sync-worker.cjs', [target, server.url, server.secretKey, '2000']);
    const last = JSON.parse(await w.result) as { pending: number; delivered: number; failed: number };
    expect(last).toMatchObject({ pending: 0, delivered: total, failed: 0 });

    const atStripe = eventsByIdentifier(server); // throws on any duplicate identifier
    const rows = await outboxRows(ledger);
    expect(atStripe.size).toBe(rows.length);
    for (const r of rows) expect(atStripe.get(r.id)).toBe(r.value);
    const report = await stripeReconcile(ledger, { stripe, period: '2000-01-01T00:00:00Z..2100-01-01T00:00:00Z' });
    expect(report.lines).toHaveLength(3);
    expect(report.differences).toEqual([]);
    await ledger.close();
  });

  it('kill -9 of the real `stripe sync --watch` under 429s, saved 500s and lost answers, twice: every row once, money equal per customer, reconcile exit 0', async () => {
    await server.close();
    // Stripe's rules on: one call per customer and meter (with a little processing time), saved 500s.
    server = await startStripeServer({ meterEventLatencyMs: 2 });
    const customers = Array.from({ length: 20 }, (_, i) => `cust${i}`);
    const { ledger, target } = await stripeLedger(backend, server, { customers });
    const charges = await Promise.all(
      Array.from({ length: 600 }, (_, i) => ledger.charge({ customerId: customers[i % 20]!, amount: 10_001_234n + BigInt(i * 7_919), idempotencyKey: `w${i}` })),
    );
    for (let i = 0; i < 30; i++) await ledger.refund({ chargeId: charges[i * 20]!.id, amount: 3_333_333n, idempotencyKey: `wr${i}` });
    const total = (await outboxRows(ledger)).length;
    const path_ = '/v1/billing/meter_events';
    // Spread over the run (an outage is the recovery test's subject): 429s, saved 500s before and after recording, lost answers.
    server.injectFaults({ kind: 'rate_limit', count: 40, path: path_, every: 7 });
    server.injectFaults({ kind: 'server_error', count: 15, path: path_, every: 11 });
    server.injectFaults({ kind: 'server_error', count: 15, path: path_, afterProcessing: true, every: 13 });
    server.injectFaults({ kind: 'reset', count: 20, path: path_, afterProcessing: true, every: 17 });

    const main = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
    const env: NodeJS.ProcessEnv = { ...process.env, STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url };
    delete env.FLOWISE_BILLING_DB;
    const sync = (mode: string) =>
      spawn(process.execPath, [main, '--db', target, 'stripe', 'sync', mode, '--lease-seconds', '2', '--rate', '2000', '--concurrency', '8', '--json'], {
        cwd: ROOT, env, stdio: ['ignore', 'pipe', 'ignore'], // progress lines (stderr under --json) are not read
      });
    for (const killAt of [120, 350]) {
      const child = sync('--watch');
      child.stdout.resume();
      const exited = new Promise((r) => child.on('close', r));
      const deadline = Date.now() + 60_000;
      while (server.meterEvents().length < killAt && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      child.kill('SIGKILL');
      await exited;
      expect(child.signalCode).toBe('SIGKILL');
    }
    const midway = server.meterEvents().length;
    expect(midway).toBeGreaterThanOrEqual(350);
    expect(midway).toBeLessThan(total);

    const last = sync('--once');
    let out = '';
    last.stdout.on('data', (d) => (out += d));
    const code = await new Promise((r) => last.on('close', r));
    expect(code, out).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ pending: 0, delivered: total, failed: 0 });

    const atStripe = eventsByIdentifier(server); // throws on any duplicate identifier
    const rows = await outboxRows(ledger);
    expect(atStripe.size).toBe(rows.length);
    for (const r of rows) expect(atStripe.get(r.id)).toBe(r.value);
    const stripeIds = new Map((await ledger.dialect.read((c) => c.query('SELECT * FROM billing_stripe_customers'))).map((r) => [String(r.customer_id), String(r.stripe_customer_id)]));
    for (const id of customers) {
      const net = parseUsd('1000') - (await ledger.balance(id)).balance;
      const sum = server.meterEvents().filter((e) => e.customer === stripeIds.get(id)).reduce((s, e) => s + BigInt(e.value), 0n);
      expect(sum, id).toBe(net / 1000n); // Stripe's sum = the ledger's net floored to the micro-dollar
    }
    expect(server.maxMeterCallsPerCustomerMeter).toBe(1);

    const rec = spawn(process.execPath, [main, '--db', target, 'stripe', 'reconcile', '--period', '2000-01-01T00:00:00Z..2100-01-01T00:00:00Z', '--settle', '0', '--json'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'ignore'] });
    let recOut = '';
    rec.stdout.on('data', (d) => (recOut += d));
    expect(await new Promise((r) => rec.on('close', r)), recOut).toBe(0);
    expect(JSON.parse(recOut)).toMatchObject({ ok: true });
    await ledger.close();
  });
});
