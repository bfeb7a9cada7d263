import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { WebhookDeliverer } from '../src/webhooks/deliver';
import { openWithEvents, type OpenedServices } from '../src/webhooks/open';
import { BACKENDS } from './support/backends';
import { cli, client, startServe } from './support/serve';

const HOUR_MS = 3600_000;

/** A URL on loopback where nothing listens (a receiver that is down). */
async function downUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/hooks`;
}

async function topUp(s: OpenedServices, id: string): Promise<void> {
  await s.ledger.createCustomer({ id });
  await s.ledger.topUp({ customerId: id, amount: parseUsd('5'), idempotencyKey: `pay-${id}` });
}

/**
 * Endpoint `off` was down for an hour (2 deliveries retrying) and its operator then disabled it; endpoint `on`
 * has one fresh delivery waiting. Returns the two endpoint ids.
 */
async function disabledWithBacklog(s: OpenedServices): Promise<{ off: string; on: string }> {
  const off = (await s.webhooks.createEndpoint({ url: await downUrl() })).id;
  await topUp(s, 'st-1');
  await topUp(s, 'st-2');
  expect(await new WebhookDeliverer(s.ledger.dialect).deliverDue()).toMatchObject({ attempted: 2, retrying: 2 });
  await s.ledger.dialect.writeTransaction((c) => c.run('UPDATE billing_webhook_deliveries SET created_at = created_at - ? WHERE endpoint_id = ?', [HOUR_MS, off]));
  await s.webhooks.updateEndpoint(off, { enabled: false });
  const on = (await s.webhooks.createEndpoint({ url: await downUrl(), events: ['topup.succeeded'] })).id;
  await topUp(s, 'st-3'); // owed to `on` only: a disabled endpoint is not queued new events
  return { off, on };
}

describe.each(BACKENDS)('webhook status: the lag counts endpoints that will deliver, on $name', (backend) => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((o) => o.close()));
  });

  it('a disabled endpoint’s deliveries are paused, shown per endpoint, and neither pending nor lag; enabling it brings them back', async () => {
    const s = await openWithEvents(await backend.freshTarget());
    open.push(s);
    const { off, on } = await disabledWithBacklog(s);
    const status = await s.webhooks.deliveryCounts();
    // Before: pending 3 and a lag of an hour, for an outbox that was sending everything it could.
    expect(status).toMatchObject({ pending: 1, paused: 2, pausedByEndpoint: [{ endpointId: off, pending: 2 }], failed: 0, delivered: 0 });
    expect(status.oldestPendingMs).toBeLessThan(60_000);
    // Why the paused ones failed is still listed.
    expect(status.lastErrors.map((e) => e.endpointId)).toEqual([off, off]);

    await s.webhooks.updateEndpoint(off, { enabled: true });
    const resumed = await s.webhooks.deliveryCounts();
    expect(resumed).toMatchObject({ pending: 3, paused: 0, pausedByEndpoint: [] });
    expect(resumed.oldestPendingMs).toBeGreaterThanOrEqual(HOUR_MS);
    await s.webhooks.deleteEndpoint(off);
    await s.webhooks.deleteEndpoint(on);
    expect(await s.webhooks.deliveryCounts()).toMatchObject({ pending: 0, paused: 0, oldestPendingMs: 0 });
  });
});

describe.each(BACKENDS)('re-enabling an endpoint on $name', (backend) => {
  it('makes its held deliveries due now, not when their backoff from the outage ends (up to an hour later)', async () => {
    const s = await openWithEvents(await backend.freshTarget());
    try {
      const receiver = http.createServer((req, res) => req.resume().on('end', () => res.writeHead(204).end()));
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
      try {
        // The receiver was down: both deliveries failed once and wait out an hour's backoff.
        const ep = (await s.webhooks.createEndpoint({ url: await downUrl() })).id;
        await topUp(s, 're-1');
        await topUp(s, 're-2');
        const d = new WebhookDeliverer(s.ledger.dialect, { retry: { baseMs: HOUR_MS, maxMs: HOUR_MS, maxAttempts: 20 }, random: () => 1 });
        expect(await d.deliverDue()).toMatchObject({ attempted: 2, retrying: 2 });
        // The operator disables it, fixes the receiver (here: points it at one that answers), and enables it again.
        await s.webhooks.updateEndpoint(ep, { enabled: false });
        await s.webhooks.updateEndpoint(ep, { url });
        expect(await d.deliverDue()).toMatchObject({ attempted: 0 });
        await s.webhooks.updateEndpoint(ep, { enabled: true });
        // Measured before: attempted 0, the deliveries due in an hour.
        expect(await d.deliverDue()).toMatchObject({ attempted: 2, delivered: 2 });
        // Enabling an endpoint that was enabled moves nothing.
        await topUp(s, 're-3');
        await s.ledger.dialect.writeTransaction((c) => c.run("UPDATE billing_webhook_deliveries SET next_attempt_at = next_attempt_at + ? WHERE status = 'pending'", [HOUR_MS]));
        await s.webhooks.updateEndpoint(ep, { enabled: true });
        expect(await d.deliverDue()).toMatchObject({ attempted: 0 });
      } finally {
        receiver.closeAllConnections();
        await new Promise<void>((resolve) => receiver.close(() => resolve()));
      }
    } finally {
      await s.close();
    }
  });
});

describe('webhook status in endpoints status and /metrics', () => {
  it('shows the paused deliveries apart; the lag gauge leaves them out', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    const s = await openWithEvents(db);
    let off: string;
    try {
      ({ off } = await disabledWithBacklog(s));
    } finally {
      await s.close();
    }
    const human = await cli(['--db', db, 'endpoints', 'status']);
    expect(human.stdout).toMatch(/paused \(disabled endpoints\)\s+2/);
    expect(human.stdout).toContain(`paused for ${off}`);
    const serve = await startServe(db, ['--no-deliver']);
    try {
      const m = (await client(serve.url)('GET', '/metrics')).text;
      expect(m).toMatch(/^flowise_billing_webhook_outbox_pending 1$/m);
      expect(m).toMatch(/^flowise_billing_webhook_outbox_paused 2$/m);
      const lag = Number(/^flowise_billing_webhook_outbox_lag_seconds (\S+)$/m.exec(m)?.[1]);
      expect(lag).toBeLessThan(60);
    } finally {
      await serve.stop();
    }
  });
});
