import type { Dialect } from './dialect';

/**
 * Schema step 6: an operation's idempotency record and audit line ride on its
 * journal entry.
 *
 * A lone caller's hold wrote 10 b-trees and a settle 12; four of them were
 * the idempotency row (a rowid table plus its key index) and the audit line
 * (table plus customer index), each a row the entry already mostly repeats.
 * From this step on, an operation that writes an entry stores its fingerprint
 * and result in that entry (`fingerprint`, `result`), found again through a
 * unique index on `idempotency_key` (one b-tree instead of two; unique, so
 * two processes racing on one key still meet a unique violation), and its
 * audit line too (`audit_details`; time, actor, key, customer, rate card and
 * operation are the entry's own columns). `billing_idempotency` keeps the
 * rows written before, and those of a keyed operation without an entry (the
 * release of an already expired hold); `billing_audit` keeps the lines
 * written before, those without an entry (createCustomer, setBudget, rate
 * cards, quota) and those of a batch that mixes both kinds (see batch.ts).
 *
 * One numbering: an audit line folded into an entry is numbered by the
 * entry's `seq`, so entries and audit lines now draw from one counter (audit
 * numbers stay unique and in write order). PostgreSQL: `billing_audit.seq`
 * takes its default from the entries' sequence, moved past both tables'
 * numbers. SQLite (whose INTEGER PRIMARY KEY counts per table): the writer,
 * which holds the only write lock, numbers both from max(seq) of the two
 * tables (`Dialect.explicitSeq`, `LAST_SEQ_SQL`).
 *
 * Rows already written are not touched: the step adds columns and one index,
 * in place, in the migration transaction. Old entries (NULL `fingerprint`,
 * `audit_details`) keep their idempotency rows and audit lines where they are.
 */
export const FOLD_ROWS_STEP = {
  version: 6,
  name: "ledger: an operation's idempotency result and audit line stored in its journal entry",
  statements: (d: Dialect): string[] => [
    'ALTER TABLE billing_entries ADD COLUMN fingerprint TEXT',
    'ALTER TABLE billing_entries ADD COLUMN result TEXT',
    'ALTER TABLE billing_entries ADD COLUMN audit_details TEXT',
    'CREATE UNIQUE INDEX billing_entries_key ON billing_entries (idempotency_key)',
    ...(d.explicitSeq ? [] : postgresSharedSequence()),
  ],
} as const;

/**
 * The audit table's seq drawn from the entries' sequence, moved past every
 * number either table has used. The ALTER comes first: it waits for any
 * transaction still writing audit lines, so none commits below the new start.
 */
function postgresSharedSequence(): string[] {
  const used = (table: string) =>
    `GREATEST((SELECT COALESCE(MAX(seq), 0) FROM ${table}), (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ${table}_seq_seq))`;
  return [
    "ALTER TABLE billing_audit ALTER COLUMN seq SET DEFAULT nextval('billing_entries_seq_seq')",
    `SELECT setval('billing_entries_seq_seq', GREATEST(m, 1), m > 0) FROM (SELECT GREATEST(${used('billing_entries')}, ${used('billing_audit')}) AS m) AS used`,
  ];
}

/** SQLite (`explicitSeq`): the last number entries and audit lines have used; the writer numbers on from it. */
export const LAST_SEQ_SQL = 'MAX(COALESCE((SELECT MAX(seq) FROM billing_entries), 0), COALESCE((SELECT MAX(seq) FROM billing_audit), 0))';
