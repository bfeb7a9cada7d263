import type { Dialect } from './dialect';

/**
 * Schema step 7: a journal entry's `id` is no longer a unique index.
 *
 * Every entry wrote one more b-tree page for `UNIQUE (id)`, which no query
 * reads: entries are found by customer and seq, or by idempotency key (its
 * own unique index, which is what stops two processes racing on one key).
 * Ids are random UUIDs the writer makes, so uniqueness never depended on the
 * index; the Stripe outbox keeps its own unique `entry_id`. A lone caller's
 * operation writes one WAL page fewer (about 10 % of its pages).
 *
 * PostgreSQL drops the constraint in place. SQLite cannot drop a column's
 * UNIQUE, so the table is rebuilt: created without it, rows copied as they
 * are (seq, ids, stored results unchanged), the old table dropped with its
 * indexes, the two indexes made again. It runs in the migration transaction:
 * an interrupted upgrade leaves the old table. The copy takes time and disk
 * in proportion to the journal (README "Upgrading a SQLite ledger").
 */
export const ENTRY_IDS_STEP = {
  version: 7,
  name: "ledger: journal entry ids without a unique index",
  statements: (d: Dialect): string[] => (d.withoutRowid !== undefined ? sqliteRebuild() : ['ALTER TABLE billing_entries DROP CONSTRAINT billing_entries_id_key']),
} as const;

function sqliteRebuild(): string[] {
  return [
    `CREATE TABLE billing_entries_v7 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
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
        created_at BIGINT NOT NULL,
        fingerprint TEXT,
        result TEXT,
        audit_details TEXT)`,
    'INSERT INTO billing_entries_v7 SELECT * FROM billing_entries',
    'DROP TABLE billing_entries',
    'ALTER TABLE billing_entries_v7 RENAME TO billing_entries',
    'CREATE INDEX billing_entries_customer ON billing_entries (customer_id, seq)',
    'CREATE UNIQUE INDEX billing_entries_key ON billing_entries (idempotency_key)',
  ];
}
