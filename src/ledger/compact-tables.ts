import type { Dialect } from './dialect';

/**
 * Schema step 5: fewer b-trees written per operation.
 *
 * Every b-tree a transaction touches costs at least one page in the WAL, and
 * a lone caller's operation touched 13–15 of them (bench/sqlite-cost.mjs
 * prints them by name), against the naive baseline's 4. This step:
 *
 * - on every backend, replaces the two hold indexes (status, expires_at) and
 *   (customer_id, status) with one partial index of the pending holds, the
 *   only ones any query filters for; a settled hold leaves it instead of
 *   moving inside two;
 * - on SQLite (`d.withoutRowid`), rebuilds the idempotency, holds and charges
 *   tables clustered on their primary key, so a row is one b-tree instead of a
 *   rowid table plus a primary-key index; and rebuilds the entries and audit
 *   tables with a plain INTEGER PRIMARY KEY seq instead of AUTOINCREMENT,
 *   whose counter row in sqlite_sequence was one more page per commit. Both
 *   tables are append-only (nothing deletes from them), so seq still only
 *   grows and is never reused.
 *
 * Columns, their order and every constraint stay as they were; rows are
 * copied as they are, so ids, seq numbers and stored idempotent results are
 * unchanged. The step runs in the migration transaction: an interrupted
 * upgrade leaves the old tables.
 */
export const COMPACT_TABLES_STEP = {
  version: 5,
  name: 'ledger: one partial index of pending holds; SQLite tables clustered on their keys, no AUTOINCREMENT',
  statements: (d: Dialect): string[] => [
    ...(d.withoutRowid === undefined ? ['DROP INDEX billing_holds_open', 'DROP INDEX billing_holds_customer'] : sqliteRebuilds(d.withoutRowid)),
    // Holds past their expiry are found per locked customer, by the sweeper, and by balance reads: all pending.
    `CREATE INDEX billing_holds_pending ON billing_holds (customer_id, expires_at) WHERE status = 'pending'`,
  ],
} as const;

/** CREATE the new table, copy, drop the old one (with its indexes), rename. */
function rebuild(table: string, columns: string, suffix: string, indexes: string[] = []): string[] {
  return [
    `CREATE TABLE ${table}_v5 (${columns})${suffix}`,
    `INSERT INTO ${table}_v5 SELECT * FROM ${table}`,
    `DROP TABLE ${table}`,
    `ALTER TABLE ${table}_v5 RENAME TO ${table}`,
    ...indexes,
  ];
}

function sqliteRebuilds(withoutRowid: string): string[] {
  return [
    ...rebuild(
      'billing_entries',
      `seq INTEGER PRIMARY KEY,
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
        created_at BIGINT NOT NULL`,
      '',
      ['CREATE INDEX billing_entries_customer ON billing_entries (customer_id, seq)'],
    ),
    ...rebuild(
      'billing_holds',
      `id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES billing_customers(id),
        amount BIGINT NOT NULL,
        status TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        charge_type TEXT,
        quantity TEXT,
        rate_card_version TEXT,
        charge_id TEXT,
        available_after BIGINT NOT NULL`,
      withoutRowid,
    ),
    ...rebuild(
      'billing_charges',
      `id TEXT PRIMARY KEY,
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
        metadata TEXT NOT NULL`,
      withoutRowid,
      ['CREATE INDEX billing_charges_customer ON billing_charges (customer_id, created_at)'],
    ),
    ...rebuild(
      'billing_audit',
      `seq INTEGER PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        operation TEXT NOT NULL,
        idempotency_key TEXT,
        customer_id TEXT,
        rate_card_version TEXT,
        details TEXT NOT NULL`,
      '',
      ['CREATE INDEX billing_audit_customer ON billing_audit (customer_id, seq)'],
    ),
  ];
}
