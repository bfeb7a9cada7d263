import { BillingError, IdempotencyConflictError } from '../errors';
import { periodContaining } from '../period';
import { APPLY, BatchState, type LoadedRows } from './batch-apply';
import { type LoadSql, loadSql, splitReads } from './batch-reads';
import { type Dialect, type Row, type SqlConnection, type SqlValue, type SyncSqlConnection, type TableWrite, upsertClause, writeTables, writeTablesNow } from './dialect';
import { METERED_OPERATIONS, outboxStateParams, outboxWrites } from './outbox';
import {
  AUDIT_COLUMNS,
  AUDIT_COLUMNS_SEQ,
  AUDIT_TABLE,
  type BatchAudit,
  auditValues,
  auditValuesSeq,
  CHARGE_COLUMNS,
  type ChargeRow,
  chargeFromRow,
  chargeValues,
  CUSTOMER_COLUMNS,
  type CustomerRow,
  customerFromRow,
  customerValues,
  ENTRY_COLUMNS,
  ENTRY_COLUMNS_SEQ,
  entryValues,
  entryValuesSeq,
  HOLD_COLUMNS,
  type HoldRow,
  holdFromRow,
  holdValues,
  type IdemRow,
  operationOfEntry,
} from './rows';
import { readStoredResult, sameFingerprint, storedAuditDetails, storedFingerprint, storeResult } from './stored-results';
import { lastUsedSeq, lastUsedSeqNow } from './within';

/** Priced fields carried by holds, settles and charges. */
export interface PricedFields {
  chargeType: string | null;
  quantity: string | null;
  rateCardVersion: string | null;
  metadata: Record<string, unknown>;
}

export type Op =
  | { kind: 'createCustomer'; customerId: string; name: string | null; actor: string }
  | { kind: 'topUp'; key: string; actor: string; customerId: string; amount: bigint; memo: string | null }
  /** With `addTo`, the amount is added to that pending hold of the same customer (its expiry moves to now + ttl if later). */
  | { kind: 'hold'; key: string; actor: string; customerId: string; amount: bigint; ttlMs: number; priced: PricedFields; addTo?: string }
  /** `final: false` captures part of the hold and leaves it pending with what is left (multicapture). */
  | { kind: 'settle'; key: string; actor: string; holdId: string; amount: bigint; final?: boolean; priced: Partial<PricedFields> }
  | { kind: 'release'; key: string; actor: string; holdId: string }
  | { kind: 'charge'; key: string; actor: string; customerId: string; amount: bigint; priced: PricedFields }
  | { kind: 'refund'; key: string; actor: string; chargeId: string; amount: bigint | null; reason: string | null }
  /** Locks a customer so its expired holds are released; used by the sweeper. */
  | { kind: 'touch'; customerId: string }
  /** Sets or clears the monthly budget (null limit) anchored on a day of the month. */
  | { kind: 'setBudget'; customerId: string; limit: bigint | null; anchorDay: number; actor: string };

export type Outcome = { ok: true; value: unknown } | { ok: false; error: BillingError };

// Rows loaded (and, for customers, locked) by this batch are written back over themselves.
const CUSTOMER_UPSERT = upsertClause('id', ['balance', 'held', 'updated_at', 'budget', 'budget_anchor_day', 'budget_period_start', 'budget_period_end', 'budget_spent']);
// A hold's amount and expiry change under a partial capture or an incremental hold.
const HOLD_UPSERT = upsertClause('id', ['amount', 'status', 'expires_at', 'charge_id']);
const CHARGE_UPSERT = upsertClause('id', ['refunded']);
const IDEM_COLUMNS = ['key', 'operation', 'fingerprint', 'customer_id', 'result', 'created_at'] as const;

/** What an operation's idempotency key must be replayed with: its kind's inputs in fixed places. */
function fingerprintParts(op: Op): readonly unknown[] {
  switch (op.kind) {
    case 'topUp':
      return [op.customerId, op.amount];
    case 'hold':
      return [op.customerId, op.amount, op.priced.chargeType, op.priced.quantity, op.priced.rateCardVersion, ...(op.addTo ? [op.addTo] : [])];
    case 'settle':
      return [op.holdId, op.amount, op.priced.chargeType ?? null, op.priced.quantity ?? null, op.priced.rateCardVersion ?? null, ...(op.final === false ? ['partial'] : [])];
    case 'release':
      return [op.holdId];
    case 'charge':
      return [op.customerId, op.amount, op.priced.chargeType, op.priced.quantity, op.priced.rateCardVersion];
    case 'refund':
      return [op.chargeId, op.amount];
    default:
      return NO_PARTS;
  }
}

