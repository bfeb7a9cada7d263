/*
 * FROZEN: src/ledger/migrations.ts exactly as released up to commit a09690a
 * (`git show a09690a:src/ledger/migrations.ts`), before each owner got its
 * own schema. It builds a database the way every older flowise-billing did,
 * so test/ledger.schema-upgrade.test.ts can prove that upgrading one is a
 * no-op. Never edit it; only the import paths differ.
 */
import { BillingError } from '../../../src/errors';
import type { Dialect, SqlConnection } from '../../../src/ledger/dialect';

/**
 * Versioned schema migrations, applied in order, once, under a cross-process
 * lock. Never edit a released migration: append a new one.
 * Amounts are BIGINT nano-USD; times are BIGINT epoch milliseconds.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  statements(d: Dialect): string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'ledger core',
    statements: (d) => [
      `CREATE TABLE billing_customers (
        id TEXT PRIMARY KEY,
        name TEXT,
        balance BIGINT NOT NULL,
        held BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      `CREATE TABLE billing_entries (
        seq ${d.serialPrimaryKey},
        id TEXT NOT NULL UNIQUE,
        customer_id TEXT NOT NULL REFERENCES billing_customers(id),
        type TEXT NOT NULL,
        amount BIGINT NOT NULL,
        held_delta BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        hold_id TEXT,
        charge_id TEXT,
        idempotency_key TEXT,
        actor TEXT NOT NULL,
        rate_card_version TEXT,
        charge_type TEXT,
        quantity TEXT,
        memo TEXT,
        created_at BIGINT NOT NULL
      )`,
      `CREATE INDEX billing_entries_customer ON billing_entries (customer_id, seq)`,
      `CREATE TABLE billing_holds (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES billing_customers(id),
        amount BIGINT NOT NULL,
        status TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        charge_type TEXT,
        quantity TEXT,
        rate_card_version TEXT,
        charge_id TEXT,
        available_after BIGINT NOT NULL
      )`,
      `CREATE INDEX billing_holds_open ON billing_holds (status, expires_at)`,
      `CREATE INDEX billing_holds_customer ON billing_holds (customer_id, status)`,
      `CREATE TABLE billing_charges (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES billing_customers(id),
        hold_id TEXT,
        amount BIGINT NOT NULL,
        shortfall BIGINT NOT NULL,
        refunded BIGINT NOT NULL,
        charge_type TEXT,
        quantity TEXT,
        rate_card_version TEXT,
        created_at BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        metadata TEXT NOT NULL
      )`,
      `CREATE INDEX billing_charges_customer ON billing_charges (customer_id, created_at)`,
      `CREATE TABLE billing_idempotency (
        key TEXT PRIMARY KEY,
        operation TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        customer_id TEXT,
        result TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE billing_audit (
        seq ${d.serialPrimaryKey},
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        operation TEXT NOT NULL,
        idempotency_key TEXT,
        customer_id TEXT,
        rate_card_version TEXT,
        details TEXT NOT NULL
      )`,
      `CREATE INDEX billing_audit_customer ON billing_audit (customer_id, seq)`,
      `CREATE TABLE billing_rate_cards (
        version TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        imported_at BIGINT NOT NULL,
        activated_at BIGINT,
        active INTEGER NOT NULL
      )`,
    ],
  },
  {
    version: 2,
    name: 'monthly budgets',
    statements: () => [
      'ALTER TABLE billing_customers ADD COLUMN budget BIGINT',
      'ALTER TABLE billing_customers ADD COLUMN budget_anchor_day INTEGER',
      'ALTER TABLE billing_customers ADD COLUMN budget_period_start BIGINT',
      'ALTER TABLE billing_customers ADD COLUMN budget_period_end BIGINT',
      'ALTER TABLE billing_customers ADD COLUMN budget_spent BIGINT NOT NULL DEFAULT 0',
    ],
  },
  {
    version: 3,
    name: 'plans, subscriptions, sessions, usage, alerts, invoices',
    statements: () => [
      `CREATE TABLE billing_plans (
        id TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      `CREATE TABLE billing_subscriptions (
        customer_id TEXT PRIMARY KEY REFERENCES billing_customers(id),
        plan_id TEXT NOT NULL REFERENCES billing_plans(id),
        status TEXT NOT NULL,
        anchor_day INTEGER NOT NULL,
        period_start BIGINT NOT NULL,
        period_end BIGINT NOT NULL,
        sessions_used INTEGER NOT NULL,
        pending_plan_id TEXT,
        cancel_at_period_end INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      `CREATE TABLE billing_conversations (
        customer_id TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        last_activity_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, conversation_id)
      )`,
      `CREATE TABLE billing_sessions (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        period_start BIGINT NOT NULL
      )`,
      'CREATE INDEX billing_sessions_period ON billing_sessions (customer_id, period_start)',
      `CREATE TABLE billing_usage (
        customer_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        quantity TEXT NOT NULL,
        period_start BIGINT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        recorded_at BIGINT NOT NULL
      )`,
      'CREATE INDEX billing_usage_period ON billing_usage (customer_id, period_start)',
      `CREATE TABLE billing_alerts (
        customer_id TEXT NOT NULL,
        period_start BIGINT NOT NULL,
        kind TEXT NOT NULL,
        threshold INTEGER NOT NULL,
        value TEXT NOT NULL,
        fired_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, period_start, kind, threshold)
      )`,
      `CREATE TABLE billing_invoices (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        period_start BIGINT NOT NULL,
        period_end BIGINT NOT NULL,
        plan_id TEXT NOT NULL,
        total BIGINT NOT NULL,
        document TEXT NOT NULL,
        closed_at BIGINT NOT NULL,
        UNIQUE (customer_id, period_start)
      )`,
    ],
  },
  {
    version: 4,
    name: 'stripe: customer map, meter-event outbox, webhooks, auto-recharge, payouts',
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
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** Applies pending migrations; safe to call from many processes at once. Returns the versions applied. */
export async function migrate(d: Dialect, now: () => number = Date.now): Promise<number[]> {
  return d.migrationTransaction(async (c: SqlConnection) => {
    await c.run(`CREATE TABLE IF NOT EXISTS billing_schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      applied_at BIGINT NOT NULL
    )`);
    const done = new Set((await c.query<{ version: unknown }>('SELECT version FROM billing_schema_migrations')).map((r) => Number(r.version)));
    const newest = Math.max(0, ...done);
    if (newest > SCHEMA_VERSION) {
      // A newer flowise-billing migrated this database; this one would misread or corrupt its tables.
      throw new BillingError(
        'SCHEMA_TOO_NEW',
        `The ledger database has schema version ${newest}, newer than the ${SCHEMA_VERSION} this flowise-billing understands; upgrade flowise-billing (every process sharing the database) before using it`,
        { schemaVersion: newest, supportedVersion: SCHEMA_VERSION },
      );
    }
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      for (const sql of m.statements(d)) await c.run(sql);
      await c.run('INSERT INTO billing_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [m.version, m.name, now()]);
      applied.push(m.version);
    }
    return applied;
  });
}
