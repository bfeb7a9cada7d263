import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { collectInvoices } from '../src/quota/collect';
import { openWithEvents } from '../src/webhooks/open';
import { BACKENDS } from './support/backends';
import { createKey, type ServeProcess, startServe } from './support/serve';

/**
 * The dashboard in a real Chromium against a real `serve`: sign in with a
 * read key, the customer list, a customer page with statement, charts,
 * alerts and invoices, sync status; screenshots land in docs/ for the README.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'];
// FB_UPDATE_SCREENSHOTS=1 refreshes the README's images; otherwise they go to a temp folder so a test run leaves the tree clean.
const README_SHOTS = process.env.FB_UPDATE_SCREENSHOTS ? path.resolve(__dirname, '..', 'docs', 'screenshots') : null;
const statement0 = (rows: string[]) => rows.map((r) => r.replace(/\s+/g, ' ')).join('\n');

describe.each(BACKENDS)('dashboard in Chromium on $name', (backend) => {
  // The README's images come from the SQLite run; the other backends' land in a temp folder.
  const SHOTS = (backend === BACKENDS[0] ? README_SHOTS : null) ?? fs.mkdtempSync(path.join(os.tmpdir(), 'fb-dashboard-'));
  let serve: ServeProcess;
  let browser: Browser;
  let readKey: string;

  beforeAll(async () => {
    const db = await backend.freshTarget();
    readKey = (await createKey(db, 'read')).token;
    // Seed through the library, as an operator's flows would: charges carry the flow and node in their metadata.
    const s = await openWithEvents(db, { actor: 'flowise' });
    try {
      const day = 86_400_000;
      for (const [id, name, usd] of [['acme', 'Acme Inc', '120'], ['globex', 'Globex', '15'], ['initech', 'Initech', '2.50']] as const) {
        await s.ledger.createCustomer({ id, name });
        await s.ledger.topUp({ customerId: id, amount: parseUsd(usd), idempotencyKey: `seed-pay-${id}` });
      }
      await s.quota.subscribe({ customerId: 'acme', planId: 'starter', at: new Date(Date.now() - 40 * day) });
      await s.quota.closeInvoice('acme');
      await collectInvoices(s.quota, 'acme');
      await s.quota.subscribe({ customerId: 'globex', planId: 'free' });
      for (let i = 0; i < 20; i++) await s.quota.admitRun({ customerId: 'globex', conversationId: `c${i}` });
      for (let i = 0; i < 6; i++) await s.quota.admitRun({ customerId: 'acme', conversationId: `a${i}` });
      const charges: Array<[string, string, string, string, string]> = [
        ['acme', 'Inference', '4', 'support-bot', 'llm_0'],
        ['acme', 'ObjectGenerator', '12000', 'support-bot', 'structured_1'],
        ['acme', 'PrivateFlowRun', '25', 'intake-flow', 'billingGate_0'],
        ['acme', 'Training', '30', 'fine-tune', 'trainer_0'],
        ['globex', 'Inference', '50', 'faq-bot', 'llm_0'],
      ];
      const prices: Record<string, string> = { Inference: '0.02', ObjectGenerator: '0.000025', PrivateFlowRun: '0.01', Training: '0.06' };
      let n = 0;
      for (const [customerId, chargeType, qty, chatflowId, nodeId] of charges) {
        const amount = parseUsd(prices[chargeType]!) * BigInt(qty);
        await s.ledger.charge({ customerId, amount, chargeType, quantity: qty, idempotencyKey: `seed-ch-${n++}`, metadata: { chatflowId, nodeId } });
      }
    } finally {
      await s.close();
    }
    serve = await startServe(db);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await serve?.stop();
  });

  it('asks for a key, refuses a wrong one, and keeps a read key in an HttpOnly cookie', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(serve.url);
    await expect(page.locator('form.login')).toBeTruthy();
    expect(await page.locator('h1').textContent()).toBe('Sign in');
    await page.fill('input[name=key]', 'fbk_nope');
    await page.click('button[type=submit]');
    expect(await page.locator('.err').textContent()).toMatch(/not valid/);
    await page.fill('input[name=key]', readKey);
    await page.click('button[type=submit]');
    await page.waitForSelector('table');
    expect(await page.evaluate('document.cookie')).toBe('');
    const cookie = (await page.context().cookies()).find((c) => c.name === 'fb_key')!;
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    await page.click('text=Sign out');
    expect(await page.locator('h1').textContent()).toBe('Sign in');
    await page.close();
  });

  it('lists customers with balance, available, plan and a usage bar; shows sync status', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(serve.url);
    await page.fill('input[name=key]', readKey);
    await page.click('button[type=submit]');
    const rows = (await page.locator('tbody tr').allTextContents()).map((r) => r.replace(/\s+/g, ' '));
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatch(/acme.*Acme Inc/);
    expect(rows[1]).toMatch(/globex ?Globex ?\$14\.00 ?\$14\.00 ?free.*20 \/ 25 sessions/);
    expect(rows[2]).toMatch(/initech.*\$2\.50/);
    expect(await page.locator('tbody tr').nth(1).locator('.bar i').getAttribute('style')).toBe('width:80.0%');
    expect(await page.locator('#stripe-status').textContent()).toMatch(/pending.*delivered.*failed/);
    expect(await page.locator('#webhook-status').textContent()).toMatch(/pending/);
    expect(await page.locator('#stripe-invoice-items').textContent()).toMatch(/0 pending.*0 delivered.*0 failed/);
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-customers.png') });

    await page.click('text=acme');
    await page.waitForSelector('#statement');
    const text = await page.locator('main').textContent();
    expect(text).toMatch(/Usage by ChargeType/);
    const charts = page.locator('svg[role=img]');
    expect(await charts.count()).toBe(2);
    const byType = await charts.nth(0).textContent();
    expect(byType).not.toMatch(/InvoiceCollection/);
    expect(statement0(await page.locator('#statement tbody tr').allTextContents())).toMatch(/InvoiceCollection ?−\$29\.00/);
    expect(byType).toMatch(/Training\$1\.80/);
    expect(byType).toMatch(/Inference\$0\.08/);
    const byFlow = await charts.nth(1).textContent();
    expect(byFlow).toMatch(/support-bot \/ llm_0\$0\.08/);
    expect(byFlow).toMatch(/intake-flow \/ billingGate_0\$0\.25/);
    const statement = await page.locator('#statement tbody tr').allTextContents();
    expect(statement.length).toBeGreaterThanOrEqual(6);
    expect(statement.map((r) => r.replace(/\s+/g, ' ')).join('\n')).toMatch(/topup ?\$120\.00/);
    expect(text).toMatch(/inv_[a-f0-9]+/);
    expect(text).toMatch(/credits \(statement\)/);
    expect(text).toMatch(/starter/);
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-customer.png'), fullPage: true });

    await page.goto(`${serve.url}/customers/globex`);
    expect(await page.locator('main').textContent()).toMatch(/sessions\s*75%\s*76\.00%/);
    await page.goto(`${serve.url}/customers/nobody`);
    expect(await page.locator('.err').textContent()).toMatch(/does not exist/);
    await ctx.close();
  });

  it('an oversized sign-in form is a 413 sign-in page naming the form\'s limit, not `serve --body-limit`; a bad form body is still the typed 400', async () => {
    const res = await fetch(`${serve.url}/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `key=${'a'.repeat(5000)}` });
    const text = await res.text();
    expect([res.status, res.headers.get('content-type')]).toEqual([413, 'text/html; charset=utf-8']);
    expect(text).toMatch(/at most 4096 bytes/);
    expect(text).not.toMatch(/65536|body-limit/);
    const bad = await fetch(`${serve.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    expect([bad.status, ((await bad.json()) as { error: { code: string } }).error.code]).toEqual([400, 'VALIDATION_ERROR']);
  });

  it('refuses the customer page without a key', async () => {
    const res = await fetch(`${serve.url}/customers/acme`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/');
  });
});