const NO_PARTS: readonly unknown[] = [];

/** The batch's lookups recur with every operation: worth keeping prepared where the dialect can. */
const PREPARE = { prepare: true } as const;

/**
 * One write transaction applying many operations (group commit): load (rows
 * read and customers locked up front in a few round trips) → apply (every
 * operation in memory, in arrival order, one function per kind) → write (the
 * changed rows with multi-row statements). Business failures are
 * per-operation outcomes; only a database failure aborts the batch.
 */
export async function executeBatch(d: Dialect, c: SqlConnection, ops: readonly Op[], now: number): Promise<Outcome[]> {
  const plan = loadPlan(d, ops, now);
  const none = Promise.resolve([] as Row[]);
  // The reads are issued together, without waiting for each other: a pipelining dialect (PostgreSQL) sends
  // them in one round trip. The server still runs them in order, the reads after the lock with a snapshot
  // taken after it, so they see what the lock's previous holder committed.
  const [lockedRows, afterLock, chargeRows] = await Promise.all([
    plan.sql.lock ? c.query(plan.sql.lock, plan.ownerParams, PREPARE) : none,
    plan.sql.reads ? c.query(plan.sql.reads, plan.params, { prepare: true, longestList: plan.longestList }) : none,
    plan.sql.charges ? c.query(plan.sql.charges, plan.chargeIds, PREPARE) : none,
  ]);
  const loaded = loadedRows(plan, lockedRows, afterLock, chargeRows);
  for (const q of periodSpendReads(ops, loaded, now)) (loaded.periodSpend ??= new Map()).set(q.customerId, spendOf(await c.query(q.sql, q.params)));
  const { s, outcomes } = applyAll(loaded, ops, now);
  const fold = foldAudit(s.newAudit);
  const seq = needsSeq(d, s, fold) ? (loaded.lastSeq ?? (await lastUsedSeq(c))) : 0;
  await writeTables(c, d, tableWrites(d, s, loaded, fold, seq));
  return outcomes;
}

/**
 * executeBatch on a connection whose driver answers synchronously (SQLite):
 * the same statements in the same order, without a promise between the steps
 * (they were most of what a lone operation allocated: a scavenge in the
 * young generation every so many operations is a millisecond stall).
 */
export function executeBatchNow(d: Dialect, c: SyncSqlConnection, ops: readonly Op[], now: number): Outcome[] {
  const plan = loadPlan(d, ops, now);
  const lockedRows = plan.sql.lock ? c.queryNow(plan.sql.lock, plan.ownerParams) : [];
  const afterLock = plan.sql.reads ? c.queryNow(plan.sql.reads, plan.params) : [];
  const chargeRows = plan.sql.charges ? c.queryNow(plan.sql.charges, plan.chargeIds) : [];
  const loaded = loadedRows(plan, lockedRows, afterLock, chargeRows);
  for (const q of periodSpendReads(ops, loaded, now)) (loaded.periodSpend ??= new Map()).set(q.customerId, spendOf(c.queryNow(q.sql, q.params)));
  const { s, outcomes } = applyAll(loaded, ops, now);
  const fold = foldAudit(s.newAudit);
  const seq = needsSeq(d, s, fold) ? (loaded.lastSeq ?? lastUsedSeqNow(c)) : 0;
  writeTablesNow(c, d, tableWrites(d, s, loaded, fold, seq));
  return outcomes;
}

function applyAll(loaded: Loaded, ops: readonly Op[], now: number): { s: BatchState; outcomes: Outcome[] } {
  const s = new BatchState(now, loaded);
  s.expireOverdue();
  const outcomes = new Array<Outcome>(ops.length);
  for (let i = 0; i < ops.length; i++) outcomes[i] = applyOne(s, ops[i]!, i === ops.length - 1);
  return { s, outcomes };
}

/**
 * Idempotency around one operation: a replay returns the stored result, a new
 * key stores this one's, in the operation's journal entry when it wrote one
 * (fold-rows.ts), else in an idempotency row of its own.
 */
