/**
 * Outbound webhooks raised inside real Flowise predictions, registered inside
 * flowise.e2e.test.ts so they share its one Flowise start: an endpoint
 * registered through `serve`'s API on the ledger the plugin uses, predictions
 * that cross a session threshold and the low-balance threshold and then get
 * refused, and a loopback receiver that verifies every delivery with the
 * `standardwebhooks` library. `serve` runs as its own process and delivers;
 * the events are written by the plugin inside Flowise.
 */
import { expect } from 'vitest';
import type { SqlLedger } from '../../src/ledger/sql-ledger';
import { formatUsd, parseUsd } from '../../src/money';
import { DEFAULT_REFUSAL_MESSAGES } from '../../src/plugin/guard';
import type { QuotaService } from '../../src/quota/service';
import { eventId } from '../../src/webhooks/events';
import { client, createKey, type ServeProcess, startServe } from '../support/serve';
import { Receiver, until } from '../support/webhook-receiver';

export interface AlertScenarioContext {
  readonly e2e: (name: string, fn: () => Promise<void>, timeout?: number) => void;
  readonly step: (msg: string) => void;
  /** The SQLite file the Billing Ledger credential names. */
  readonly ledgerPath: () => string;
  readonly ledger: () => SqlLedger;
  readonly quota: () => QuotaService;
  /** The example chatflow: Quota Guard (fee PrivateFlowRun, minimum $0.01) → metered chain. */
  readonly chatflowId: () => string;
  readonly predict: (flowId: string, customerId: string, question: string, chatId: string) => Promise<{ status: number; data: any }>;
}

/** Longer than the plugin's cache of low-balance thresholds (5 s), so Flowise sees the one just set. */
const THRESHOLD_CACHE_MS = 5_500;

export function registerAlertScenarios(c: AlertScenarioContext): void {
  c.e2e('webhooks from inside Flowise: predictions raise usage.threshold, balance.low and run.refused; serve (another process) delivers them signed, each id once', async () => {
    const receiver = new Receiver();
    let serve: ServeProcess | undefined;
    await receiver.up();
    try {
      const db = c.ledgerPath();
      const token = (await createKey(db, 'admin')).token;
      serve = await startServe(db, ['--webhook-poll', '100', '--webhook-retry-base', '200']);
      const api = client(serve.url, token);
      const ep = await api('POST', '/v1/webhooks/endpoints', { key: 'e2e-hooks', body: { url: receiver.url, events: ['*'] } });
      expect(ep.status, ep.text).toBe(201);
      receiver.secret = ep.json.secret;

      // A plan of two sessions that alerts at 50 %; $0.03 of credit, low-balance threshold $0.025.
      await c.quota().createPlan({ id: 'two-sessions', name: 'Two sessions', basePriceUsd: '0', sessionsIncluded: 2, managedModels: true, alertThresholds: [50] });
      expect((await api('POST', '/v1/customers', { key: 'e2e-hooked', body: { id: 'hooked' } })).status).toBe(201);
      const patched = await api('PATCH', '/v1/customers/hooked', { key: 'e2e-hooked-settings', body: { planId: 'two-sessions', lowBalanceThresholdUsd: '0.025' } });
      expect(patched.status, patched.text).toBe(200);
      const topUp = await api('POST', '/v1/customers/hooked/topups', { key: 'e2e-hooked-pay', body: { amountUsd: '0.03' } });
      expect(topUp.status, topUp.text).toBe(201);
      await new Promise((r) => setTimeout(r, THRESHOLD_CACHE_MS));

      // 1: answered; its session is 1 of 2 (50 %) and its fee and tokens take the balance from $0.03 below $0.025.
      const first = await c.predict(c.chatflowId(), 'hooked', 'raise my alerts', 'hooked-a');
      expect(first.status, JSON.stringify(first.data).slice(0, 300)).toBe(200);
      expect(first.data.text).toBe('echo: raise my alerts');
      // 2: the Quota Guard's check finds less than the fee plus the minimum: refused, answered with the message.
      const second = await c.predict(c.chatflowId(), 'hooked', 'and now?', 'hooked-a');
      expect(second.status).toBe(200);
      expect(second.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);

      const mine = () => receiver.got.filter((g) => g.body.data?.customerId === 'hooked');
      await until('four events for hooked', () => mine().length >= 4, 30_000);
      await new Promise((r) => setTimeout(r, 1_000)); // nothing more, nothing twice
      const got = mine();
      expect(got.map((g) => g.type).sort()).toEqual(['balance.low', 'run.refused', 'topup.succeeded', 'usage.threshold']);
      expect(got.every((g) => g.verified)).toBe(true);
      expect(new Set(receiver.got.map((g) => g.id)).size).toBe(receiver.got.length);
      const by = Object.fromEntries(got.map((g) => [g.type, g]));

      // Stable ids, derived from each cause (so a retried cause or a redelivery carries the same webhook-id).
      expect(by['topup.succeeded']!.id).toBe(eventId('topup.succeeded', topUp.json.id));
      const alert = by['usage.threshold']!.body.data;
      expect(alert).toMatchObject({ metric: 'sessions', threshold: 50, percentage: '50.00' });
      expect(by['usage.threshold']!.id).toBe(eventId('usage.threshold', 'hooked', alert.periodStart, 50));
      const low = by['balance.low']!.body.data;
      expect(low.thresholdUsd).toBe('0.025');
      // The charge that crossed is the prediction's (settled inside Flowise), not something the test or serve did.
      const crossing = (await c.ledger().statement('hooked')).find((e) => e.chargeId === low.chargeId || e.id === low.chargeId);
      expect(crossing, `a ledger entry for charge ${low.chargeId}`).toBeDefined();
      expect(crossing!.balanceAfter < parseUsd('0.025') && crossing!.balanceAfter + -crossing!.amount >= parseUsd('0.025')).toBe(true);
      expect(low.balanceUsd).toBe(formatUsd(crossing!.balanceAfter));
      expect(by['balance.low']!.id).toBe(eventId('balance.low', low.chargeId));
      const refused = by['run.refused']!.body.data;
      expect(refused).toMatchObject({ reason: 'INSUFFICIENT_FUNDS', error: { code: 'INSUFFICIENT_FUNDS' } });
      expect(by['run.refused']!.id).toBe(eventId('run.refused', refused.runKey, 'INSUFFICIENT_FUNDS'));
      for (const g of got) expect(g.body.data.id).toBe(g.id);

      // The outbox agrees: every event of the customer delivered, none pending or failed.
      const stored = (await api('GET', '/v1/webhooks/events?customerId=hooked&limit=50')).json.data as Array<{ id: string }>;
      expect(stored.map((e) => e.id).sort()).toEqual(got.map((g) => g.id).sort());
      expect((await api('GET', '/v1/webhooks/status')).json).toMatchObject({ pending: 0, failed: 0 });
      c.step(`webhooks from Flowise: ${got.map((g) => `${g.type} ${g.id}`).join(', ')}`);
    } finally {
      await serve?.stop();
      await receiver.down();
    }
  }, 120_000);
}
