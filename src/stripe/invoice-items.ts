import { createHash } from 'node:crypto';
import Stripe from 'stripe';
import type { Row, SqlConnection } from '../ledger/dialect';
import type { Ledger } from '../ledger/types';
import { formatUsd } from '../money';
import type { ExternalCollector, ExternalItem } from '../quota/collect';
import type { Invoice } from '../quota/types';
import { ensureStripeCustomer, stripeCustomerFor } from './customers';
import { StripeIntegrationError } from './errors';
import { type OutboxCounts, OutboxQueue, type OutboxTable, type OutboxWorkerOptions, type RowUpdate } from './outbox-queue';
import { type BackoffOptions, backoffMs, classifyFailure, type FailureFacts, factsOf } from './retry';

/**
 * Closed invoices collected as Stripe invoice items, through a durable outbox:
 *
 * - `stripe setup --invoice-items` turns it on for the database (a row in
 *   billing_stripe_settings), so whichever process closes a period — CLI,
 *   `serve`, a library caller passing `stripeInvoiceItems(ledger)` — decides
 *   the same way.
 * - Closing queues one row per non-zero part of the total (`base`, `overage`)
 *   in the transaction that claims the period for Stripe
 *   (billing_invoice_collections), with an id derived from customer, period
 *   and part: collecting again, or concurrently, queues nothing more.
 * - `stripe sync` delivers the rows with `POST /v1/invoiceitems`, each with
 *   the row id as its Idempotency-Key on every attempt: a worker killed after
 *   Stripe created the item but before the row was marked, or a lost answer,
 *   resends the same key and Stripe replays the first item instead of making
 *   a second. (Stripe keeps keys for 24 h; rows are retried for far less
 *   before they count as failed.)
 * - Amounts are exact: whole cents go as `amount`; anything finer as
 *   `unit_amount_decimal` (cents with up to 7 decimals) × 1, which Stripe
 *   rounds once, on the invoice.
 */
export const INVOICE_ITEMS_SETTINGS_KEY = 'invoice_items';
export const INVOICE_ITEM_CURRENCY = 'usd';
const NANOS_PER_CENT = 10_000_000n;

export type InvoiceItemCounts = OutboxCounts;

/** Turns Stripe invoice items on (or off) for every later collection in this database. */
export async function configureInvoiceItems(ledger: Ledger, enabled: boolean): Promise<{ enabled: boolean }> {
  const now = ledger.now();
  await ledger.dialect.writeTransaction((c) =>
    c.run(
      'INSERT INTO billing_stripe_settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
      [INVOICE_ITEMS_SETTINGS_KEY, JSON.stringify({ enabled }), now],
    ),
  );
  return { enabled };
}

async function enabledIn(c: SqlConnection): Promise<boolean> {
  const [r] = await c.query('SELECT value FROM billing_stripe_settings WHERE key = ?', [INVOICE_ITEMS_SETTINGS_KEY]);
  if (!r) return false;
  try {
    return (JSON.parse(String(r.value)) as { enabled?: unknown }).enabled === true;
  } catch {
    return false;
  }
}

/** The row id (and Stripe Idempotency-Key) of one part of one period's invoice. */
export function invoiceItemId(customerId: string, periodStart: number, kind: string): string {
  return `fbii_${createHash('sha256').update(`${customerId}\u0000${periodStart}\u0000${kind}`).digest('hex').slice(0, 40)}`;
}

const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** The parts of an invoice billed as items: the base price and the overage, each only when non-zero. */
function partsOf(inv: Invoice): Array<{ kind: 'base' | 'overage'; amount: bigint; description: string }> {
  const start = Date.parse(inv.periodStart);
  const end = Date.parse(inv.periodEnd);
  const span = `${day(start)} – ${day(end - 1)}`;
  const parts: Array<{ kind: 'base' | 'overage'; amount: bigint; description: string }> = [];
  if (inv.base > 0n) parts.push({ kind: 'base', amount: inv.base, description: `Plan ${inv.planId}: base price, ${span}` });
  if (inv.overage > 0n) {
    const metrics = inv.lines.filter((l) => l.amount > 0n).map((l) => `${l.metric} ${l.overage} ${l.unit}`).join(', ');
    parts.push({ kind: 'overage', amount: inv.overage, description: `Plan ${inv.planId}: overage, ${span}${metrics ? ` (${metrics})` : ''}`.slice(0, 500) });
  }
  return parts;
}

function itemFrom(r: Row): ExternalItem {
  return {
    id: String(r.id),
    kind: String(r.kind),
    amount: BigInt(String(r.amount_nanos)),
    status: String(r.status) as ExternalItem['status'],
    attempts: Number(r.attempts),
    lastError: r.last_error === null || r.last_error === undefined ? null : String(r.last_error),
    externalId: r.stripe_item_id === null || r.stripe_item_id === undefined ? null : String(r.stripe_item_id),
  };
}