function applyOne(s: BatchState, op: Op, last: boolean): Outcome {
  const apply = APPLY[op.kind] as (s: BatchState, op: Op) => unknown;
  try {
    if (!('key' in op)) return { ok: true, value: apply(s, op) };
    const parts = fingerprintParts(op);
    const fp = storedFingerprint(parts);
    const prior = s.idem?.get(op.key);
    if (prior) {
      if (prior.operation !== op.kind || !sameFingerprint(prior.fingerprint, fp, parts)) throw new IdempotencyConflictError(op.key, op.kind);
      return { ok: true, value: readStoredResult(prior.result) };
    }
    const entriesBefore = s.newEntries.length;
    const value = apply(s, op);
    const row: IdemRow = {
      key: op.key, operation: op.kind, fingerprint: fp, customerId: customerIdOf(op, s.holds, s.charges), result: storeResult(value), createdAt: s.now,
    };
    // A later operation of the batch with the same key is a replay of this one; after the last, nobody looks.
    if (!last) (s.idem ??= new Map()).set(op.key, row);
    // An operation writes at most one entry, after the batch's expiries.
    const entry = s.newEntries.length > entriesBefore ? s.newEntries[s.newEntries.length - 1]! : null;
    if (entry) {
      entry.fingerprint = fp;
      entry.result = row.result;
    } else {
      s.newIdem.push(row);
    }
    return { ok: true, value };
  } catch (e) {
    if (e instanceof BillingError) return { ok: false, error: e };
    throw e;
  }
}

/** What a batch reads, decided from its operations alone: the statements and their parameters. */
interface LoadPlan {
  readonly sql: LoadSql;
  /** Lock parameters: the customers named by the operations, or owning their holds and charges (which never change owner). */
  readonly ownerParams: string[];
  /** The reads after the lock, in one statement, with their parameters in the order loadSql wrote them. */
  readonly params: (string | number)[];
  readonly chargeIds: string[];
  /** The holds the operations name (each once). */
  readonly holdIds: readonly string[];
  /** The reads are prepared by the length of their longest key list, not their parameter count (see QueryOptions.longestList). */
  readonly longestList: number;
}

/**
 * Which rows the batch needs; customers are locked in sorted order (the
 * statement's ORDER BY), so concurrent batches in other processes can never
 * deadlock on customers.
 */
function loadPlan(d: Dialect, ops: readonly Op[], now: number): LoadPlan {
  // Collected in arrays kept between batches (this runs to its end without yielding), then copied out at
  // their exact size: a new array grown by push takes room for 17 elements, four of them per batch.
  const holdList = scratch.holds;
  const chargeList = scratch.charges;
  const keyList = scratch.keys;
  const customerList = scratch.customers;
  holdList.length = chargeList.length = keyList.length = customerList.length = 0;
  let metering = false;
  for (const op of ops) {
    if ('key' in op) keyList.push(op.key);
    if (op.kind === 'settle' || op.kind === 'release') holdList.push(op.holdId);
    else if (op.kind === 'refund') chargeList.push(op.chargeId);
    else customerList.push(op.customerId);
    if (op.kind === 'hold' && op.addTo) holdList.push(op.addTo);
    if (METERED_OPERATIONS.has(op.kind)) metering = true;
  }
  // Each list in first-seen order without repeats. A lone operation names each id once (an
  // incremental hold's other hold is in its own list): no Set to build for it.
  const holdIds = distinct(holdList, ops.length);
  const chargeIds = distinct(chargeList, ops.length);
  const keys = distinct(keyList, ops.length);
  const customerIds = distinct(customerList, ops.length);

  // The statements' text depends only on the list lengths: built once per shape (batch-reads.ts).
  const sql = loadSql(d, { customers: customerIds.length, holds: holdIds.length, charges: chargeIds.length, keys: keys.length, metering });
  const ownerParams = customerIds.concat(holdIds, chargeIds);
  const params: (string | number)[] = sql.lock
    ? (holdIds as (string | number)[]).concat(ownerParams, now, keys, keys, sql.outbox ? outboxStateParams(ownerParams) : NO_PARAMS)
    : (holdIds as (string | number)[]).concat(keys, keys, sql.outbox ? outboxStateParams(ownerParams) : NO_PARAMS);
  const longestList = Math.max(customerIds.length, holdIds.length, chargeIds.length, keys.length);
  return { sql, ownerParams, params, chargeIds, holdIds, longestList };
}

const scratch = { holds: [] as string[], charges: [] as string[], keys: [] as string[], customers: [] as string[] };
const NO_PARAMS: readonly string[] = [];

