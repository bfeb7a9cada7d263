import type Stripe from 'stripe';
import { DEFAULT_OUTBOX_SETTINGS, OUTBOX_SETTINGS_KEY, type OutboxSettings, parseOutboxSettings } from '../ledger/outbox';
import type { Ledger } from '../ledger/types';
import { StripeIntegrationError } from './errors';

/** Turns the meter-event outbox on (or reconfigures it): from the next committed charge on, every process writing to this ledger queues events. */
export async function configureOutbox(ledger: Ledger, settings: Partial<OutboxSettings> = {}): Promise<OutboxSettings> {
  const current = await outboxSettings(ledger);
  // An option left undefined keeps the current or default value.
  const given = Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)) as Partial<OutboxSettings>;
  const next: OutboxSettings = { ...DEFAULT_OUTBOX_SETTINGS, ...(current ?? {}), enabled: true, ...given };
  if (typeof next.eventName !== 'string' || !/^[A-Za-z0-9_.:-]{1,80}$/.test(next.eventName)) {
    throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', `meter event name "${next.eventName}" must be 1–80 letters, digits or _ . : -`, { eventName: next.eventName });
  }
  const now = ledger.now();
  await ledger.dialect.writeTransaction((c) =>
    c.run(
      'INSERT INTO billing_stripe_settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
      [OUTBOX_SETTINGS_KEY, JSON.stringify(next), now],
    ),
  );
  return next;
}

export async function outboxSettings(ledger: Ledger): Promise<OutboxSettings | null> {
  const rows = await ledger.dialect.read((c) => c.query('SELECT value FROM billing_stripe_settings WHERE key = ?', [OUTBOX_SETTINGS_KEY]));
  return rows[0] ? parseOutboxSettings(String(rows[0].value)) : null;
}

export async function stripeCustomerFor(ledger: Ledger, customerId: string): Promise<string | null> {
  const rows = await ledger.dialect.read((c) => c.query('SELECT stripe_customer_id FROM billing_stripe_customers WHERE customer_id = ?', [customerId]));
  return rows[0] ? String(rows[0].stripe_customer_id) : null;
}

/** Stripe customer ids for many ledger customers in one query. */
export async function stripeCustomersFor(ledger: Ledger, customerIds: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (customerIds.length === 0) return out;
  const rows = await ledger.dialect.read((c) =>
    c.query(`SELECT customer_id, stripe_customer_id FROM billing_stripe_customers WHERE customer_id IN (${customerIds.map(() => '?').join(', ')})`, [...customerIds]),
  );
  for (const r of rows) out.set(String(r.customer_id), String(r.stripe_customer_id));
  return out;
}

export async function ledgerCustomerForStripe(ledger: Ledger, stripeCustomerId: string): Promise<string | null> {
  const rows = await ledger.dialect.read((c) => c.query('SELECT customer_id FROM billing_stripe_customers WHERE stripe_customer_id = ?', [stripeCustomerId]));
  return rows[0] ? String(rows[0].customer_id) : null;
}

/** Records an existing Stripe customer for a ledger customer. Re-linking the same pair is a no-op; a different pair is refused. */
export async function linkStripeCustomer(ledger: Ledger, customerId: string, stripeCustomerId: string): Promise<{ customerId: string; stripeCustomerId: string }> {
  await ledger.getCustomer(customerId);
  const now = ledger.now();
  const existing = await ledger.dialect.writeTransaction(async (c) => {
    await c.run('INSERT INTO billing_stripe_customers (customer_id, stripe_customer_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING', [customerId, stripeCustomerId, now]);
    return c.query('SELECT customer_id, stripe_customer_id FROM billing_stripe_customers WHERE customer_id = ? OR stripe_customer_id = ?', [customerId, stripeCustomerId]);
  });
  const mismatch = existing.find((r) => String(r.customer_id) !== customerId || String(r.stripe_customer_id) !== stripeCustomerId);
  if (mismatch) {
    throw new StripeIntegrationError(
      'STRIPE_NOT_CONFIGURED',
      `Customer ${String(mismatch.customer_id)} is already linked to Stripe customer ${String(mismatch.stripe_customer_id)}`,
      { customerId, stripeCustomerId },
    );
  }
  return { customerId, stripeCustomerId };
}

/**
 * The Stripe customer of a ledger customer, created on request. The create
 * call carries the idempotency key `fb-customer-<id>`, so a crash between
 * Stripe's answer and our insert, retried within Stripe's 24 h key window,
 * returns the same Stripe customer instead of a second one.
 */
export async function ensureStripeCustomer(
  ledger: Ledger,
  stripe: Stripe,
  customerId: string,
  opts: { email?: string; name?: string } = {},
): Promise<string> {
  const known = await stripeCustomerFor(ledger, customerId);
  if (known) return known;
  const customer = await ledger.getCustomer(customerId);
  const created = await stripe.customers.create(
    {
      ...(opts.email ? { email: opts.email } : {}),
      ...(opts.name ?? customer.name ? { name: opts.name ?? customer.name ?? undefined } : {}),
      metadata: { flowise_billing_customer_id: customerId },
    },
    { idempotencyKey: `fb-customer-${customerId}` },
  );
  await linkStripeCustomer(ledger, customerId, created.id);
  return created.id;
}

/** Creates the Stripe meter for an event name unless an active one exists (sum of values). Returns its id. */
export async function ensureMeter(stripe: Stripe, eventName: string, displayName?: string): Promise<string> {
  const found = await findMeter(stripe, eventName);
  if (found) return found;
  const meter = await stripe.billing.meters.create(
    {
      display_name: displayName ?? `Flowise billing usage (${eventName}, micro-USD)`,
      event_name: eventName,
      default_aggregation: { formula: 'sum' },
    },
    { idempotencyKey: `fb-meter-${eventName}` },
  );
  return meter.id;
}

export async function findMeter(stripe: Stripe, eventName: string): Promise<string | null> {
  for await (const m of stripe.billing.meters.list({ status: 'active', limit: 100 })) {
    if (m.event_name === eventName) return m.id;
  }
  return null;
}