/** The collector to pass to `collectInvoices`: queues Stripe invoice items when they are turned on. */
export function stripeInvoiceItems(): ExternalCollector {
  return {
    method: 'stripe',
    enabled: enabledIn,
    async enqueue(c, inv, now) {
      const start = Date.parse(inv.periodStart);
      const end = Date.parse(inv.periodEnd);
      for (const p of partsOf(inv)) {
        await c.run(
          `INSERT INTO billing_stripe_invoice_items (id, customer_id, invoice_id, period_start, period_end, kind, amount_nanos, description, status, attempts, next_attempt_at, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT DO NOTHING`,
          [invoiceItemId(inv.customerId, start, p.kind), inv.customerId, inv.id, start, end, p.kind, p.amount, p.description, now, now],
        );
      }
    },
    async items(c, customerId) {
      const rows = await c.query('SELECT * FROM billing_stripe_invoice_items WHERE customer_id = ? ORDER BY period_start, kind', [customerId]);
      const out = new Map<number, ExternalItem[]>();
      for (const r of rows) {
        const start = Number(r.period_start);
        out.set(start, [...(out.get(start) ?? []), itemFrom(r)]);
      }
      return out;
    },
  };
}

/**
 * A 5xx that Stripe saved under the request's idempotency key
 * (`Stripe-Should-Retry: false`): every resend with the key gets it again for
 * 24 h, and the key must stay (it is what prevents a second item), so
 * retrying sooner cannot help.
 */
function savedFailure(f: FailureFacts): boolean {
  return f.statusCode !== undefined && f.statusCode >= 500 && f.shouldRetryHeader === 'false';
}

/** Stripe's amount fields for a nano-USD amount: whole cents as `amount`, finer as a decimal of cents. */
export function stripeAmount(nanos: bigint): { amount: number } | { unit_amount_decimal: Stripe.Decimal; quantity: 1 } {
  if (nanos % NANOS_PER_CENT === 0n) return { amount: Number(nanos / NANOS_PER_CENT) };
  const negative = nanos < 0n;
  const abs = negative ? -nanos : nanos;
  const frac = (abs % NANOS_PER_CENT).toString().padStart(7, '0').replace(/0+$/, '');
  return { unit_amount_decimal: Stripe.Decimal.from(`${negative ? '-' : ''}${abs / NANOS_PER_CENT}.${frac}`), quantity: 1 };
}

interface ItemRow {
  id: string;
  customerId: string;
  invoiceId: string;
  periodStart: number;
  periodEnd: number;
  kind: string;
  amount: bigint;
  description: string;
  attempts: number;
}

/** billing_stripe_invoice_items as an outbox table: oldest by when the item was queued; the Stripe item's id kept on delivery. */
const invoiceItemsTable: OutboxTable<ItemRow> = {
  name: 'billing_stripe_invoice_items',
  oldestColumn: 'created_at',
  receiptColumn: 'stripe_item_id',
  rowFrom: (r) => ({
    id: String(r.id),
    customerId: String(r.customer_id),
    invoiceId: String(r.invoice_id),
    periodStart: Number(r.period_start),
    periodEnd: Number(r.period_end),
    kind: String(r.kind),
    amount: BigInt(String(r.amount_nanos)),
    description: String(r.description),
    attempts: Number(r.attempts),
  }),
};

export type InvoiceItemDeliveryOptions = OutboxWorkerOptions;

export interface InvoiceItemRound {
  readonly leased: number;
  readonly delivered: number;
  readonly retried: number;
  readonly failed: number;
  readonly waiting: number;
}

/** Delivers queued invoice items to Stripe (a handful a month per customer: one request at a time). */
export class InvoiceItemDelivery {
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly o: Required<Omit<InvoiceItemDeliveryOptions, 'stripe' | 'clock' | 'random' | 'backoff'>> & { backoff: BackoffOptions };
  private readonly queue: OutboxQueue<ItemRow>;

  constructor(
    private readonly ledger: Ledger,
    private readonly opts: InvoiceItemDeliveryOptions,
  ) {
    this.clock = opts.clock ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.o = {
      maxAttempts: opts.maxAttempts ?? 20,
      leaseMs: opts.leaseMs ?? 30_000,
      createCustomers: opts.createCustomers ?? true,
      customerRetryMs: opts.customerRetryMs ?? 60_000,
      backoff: opts.backoff ?? {},
    };
    this.queue = new OutboxQueue(ledger, invoiceItemsTable);
  }

  /** Writes one row's outcome (in its own transaction: a round sends one request at a time). */
  private update(id: string, u: Omit<RowUpdate, 'id'>): Promise<void> {
    return this.queue.record(this.clock(), [], [{ id, ...u }]);
  }

