import { createHash } from 'node:crypto';
import { BillingError } from '../errors';
import type { Dialect, SqlConnection } from '../ledger/dialect';
import type { BatchOutcome, Charge, TopUp } from '../ledger/types';
import { formatUsd, type Nanos } from '../money';
import type { QuotaEvent } from '../quota/service';

/** The closed set of outbound event types; endpoints subscribe to some of them (or "*"). */
export const EVENT_TYPES = ['usage.threshold', 'budget.threshold', 'balance.low', 'run.refused', 'invoice.closed', 'topup.succeeded', 'recharge.failed'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** An event as a receiver gets it (the Standard Webhooks payload shape: type, timestamp, data). */
export interface WebhookEvent {
  readonly id: string;
  readonly type: EventType;
  readonly customerId: string | null;
  readonly timestamp: string;
  readonly data: Record<string, unknown>;
}

/**
 * Event ids are derived from the cause (the top-up id, the charge id, the
 * refused request's idempotency key, the alert's period and threshold), never
 * random: the cause replayed or retried yields the same id, which the unique
 * index turns into no new row, and receivers can dedupe by `webhook-id`.
 */
export function eventId(type: EventType, ...cause: readonly (string | number)[]): string {
  const h = createHash('sha256').update([type, ...cause].join('\u0000')).digest('hex').slice(0, 32);
  return `evt_${h}`;
}

const REFUSAL_CODES = new Set(['INSUFFICIENT_FUNDS', 'BUDGET_EXCEEDED', 'QUOTA_EXCEEDED', 'SUBSCRIPTION_INACTIVE', 'BYOK_REQUIRED', 'UNAUTHORIZED']);

function refusal(error: BillingError): Record<string, unknown> {
  return { code: error.code, message: error.message, details: error.details };
}

/** Events caused by one ledger batch: top-ups, refusals, and balances crossing below their low threshold. */
export function ledgerEvents(outcomes: readonly BatchOutcome[], now: number, thresholdOf: (customerId: string) => Nanos | null): WebhookEvent[] {
  const at = new Date(now).toISOString();
  const out: WebhookEvent[] = [];
  for (const o of outcomes) {
    if (o.error) {
      if ((o.operation === 'hold' || o.operation === 'charge') && REFUSAL_CODES.has(o.error.code) && o.idempotencyKey) {
        out.push({
          id: eventId('run.refused', o.idempotencyKey, o.error.code),
          type: 'run.refused',
          customerId: o.customerId,
          timestamp: at,
          data: { customerId: o.customerId, operation: o.operation, idempotencyKey: o.idempotencyKey, reason: o.error.code, error: refusal(o.error) },
        });
      }
      continue;
    }
    if (o.operation === 'topUp') {
      const t = o.value as TopUp;
      out.push({
        id: eventId('topup.succeeded', t.id),
        type: 'topup.succeeded',
        customerId: t.customerId,
        timestamp: at,
        data: { customerId: t.customerId, topUpId: t.id, amountUsd: formatUsd(t.amount), balanceUsd: formatUsd(t.balanceAfter), idempotencyKey: o.idempotencyKey },
      });
    } else if (o.operation === 'charge' || o.operation === 'settle') {
      const ch = o.value as Charge;
      const threshold = thresholdOf(ch.customerId);
      const before = ch.balanceAfter + ch.amount;
      if (threshold !== null && before >= threshold && ch.balanceAfter < threshold) {
        out.push({
          id: eventId('balance.low', ch.id),
          type: 'balance.low',
          customerId: ch.customerId,
          timestamp: at,
          data: { customerId: ch.customerId, balanceUsd: formatUsd(ch.balanceAfter), thresholdUsd: formatUsd(threshold), chargeId: ch.id },
        });
      }
    }
  }
  return out;
}

/** The event (if any) for a quota alert, refusal or closed invoice. */
export function quotaEvent(e: QuotaEvent, now: number): WebhookEvent | null {
  const at = new Date(now).toISOString();
  switch (e.kind) {
    case 'alert': {
      const a = e.alert;
      const type: EventType = a.kind === 'sessions' ? 'usage.threshold' : 'budget.threshold';
      return {
        id: eventId(type, a.customerId, a.periodStart, a.threshold),
        type,
        customerId: a.customerId,
        timestamp: at,
        data: { customerId: a.customerId, metric: a.kind, threshold: a.threshold, percentage: a.value, periodStart: a.periodStart, firedAt: a.firedAt },
      };
    }
    case 'refused':
      if (!REFUSAL_CODES.has(e.error.code)) return null;
      return {
        id: eventId('run.refused', e.customerId, e.conversationId, e.error.code, e.at),
        type: 'run.refused',
        customerId: e.customerId,
        timestamp: at,
        data: { customerId: e.customerId, conversationId: e.conversationId, reason: e.error.code, error: refusal(e.error) },
      };
    case 'invoiceClosed': {
      const inv = e.invoice;
      return {
        id: eventId('invoice.closed', inv.customerId, inv.periodStart),
        type: 'invoice.closed',
        customerId: inv.customerId,
        timestamp: at,
        data: {
          customerId: inv.customerId, invoiceId: inv.id, planId: inv.planId, periodStart: inv.periodStart, periodEnd: inv.periodEnd,
          baseUsd: formatUsd(inv.base), overageUsd: formatUsd(inv.overage), totalUsd: formatUsd(inv.total),
        },
      };
    }
  }
}

/** A failed auto-recharge attempt (the Stripe adapter calls this in the transaction that records the failure). */
export function rechargeFailedEvent(p: { customerId: string; key: string; paymentIntentId: string | null; error: string; now: number }): WebhookEvent {
  return {
    id: eventId('recharge.failed', p.customerId, p.key),
    type: 'recharge.failed',
    customerId: p.customerId,
    timestamp: new Date(p.now).toISOString(),
    data: { customerId: p.customerId, attemptKey: p.key, paymentIntentId: p.paymentIntentId, error: p.error.slice(0, 500) },
  };
}

/** Endpoint subscriptions as stored: a JSON array of event types, or ["*"]. */
export function subscribes(events: readonly string[], type: EventType): boolean {
  return events.includes('*') || events.includes(type);
}

/** Rows per multi-row INSERT: 5 columns × 200 stays far below every driver's parameter limit. */
const CHUNK = 200;

/**
 * Writes events and one pending delivery per subscribed, enabled endpoint, on
 * the caller's connection (inside the cause's transaction): one read and two
 * multi-row statements for a whole ledger batch. A replayed event id inserts
 * nothing (RETURNING names only the new ones), so its deliveries are not
 * duplicated either.
 */
export async function writeEvents(c: SqlConnection, events: readonly WebhookEvent[], now: number): Promise<number> {
  if (events.length === 0) return 0;
  const endpoints = (await c.query('SELECT id, events FROM billing_webhook_endpoints WHERE enabled = 1')).map((r) => ({
    id: String(r.id),
    events: JSON.parse(String(r.events)) as string[],
  }));
  const unique = [...new Map(events.map((e) => [e.id, e])).values()];
  const fresh = new Set<string>();
  for (let i = 0; i < unique.length; i += CHUNK) {
    const chunk = unique.slice(i, i + CHUNK);
    const rows = await c.query(
      `INSERT INTO billing_webhook_events (id, type, customer_id, payload, created_at) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?)').join(', ')}
       ON CONFLICT (id) DO NOTHING RETURNING id`,
      chunk.flatMap((e) => [e.id, e.type, e.customerId, JSON.stringify({ type: e.type, timestamp: e.timestamp, data: { id: e.id, ...e.data } }), now]),
    );
    for (const r of rows) fresh.add(String(r.id));
  }
  const deliveries = unique.filter((e) => fresh.has(e.id)).flatMap((e) => endpoints.filter((ep) => subscribes(ep.events, e.type)).map((ep) => [e.id, ep.id]));
  for (let i = 0; i < deliveries.length; i += CHUNK) {
    const chunk = deliveries.slice(i, i + CHUNK);
    await c.run(
      `INSERT INTO billing_webhook_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at, last_error, last_status, delivered_at, created_at)
       VALUES ${chunk.map(() => "(?, ?, 'pending', 0, ?, NULL, NULL, NULL, ?)").join(', ')}`,
      chunk.flatMap(([eventId, endpointId]) => [eventId!, endpointId!, now, now]),
    );
  }
  return fresh.size;
}

/**
 * Runs `fn` under a savepoint: a broken webhook table (say, never migrated)
 * must not fail the charge that caused the event. The failure goes to onError.
 */
export async function guarded(c: SqlConnection, fn: () => Promise<void>, onError: (e: unknown) => void): Promise<void> {
  await c.run('SAVEPOINT fb_webhooks');
  try {
    await fn();
    await c.run('RELEASE SAVEPOINT fb_webhooks');
  } catch (e) {
    await c.run('ROLLBACK TO SAVEPOINT fb_webhooks');
    await c.run('RELEASE SAVEPOINT fb_webhooks');
    onError(e);
  }
}

/**
 * A refusal decided before any ledger or quota transaction (a refused billing
 * token, a balance read short of the run fee in a guard's check): its event,
 * keyed by the run, so a retried prediction adds nothing.
 */
export function refusedRunEvent(p: { runKey: string; customerId: string | null; error: BillingError; now: number }): WebhookEvent {
  return {
    id: eventId('run.refused', p.runKey, p.error.code),
    type: 'run.refused',
    customerId: p.customerId,
    timestamp: new Date(p.now).toISOString(),
    data: { customerId: p.customerId, runKey: p.runKey, reason: p.error.code, error: refusal(p.error) },
  };
}

/**
 * Writes a refusal's run.refused in a transaction of its own; best effort
 * (the refusal is the answer either way, and a broken webhook table or a
 * database that is down must not turn it into an error).
 */
export async function recordRefusedRun(d: Dialect, p: { runKey: string; customerId: string | null; error: unknown }): Promise<void> {
  const error = p.error;
  if (!(error instanceof BillingError) || !REFUSAL_CODES.has(error.code)) return;
  try {
    const now = Date.now();
    await d.writeTransaction((c) => guarded(c, () => writeEvents(c, [refusedRunEvent({ runKey: p.runKey, customerId: p.customerId, error, now })], now).then(() => undefined), () => undefined));
  } catch {
    // Nothing else to do: the run was refused and answered already.
  }
}
