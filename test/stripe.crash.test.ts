import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { stripeReconcile } from '../src/stripe/cli';
import { BACKENDS } from './support/backends';
import { spawnWorker } from './support/processes';
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
});