  /** Sends every due row once. Throws STRIPE_AUTH_FAILED (after putting the row back) when Stripe refuses the key. */
  async deliverRound(): Promise<InvoiceItemRound> {
    const now = this.clock();
    const rows = await this.queue.leaseDue(now, 100, this.o.leaseMs);
    const r = { leased: rows.length, delivered: 0, retried: 0, failed: 0, waiting: 0 };
    let i = 0;
    try {
      for (; i < rows.length; i++) await this.deliverOne(rows[i]!, r);
    } catch (e) {
      // The rows this round did not finish (a refused key stopped it) are due again at once, not after their lease.
      await this.queue.release(this.clock(), rows.slice(i).map((row) => row.id));
      throw e;
    }
    return r;
  }

  /** One row: find (or create) its Stripe customer, send the item, record the outcome. */
  private async deliverOne(row: ItemRow, r: { delivered: number; retried: number; failed: number; waiting: number }): Promise<void> {
    const customer = await this.stripeCustomer(row.customerId);
    if (!customer) {
      r.waiting += 1;
      await this.update(row.id, { status: 'pending', attempts: row.attempts, nextAt: this.clock() + this.o.customerRetryMs, error: `customer ${row.customerId} has no Stripe customer (link it or allow createCustomers)` });
      return;
    }
    try {
      const item = await this.opts.stripe.invoiceItems.create(
        {
          customer,
          currency: INVOICE_ITEM_CURRENCY,
          ...stripeAmount(row.amount),
          description: row.description,
          // Stripe's period is inclusive; ours ends (exclusive) at the next period's start.
          period: { start: Math.floor(row.periodStart / 1000), end: Math.floor(row.periodEnd / 1000) - 1 },
          metadata: {
            flowise_billing_customer_id: row.customerId,
            flowise_billing_invoice_id: row.invoiceId,
            flowise_billing_item: row.kind,
            flowise_billing_amount_usd: formatUsd(row.amount),
          },
        },
        // The same key on every attempt: a resend after a lost answer gets the first item back.
        { idempotencyKey: row.id },
      );
      r.delivered += 1;
      await this.update(row.id, { status: 'delivered', attempts: row.attempts + 1, nextAt: this.clock(), error: null, receipt: item.id });
    } catch (e) {
      const facts = factsOf(e);
      const verdict = classifyFailure(facts);
      const error = `${facts.statusCode ?? facts.type ?? 'error'}: ${facts.message ?? String(e)}`.slice(0, 500);
      if (verdict === 'fatal') {
        await this.update(row.id, { status: 'pending', attempts: row.attempts, nextAt: this.clock(), error });
        throw new StripeIntegrationError('STRIPE_AUTH_FAILED', `Stripe refused the API key: ${facts.message ?? ''}`, { statusCode: facts.statusCode });
      }
      if (verdict === 'throttled') {
        r.waiting += 1;
        await this.update(row.id, { status: 'pending', attempts: row.attempts, nextAt: this.clock() + backoffMs(1, this.o.backoff, this.random), error });
      } else if (verdict === 'rejected' || verdict === 'duplicate' || savedFailure(facts) || row.attempts + 1 >= this.o.maxAttempts) {
        r.failed += 1;
        const why = savedFailure(facts) ? `Stripe saved this failure under the item's key and replays it for 24 h; requeue it (stripe retry-failed) after that. ${error}` : error;
        await this.update(row.id, { status: 'failed', attempts: row.attempts + 1, nextAt: this.clock(), error: why.slice(0, 500) });
      } else {
        r.retried += 1;
        await this.update(row.id, { status: 'pending', attempts: row.attempts + 1, nextAt: this.clock() + backoffMs(row.attempts + 1, this.o.backoff, this.random), error });
      }
    }
  }

  private async stripeCustomer(customerId: string): Promise<string | null> {
    const known = await stripeCustomerFor(this.ledger, customerId);
    if (known || !this.o.createCustomers) return known;
    try {
      return await ensureStripeCustomer(this.ledger, this.opts.stripe, customerId);
    } catch (e) {
      const f = factsOf(e);
      if (classifyFailure(f) === 'fatal') throw new StripeIntegrationError('STRIPE_AUTH_FAILED', `Stripe refused the API key: ${f.message ?? ''}`);
      return null;
    }
  }

  /** Milliseconds until the next pending row is due (MAX_SAFE_INTEGER when none is pending). */
  msUntilDue(): Promise<number> {
    return this.queue.msUntilDue(this.clock());
  }

  counts(): Promise<InvoiceItemCounts> {
    return this.queue.counts();
  }

  /** Puts failed rows back in the queue (same idempotency key). */
  retryFailed(): Promise<number> {
    return this.queue.retryFailed(this.clock());
  }
}

/** Pending, delivered and failed invoice items, and why the last attempts failed (no Stripe client needed). */
export function invoiceItemCounts(ledger: Ledger): Promise<InvoiceItemCounts> {
  return new OutboxQueue(ledger, invoiceItemsTable).counts();
}