/** A copy of `xs` without repeats, in first-seen order (a batch of one operation has none). */
const distinct = (xs: readonly string[], ops: number): string[] => (ops > 1 && xs.length > 1 ? [...new Set(xs)] : xs.slice());

/** The loaded rows, from the plan's statements' answers (no charge rows: its `charges` was null). */
function loadedRows(plan: LoadPlan, lockedRows: readonly Row[], afterLock: readonly Row[], loadedCharges: readonly Row[]): Loaded {
  const read = splitReads(afterLock);
  const customers = new Map<string, CustomerRow>();
  for (const r of lockedRows) customers.set(String(r.id), customerFromRow(r));
  const holds = new Map<string, HoldRow>();
  const idem = read.idem.length > 0 ? new Map<string, IdemRow>() : null;
  // The few holds of a usual batch are searched in their list; a long list gets a Set.
  const named = plan.holdIds.length > 8 ? new Set(plan.holdIds) : null;
  for (const r of read.holds) {
    const id = String(r.id);
    // A customer created after the lock was taken is not locked: its holds are left alone, as if never read.
    if ((named ? named.has(id) : plan.holdIds.includes(id)) || customers.has(String(r.customer_id))) holds.set(id, holdFromRow(r));
  }
  const charges = new Map<string, ChargeRow>();
  for (const r of loadedCharges) charges.set(String(r.id), chargeFromRow(r));
  for (const r of read.idem) {
    const operation = String(r.operation);
    // Only a replay reads these back: what is written is a new key's row, built in applyOne.
    idem!.set(String(r.key), {
      key: String(r.key), operation: Number(r.journal) === 1 ? operationOfEntry(operation) : operation, fingerprint: String(r.fingerprint),
      customerId: null, result: String(r.result), createdAt: 0,
    });
  }
  const lastSeq = lockedRows[0] && lockedRows[0].last_seq_ !== undefined ? Number(lockedRows[0].last_seq_) : null;
  return { customers, holds, charges, idem, periodSpend: null, outboxState: plan.sql.outbox ? read.outbox : null, lastSeq };
}

/** Net charges so far in the period a new budget starts in: one read per budget set (rare), after the others. */
function periodSpendReads(ops: readonly Op[], loaded: Loaded, now: number): ReadonlyArray<{ customerId: string; sql: string; params: SqlValue[] }> {
  let out: Array<{ customerId: string; sql: string; params: SqlValue[] }> | null = null;
  for (const op of ops) {
    if (op.kind !== 'setBudget' || op.limit === null || !loaded.customers.has(op.customerId)) continue;
    const p = periodContaining(now, op.anchorDay);
    (out ??= []).push({ customerId: op.customerId, sql: 'SELECT COALESCE(SUM(amount - refunded), 0) AS s FROM billing_charges WHERE customer_id = ? AND created_at >= ?', params: [op.customerId, p.start] });
  }
  return out ?? NO_READS;
}

const NO_READS: readonly never[] = [];
const spendOf = (rows: readonly Row[]): bigint => BigInt(String(rows[0]?.s ?? 0));

interface Loaded extends LoadedRows {
  readonly outboxState: readonly Row[] | null;
  /** `Dialect.explicitSeq`: the last number an entry or audit line took, when the lock read it (null: no customer row). */
  readonly lastSeq: number | null;
}

/**
 * Whether every audit line of the batch can be kept in its entry: each
 * belongs to a journal operation, and says nothing its entry does not
 * (fold-rows.ts). A batch with any other line (a new customer, a budget, an
 * incremental hold on another rate card) writes all its lines to
 * billing_audit instead, so the lines keep their order in one numbering
 * whichever way the database numbers the two tables.
 */
function foldsAudit(lines: readonly BatchAudit[]): boolean {
  for (const a of lines) {
    const e = a.entry;
    if (
      e === null || a.at !== e.createdAt || a.actor !== e.actor || a.idempotencyKey !== e.idempotencyKey || a.customerId !== e.customerId ||
      a.rateCardVersion !== e.rateCardVersion || a.operation !== operationOfEntry(e.type)
    ) {
      return false;
    }
  }
  return true;
}

/** Keeps every audit line in its entry when the batch allows it (foldsAudit); true when it did. */
function foldAudit(lines: readonly BatchAudit[]): boolean {
  const fold = foldsAudit(lines);
  if (fold) for (const a of lines) a.entry!.auditDetails = storedAuditDetails(a.details, a.entry!.holdId, a.entry!.chargeId);
  return fold;
}

