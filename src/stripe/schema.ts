import type { SchemaOwner } from '../ledger/schema-runner';

/**
 * Stripe's tables: the customer map, settings, the meter-event outbox and its
 * running totals, received webhook events, auto-recharge, top-up refunds and
 * payouts. Created when a billing database is opened (see
 * src/ledger/migrations.ts, SCHEMAS_ON_OPEN): the ledger's batches write the
 * outbox rows in their own transaction (src/ledger/outbox.ts), so these must
 * exist before the first charge. Append a step to change them; never edit a
 * released one.
 */
export const STRIPE_SCHEMA: SchemaOwner = {
  owner: 'stripe',
  versionTable: 'billing_stripe_schema_migrations',
  steps: [
    {
      version: 1,
      name: 'customer map, meter-event outbox, webhooks, auto-recharge, payouts',
      // Databases from before Stripe had its own version table recorded these tables as the ledger's version 4.
      recordedAs: { table: 'billing_schema_migrations', version: 4, name: 'stripe: customer map, meter-event outbox, webhooks, auto-recharge, payouts' },
      statements: () => [
        // Stripe settings (e.g. the outbox switch), read inside the charge transaction.
        `CREATE TABLE billing_stripe_settings (
          key TEXT PRIMARY KEY,
          value TEXT NOT NULL,
          updated_at BIGINT NOT NULL
        )`,
        `CREATE TABLE billing_stripe_customers (
          customer_id TEXT PRIMARY KEY REFERENCES billing_customers(id),
          stripe_customer_id TEXT NOT NULL UNIQUE,
          created_at BIGINT NOT NULL
        )`,
        // Running metered total per customer and meter, so each event's whole-unit value carries the remainder.
        `CREATE TABLE billing_stripe_meter_state (
          customer_id TEXT NOT NULL,
          event_name TEXT NOT NULL,
          nanos_total BIGINT NOT NULL,
          PRIMARY KEY (customer_id, event_name)
        )`,
        // One row per meter event owed to Stripe, written in the same transaction as its ledger entry.
        `CREATE TABLE billing_stripe_outbox (
          id TEXT PRIMARY KEY,
          entry_id TEXT NOT NULL UNIQUE,
          customer_id TEXT NOT NULL,
          event_name TEXT NOT NULL,
          kind TEXT NOT NULL,
          charge_id TEXT,
          amount_nanos BIGINT NOT NULL,
          value BIGINT NOT NULL,
          occurred_at BIGINT NOT NULL,
          status TEXT NOT NULL,
          attempts INTEGER NOT NULL,
          next_attempt_at BIGINT NOT NULL,
          agg_id TEXT,
          last_error TEXT,
          delivered_at BIGINT,
          created_at BIGINT NOT NULL
        )`,
        'CREATE INDEX billing_stripe_outbox_due ON billing_stripe_outbox (status, next_attempt_at)',
        'CREATE INDEX billing_stripe_outbox_customer ON billing_stripe_outbox (customer_id, event_name, occurred_at)',
        'CREATE INDEX billing_stripe_outbox_agg ON billing_stripe_outbox (agg_id)',
        `CREATE TABLE billing_stripe_webhook_events (
          id TEXT PRIMARY KEY,
          type TEXT NOT NULL,
          result TEXT NOT NULL,
          received_at BIGINT NOT NULL
        )`,
        `CREATE TABLE billing_stripe_recharge (
          customer_id TEXT PRIMARY KEY REFERENCES billing_customers(id),
          enabled INTEGER NOT NULL,
          threshold BIGINT NOT NULL,
          amount_cents BIGINT NOT NULL,
          currency TEXT NOT NULL,
          payment_method TEXT,
          retry_window_ms BIGINT NOT NULL,
          retry_interval_ms BIGINT NOT NULL,
          sequence INTEGER NOT NULL,
          attempt INTEGER NOT NULL,
          in_flight_key TEXT,
          in_flight_since BIGINT,
          failing_since BIGINT,
          last_attempt_at BIGINT,
          last_error TEXT,
          last_payment_intent TEXT,
          updated_at BIGINT NOT NULL
        )`,
        `CREATE TABLE billing_stripe_topup_refunds (
          stripe_charge_id TEXT PRIMARY KEY,
          customer_id TEXT NOT NULL,
          refunded_cents BIGINT NOT NULL,
          debited_nanos BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        )`,
        `CREATE TABLE billing_stripe_payouts (
          key TEXT PRIMARY KEY,
          creator_id TEXT NOT NULL,
          amount_nanos BIGINT NOT NULL,
          method TEXT NOT NULL,
          reference TEXT,
          status TEXT NOT NULL,
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        )`,
      ],
    },
  ],
};
