import { budgetStateAt } from './budget-period';
import { type Dialect, insertRows, type Row, type SqlConnection, type SyncSqlConnection } from './dialect';
import { NON_USAGE_CHARGE_TYPES } from './outbox';
import { LAST_SEQ_SQL } from './fold-rows';
import { AUDIT_COLUMNS, AUDIT_COLUMNS_SEQ, AUDIT_TABLE, type AuditRow, auditValues, auditValuesSeq, customerFromRow, expiredHeldSql } from './rows';
import type { BudgetState } from './types';

/** One priced charge as usage counting needs it. */
export interface ChargeUsage {
  readonly chargeType: string | null;
  readonly quantity: string;
}

/** A line of the ledger's audit trail written by a sibling module (e.g. a plan change). */
export interface AuditInput {
  readonly at: number;
  readonly actor: string;
  readonly operation: string;
  readonly customerId: string | null;
  readonly details: Record<string, unknown>;
}

/**
 * The ledger inside a caller's transaction on the ledger's database, so a
 * module that keeps its own tables beside the ledger (quota) decides on the
 * same snapshot it writes in. Reads, plus the audit trail; money moves only
 * through `Ledger`.
 */
export interface LedgerView {
  customerExists(customerId: string): Promise<boolean>;
  /** The budget as of `at` (a period that ended reads as a fresh one); null when the customer is unknown. */
  budgetAt(customerId: string, at: number): Promise<BudgetState | null>;
  /** The budget as budgetAt, and the available balance (holds past their expiry no longer count) from the same read. */
  budgetAndAvailableAt(customerId: string, at: number): Promise<{ budget: BudgetState; available: bigint } | null>;
  /** Charges created in [from, to) that carry a quantity. */
  chargedUsage(customerId: string, from: number, to: number): Promise<ChargeUsage[]>;
  /** What usage charges created in [from, to) collected, net of refunds (not invoice collections or top-up refunds). */
  collected(customerId: string, from: number, to: number): Promise<bigint>;
  /** Appends to the audit trail; commits with the caller's transaction. */
  audit(entry: AuditInput): Promise<void>;
}

/** A customer's row with its expired holds' sum (rows.ts expiredHeldSql), for budgetAndAvailableAt. */
const BUDGET_AND_EXPIRED_SQL = `SELECT *, ${expiredHeldSql('billing_customers.id')} AS expired_held FROM billing_customers WHERE id = ?`;

export function ledgerView(c: SqlConnection, d: Dialect): LedgerView {
  return {
    async customerExists(customerId) {
      const [r] = await c.query('SELECT id FROM billing_customers WHERE id = ?', [customerId]);
      return r !== undefined;
    },
    async budgetAt(customerId, at) {
      // Every admission reads it: kept prepared where the dialect can.
      const [r] = await c.query('SELECT * FROM billing_customers WHERE id = ?', [customerId], { prepare: true });
      return r ? budgetStateAt(customerFromRow(r), at) : null;
    },
    async budgetAndAvailableAt(customerId, at) {
      const [r] = await c.query(BUDGET_AND_EXPIRED_SQL, [at, customerId], { prepare: true });
      if (!r) return null;
      const cust = customerFromRow(r);
      return { budget: budgetStateAt(cust, at), available: cust.balance - cust.held + BigInt(String(r.expired_held ?? 0)) };
    },
    async chargedUsage(customerId, from, to) {
      const rows = await c.query('SELECT charge_type, quantity FROM billing_charges WHERE customer_id = ? AND created_at >= ? AND created_at < ? AND quantity IS NOT NULL', [
        customerId,
        from,
        to,
      ]);
      return rows.map((r) => ({ chargeType: r.charge_type === null || r.charge_type === undefined ? null : String(r.charge_type), quantity: String(r.quantity) }));
    },
    async collected(customerId, from, to) {
      const other = [...NON_USAGE_CHARGE_TYPES];
      const [r] = await c.query(
        `SELECT COALESCE(SUM(amount - refunded), 0) AS s FROM billing_charges WHERE customer_id = ? AND created_at >= ? AND created_at < ? AND (charge_type IS NULL OR charge_type NOT IN (${other.map(() => '?').join(', ')}))`,
        [customerId, from, to, ...other],
      );
      return BigInt(String(r?.s ?? 0));
    },
    audit: (e) => writeAudit(c, d, e),
  };
}

/** One audit line outside a journal operation (no idempotency key, no rate card). */
export async function writeAudit(c: SqlConnection, d: Dialect, e: AuditInput): Promise<void> {
  await appendAudit(c, d, [{ at: e.at, actor: e.actor, operation: e.operation, idempotencyKey: null, customerId: e.customerId, rateCardVersion: null, details: e.details }]);
}

/** Lines into billing_audit, numbered after every entry and audit line so far (fold-rows.ts: one numbering). */
export async function appendAudit(c: SqlConnection, d: Dialect, lines: readonly AuditRow[], lastSeq?: number): Promise<void> {
  if (!d.explicitSeq) return insertRows(c, d, AUDIT_TABLE, AUDIT_COLUMNS, lines.map(auditValues));
  const last = lastSeq ?? (await lastUsedSeq(c));
  return insertRows(c, d, AUDIT_TABLE, AUDIT_COLUMNS_SEQ, lines.map((a, i) => auditValuesSeq(a, last + 1 + i)));
}

/** `Dialect.explicitSeq`: the last number an entry or audit line took, read under the write lock. */
export async function lastUsedSeq(c: SqlConnection): Promise<number> {
  return seqOf(await c.query(LAST_SEQ_SELECT));
}

/** lastUsedSeq on a synchronous connection. */
export function lastUsedSeqNow(c: SyncSqlConnection): number {
  return seqOf(c.queryNow(LAST_SEQ_SELECT));
}

const LAST_SEQ_SELECT = `SELECT ${LAST_SEQ_SQL} AS s`;
const seqOf = (rows: readonly Row[]): number => Number(rows[0]?.s ?? 0);

/** The ledger customer that a top-up with this idempotency key credited, or null. */
export async function toppedUpCustomer(c: SqlConnection, idempotencyKey: string): Promise<string | null> {
  // Its entry (fold-rows.ts), or the idempotency row of a top-up from before that step.
  const [r] = await c.query(
    "SELECT customer_id FROM billing_entries WHERE idempotency_key = ? AND type = 'topup' UNION ALL SELECT customer_id FROM billing_idempotency WHERE key = ? AND operation = 'topUp'",
    [idempotencyKey, idempotencyKey],
  );
  return r ? String(r.customer_id) : null;
}
