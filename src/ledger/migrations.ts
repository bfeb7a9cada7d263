import { QUOTA_SCHEMA } from '../quota/schema';
import { STRIPE_SCHEMA } from '../stripe/schema';
import { COMPACT_TABLES_STEP } from './compact-tables';
import type { Dialect } from './dialect';
import { ENTRY_IDS_STEP } from './entry-ids';
import { FOLD_ROWS_STEP } from './fold-rows';
import { STORED_RESULTS_STEP } from './stored-results';
import { applySchemas, newestVersion, type SchemaOwner, type SchemaResult, type SchemaStep } from './schema-runner';

/**
 * The ledger's own tables: customers, entries, holds, charges, idempotency,
 * audit, rate cards. Never edit a released step: append a new one.
 * Amounts are BIGINT nano-USD; times are BIGINT epoch milliseconds.
 */
const LEDGER_STEPS: readonly SchemaStep[] = [
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
  // Versions 3 and 4 were quota's and Stripe's first steps (handedOver below). Steps 5 to 7 are the
  // ledger's speed steps (issue #10 §3), each kept in its own file; 8 is a stored format, no DDL.
  COMPACT_TABLES_STEP,
  FOLD_ROWS_STEP,
  ENTRY_IDS_STEP,
  STORED_RESULTS_STEP,
];

export const LEDGER_SCHEMA: SchemaOwner = {
  owner: 'ledger',
  versionTable: 'billing_schema_migrations',
  steps: LEDGER_STEPS,
  // Quota's and Stripe's first steps, recorded here before each owner kept its own versions (see SchemaStep.recordedAs).
  handedOver: [3, 4],
};

/**
 * What opening a billing database migrates, in order: the ledger, then the
 * owners whose tables reference its customers. Stripe's must exist before
 * the first charge (the ledger's batches write its meter-event outbox in
 * their own transaction, outbox.ts); quota's are there for every caller of
 * openLedger, as they always were. Outbound webhooks and serve migrate their
 * own tables where they are used (src/webhooks/schema.ts, src/server/schema.ts).
 */
export const SCHEMAS_ON_OPEN: readonly SchemaOwner[] = [LEDGER_SCHEMA, QUOTA_SCHEMA, STRIPE_SCHEMA];

/** The newest version the ledger's own version table may hold (`flowise-billing migrate` prints it). */
export const SCHEMA_VERSION = newestVersion(LEDGER_SCHEMA);

/** Applies every pending step of the owners a billing database is opened with; safe to call from many processes at once. */
export function migrate(d: Dialect, now: () => number = Date.now, owners: readonly SchemaOwner[] = SCHEMAS_ON_OPEN): Promise<SchemaResult[]> {
  return applySchemas(d, owners, now());
}