/** Whether the rows take numbers from the writer (SQLite), which then needs the last one used. */
function needsSeq(d: Dialect, s: BatchState, fold: boolean): boolean {
  return d.explicitSeq === true && (s.newEntries.length > 0 || !fold);
}

/**
 * What the batch changed, as table writes, plus the Stripe outbox rows its
 * entries owe. Entries and then the batch's lines in billing_audit are
 * numbered from `seq` here (SQLite) or by the database's one sequence (PostgreSQL).
 */
function tableWrites(d: Dialect, s: BatchState, loaded: Loaded, fold: boolean, seq: number): TableWrite[] {
  const { customers, holds, charges, createdCustomers, dirtyCustomers, dirtyHolds, dirtyCharges, newEntries, newIdem, newAudit, now } = s;
  // Meter events owed to Stripe, in this same transaction as their entries (see outbox.ts).
  const outbox = outboxWrites(loaded.outboxState, newEntries, now);
  const entryRows = d.explicitSeq ? newEntries.map((e) => entryValuesSeq(e, ++seq)) : newEntries.map(entryValues);
  const auditLines = fold ? [] : newAudit;
  const auditRows = d.explicitSeq ? auditLines.map((a) => auditValuesSeq(a, ++seq)) : auditLines.map(auditValues);

  // Only the tables with rows, built without intermediate arrays: a lone operation writes four or five.
  const writes: TableWrite[] = [];
  if (dirtyCustomers.size > 0) {
    // A plain INSERT: if another process created the customer after this batch looked (its row was
    // invisible, so unlocked), the unique violation aborts the batch and it is retried against the
    // committed row, instead of an upsert overwriting that row's balance with this batch's zero.
    if (createdCustomers) {
      const created: SqlValue[][] = [];
      const updated: SqlValue[][] = [];
      for (const id of dirtyCustomers) (createdCustomers.has(id) ? created : updated).push(customerValues(customers.get(id)!));
      if (created.length > 0) writes.push({ table: 'billing_customers', columns: CUSTOMER_COLUMNS, rows: created });
      if (updated.length > 0) writes.push({ table: 'billing_customers', columns: CUSTOMER_COLUMNS, rows: updated, onConflict: CUSTOMER_UPSERT });
    } else {
      writes.push({ table: 'billing_customers', columns: CUSTOMER_COLUMNS, rows: valuesOf(dirtyCustomers, customers, customerValues), onConflict: CUSTOMER_UPSERT });
    }
  }
  if (dirtyHolds.size > 0) writes.push({ table: 'billing_holds', columns: HOLD_COLUMNS, rows: valuesOf(dirtyHolds, holds, holdValues), onConflict: HOLD_UPSERT });
  if (dirtyCharges.size > 0) writes.push({ table: 'billing_charges', columns: CHARGE_COLUMNS, rows: valuesOf(dirtyCharges, charges, chargeValues), onConflict: CHARGE_UPSERT });
  if (entryRows.length > 0) writes.push({ table: 'billing_entries', columns: d.explicitSeq ? ENTRY_COLUMNS_SEQ : ENTRY_COLUMNS, rows: entryRows });
  if (newIdem.length > 0) {
    writes.push({ table: 'billing_idempotency', columns: IDEM_COLUMNS, rows: newIdem.map((r) => [r.key, r.operation, r.fingerprint, r.customerId, r.result, r.createdAt]) });
  }
  if (auditRows.length > 0) writes.push({ table: AUDIT_TABLE, columns: d.explicitSeq ? AUDIT_COLUMNS_SEQ : AUDIT_COLUMNS, rows: auditRows });
  for (const w of outbox) writes.push(w);
  return writes;
}

/** The rows of the ids' values, in the set's order, in an array of their exact size (one grown by push takes room for 17). */
function valuesOf<R>(ids: ReadonlySet<string>, rows: ReadonlyMap<string, R>, values: (row: R) => SqlValue[]): SqlValue[][] {
  const out = new Array<SqlValue[]>(ids.size);
  let i = 0;
  for (const id of ids) out[i++] = values(rows.get(id)!);
  return out;
}

function customerIdOf(op: Op, holds: Map<string, HoldRow>, charges: Map<string, ChargeRow>): string | null {
  if (op.kind === 'settle' || op.kind === 'release') return holds.get(op.holdId)?.customerId ?? null;
  if (op.kind === 'refund') return charges.get(op.chargeId)?.customerId ?? null;
  return op.customerId;
}

