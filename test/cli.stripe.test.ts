import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger } from '../src/ledger/open';
import { QuotaService } from '../src/quota/service';
import { signPayload, startStripeServer, type StripeTestServer } from './support/stripe-server';

/** `flowise-billing stripe …` and `webhooks serve` as real subprocesses against the loopback Stripe server. */
const ROOT = path.resolve(__dirname, '..');
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-cli-stripe-'));
let server: StripeTestServer;

beforeAll(async () => {
  server = await startStripeServer({ webhookSecret: 'whsec_cli_test' });
});
afterAll(async () => {
  await server.close();
});

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url };
  delete e.FLOWISE_BILLING_DB;
  return e;
}

function cli(db: string, args: string[]): Promise<{ code: number | null; out: Record<string, any> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, '--db', db, ...args, '--json'], { cwd: ROOT, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out: JSON.parse(stdout) }));
  });
}

function plain(db: string, args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, '--db', db, ...args], { cwd: ROOT, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout }));
  });
}

describe('stripe CLI', () => {
  it('setup, customer, charge, sync --once, status, reconcile; refunds correct the usage', async () => {
    const db = path.join(tmp, 'stripe.sqlite');
    const setup = await cli(db, ['stripe', 'setup']);
    expect(setup.out.outbox, JSON.stringify(setup.out)).toMatchObject({ enabled: true });
    await cli(db, ['customers', 'create', 'acme']);
    const linked = await cli(db, ['stripe', 'customer', 'acme']);
    expect(linked.out.stripeCustomerId).toMatch(/^cus_/);
    await cli(db, ['topup', 'acme', '10']);
    const c1 = (await cli(db, ['charge', 'acme', 'Inference', '4'])).out;
    await cli(db, ['charge', 'acme', 'Training', '120']);
    expect((await cli(db, ['stripe', 'status'])).out).toMatchObject({ pending: 2, delivered: 0 });
    const sync = await cli(db, ['stripe', 'sync', '--once']);
    expect(sync.out).toMatchObject({ deliveredNow: 2, pending: 0, failed: 0 });
    expect(server.meterEvents().map((e) => e.payload.value).sort()).toEqual(['7200000', '80000']);
    await cli(db, ['refund', c1.chargeId, '0.02']);
    await cli(db, ['stripe', 'sync', '--once']);
    const rec = await cli(db, ['stripe', 'reconcile']);
    expect(rec.code).toBe(0);
    expect(rec.out.ok).toBe(true);
    expect(rec.out.lines[0]).toMatchObject({ customerId: 'acme', ledgerUnits: '7260000', difference: '0' });
  });

  it('setup --invoice-items, invoice close queues the period as Stripe invoice items, sync --once delivers them once, status shows them', async () => {
    const db = path.join(tmp, 'stripe-invoices.sqlite');
    const setup = await cli(db, ['stripe', 'setup', '--invoice-items']);
    expect(setup.out.invoiceItems).toEqual({ enabled: true });
    await cli(db, ['customers', 'create', 'inv-co']);
    // A subscription that started 40 days ago, so a period has ended.
    const ledger = await openLedger(db);
    try {
      await new QuotaService(ledger).subscribe({ customerId: 'inv-co', planId: 'starter', at: new Date(Date.now() - 40 * 86_400_000) });
    } finally {
      await ledger.close();
    }
    const before = server.invoiceItems.length;
    const closed = await cli(db, ['invoice', 'close', 'inv-co']);
    expect(closed.code).toBe(0);
    expect(closed.out.collections[0]).toMatchObject({ method: 'stripe', status: 'invoiced', items: [{ kind: 'base', status: 'pending' }] });
    const base = closed.out.collections[0].items[0].amountUsd as string;
    expect((await cli(db, ['invoice', 'close', 'inv-co'])).out.collections).toHaveLength(1);
    expect((await cli(db, ['stripe', 'status'])).out.invoiceItems).toMatchObject({ pending: 1, delivered: 0 });
    const sync = await cli(db, ['stripe', 'sync', '--once']);
    expect(sync.out.invoiceItems).toMatchObject({ pending: 0, delivered: 1, failed: 0 });
    await cli(db, ['stripe', 'sync', '--once']);
    const items = server.invoiceItems.slice(before);
    expect(items).toHaveLength(1);
    expect(items[0]).toMatchObject({ amount: Math.round(Number(base) * 100), currency: 'usd', metadata: { flowise_billing_customer_id: 'inv-co', flowise_billing_item: 'base' } });
    expect((await cli(db, ['balance', 'inv-co'])).out).toMatchObject({ balanceUsd: '0.00' });
  });

  it('exit codes come from one place: reconcile exits 1 on a difference and 0 without; doctor exits 1 on problems', async () => {
    // Its own customer id: the Stripe double is shared by this file, and customer creation is idempotent by ledger id.
    const db = path.join(tmp, 'exit.sqlite');
    await cli(db, ['stripe', 'setup']);
    await cli(db, ['customers', 'create', 'exitco']);
    await cli(db, ['stripe', 'customer', 'exitco']);
    await cli(db, ['topup', 'exitco', '10']);
    await cli(db, ['charge', 'exitco', 'Inference', '4']);
    expect((await cli(db, ['stripe', 'sync', '--once'])).code).toBe(0);
    const ok = await cli(db, ['stripe', 'reconcile', '--settle', '0']);
    expect([ok.code, ok.out.ok], JSON.stringify(ok.out)).toEqual([0, true]);
    // A charge whose event never reaches Stripe: a difference.
    await cli(db, ['charge', 'exitco', 'Inference', '1']);
    const diff = await cli(db, ['stripe', 'reconcile', '--settle', '1']);
    expect([diff.code, diff.out.ok, diff.out.differences.length]).toEqual([1, false, 1]);
    expect(diff.out.differences[0]).toMatchObject({ customerId: 'exitco', difference: '-20000', pendingEvents: 1 });
    const human = await plain(db, ['stripe', 'reconcile', '--settle', '0']);
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/1 difference/);
    // Delivered: no difference, exit 0 again.
    await cli(db, ['stripe', 'sync', '--once']);
    expect((await cli(db, ['stripe', 'reconcile', '--settle', '0'])).code).toBe(0);
    const doctor = await plain(db, ['doctor', '--flowise', path.join(tmp, 'no-flowise-here')]);
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(/FLOWISE_NOT_FOUND/);
  });

  it('sync options are validated; a bad value is a usage-free VALIDATION_ERROR with exit 1', async () => {
    const db = path.join(tmp, 'opts.sqlite');
    const r = await cli(db, ['stripe', 'sync', '--once', '--concurrency', '0']);
    expect(r.code).toBe(1);
    expect(r.out.error.code).toBe('VALIDATION_ERROR');
  });

  it('errors are one JSON object with a stable code', async () => {
    const db = path.join(tmp, 'bad.sqlite');
    const child = spawn(process.execPath, [MAIN, '--db', db, 'stripe', 'setup', '--json'], { cwd: ROOT, env: { ...env(), STRIPE_SECRET_KEY: 'sk_test_wrong' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(1);
    expect(JSON.parse(stdout).error.code).toMatch(/^STRIPE_(AUTH_FAILED|REQUEST_REJECTED)$/);
  });

  it('webhooks serve verifies signatures: a bad one gets 400, a good one is applied once', async () => {
    const db = path.join(tmp, 'hooks.sqlite');
    await cli(db, ['customers', 'create', 'acme']);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const child = spawn(process.execPath, [MAIN, '--db', db, 'webhooks', 'serve', '--port', String(port), '--webhook-secret', 'whsec_cli_test'], {
      cwd: ROOT,
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    for (let i = 0; i < 100 && !out.includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
    const url = `http://127.0.0.1:${port}/stripe/webhooks`;
    const body = JSON.stringify({ id: 'evt_unknown_1', object: 'event', type: 'some.unknown_event', data: { object: {} }, created: Math.floor(Date.now() / 1000) });
    const bad = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', 'stripe-signature': signPayload(body, 'whsec_wrong') } });
    expect(bad.status).toBe(400);
    const good = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', 'stripe-signature': signPayload(body, 'whsec_cli_test') } });
    expect(good.status).toBe(200);
    child.kill('SIGTERM');
    await new Promise((r) => child.on('close', r));
  });
});
