import type { Row, SqlValue } from './dialect';
import type { Charge, Customer, Entry, EntryType, Hold, HoldStatus } from './types';

/** Database rows as the ledger keeps them in memory during a batch. */
export interface CustomerRow {
  id: string;
  name: string | null;
  balance: bigint;
  held: bigint;
  createdAt: number;
  updatedAt: number;
  /** Most the customer may spend per budget period; null for no budget. */
  budget: bigint | null;
  budgetAnchorDay: number | null;
  budgetPeriodStart: number | null;
  budgetPeriodEnd: number | null;
  /** Collected in the current budget period (net of refunds of this period's charges). */
  budgetSpent: bigint;
}

export interface HoldRow {
  id: string;
  customerId: string;
  amount: bigint;
  status: HoldStatus;
  expiresAt: number;
  createdAt: number;
  chargeType: string | null;
  quantity: string | null;
  rateCardVersion: string | null;
  chargeId: string | null;
  availableAfter: bigint;
}

export interface ChargeRow {
  id: string;
  customerId: string;
  holdId: string | null;
  amount: bigint;
  shortfall: bigint;
  refunded: bigint;
  chargeType: string | null;
  quantity: string | null;
  rateCardVersion: string | null;
  createdAt: number;
  balanceAfter: bigint;
  metadata: Record<string, unknown>;
}

export interface EntryRow {
  id: string;
  customerId: string;
  type: EntryType;
  amount: bigint;
  heldDelta: bigint;
  balanceAfter: bigint;
  holdId: string | null;
  chargeId: string | null;
  idempotencyKey: string | null;
  actor: string;
  rateCardVersion: string | null;
  chargeType: string | null;
  quantity: string | null;
  memo: string | null;
  createdAt: number;
  /** The operation's idempotency record (fold-rows.ts): set when the batch writes the entry, null on an expiry. */
  fingerprint: string | null;
  result: string | null;
  /** The operation's audit line, when the batch folds it into the entry (batch.ts); else the line is in billing_audit. */
  auditDetails: string | null;
}

const big = (v: unknown): bigint => BigInt(v as string | number | bigint);
const num = (v: unknown): number => Number(v);
/** A nullable text column as a string or null. */
export const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
let lastIsoMs = NaN;
let lastIso = '';
let prevIsoMs = NaN;
let prevIso = '';
/**
 * Epoch ms → ISO text. A batch stamps every row with the same `now`, and a
 * hold's result also shows its expiry, so the last two conversions are kept.
 */
export function iso(ms: number): string {
  if (ms === lastIsoMs) return lastIso;
  if (ms === prevIsoMs) {
    prevIsoMs = lastIsoMs;
    lastIsoMs = ms;
    const text = prevIso;
    prevIso = lastIso;
    lastIso = text;
    return text;
  }
  prevIsoMs = lastIsoMs;
  prevIso = lastIso;
  lastIso = new Date(ms).toISOString();
  lastIsoMs = ms;
  return lastIso;
}

/** The epoch ms a canonical ISO text stands for (one `iso` just made is found in its cache); NaN for any other text. */
export function msOfIso(text: string): number {
  if (text === lastIso) return lastIsoMs;
  if (text === prevIso) return prevIsoMs;
  const ms = Date.parse(text);
  return Number.isFinite(ms) && iso(ms) === text ? ms : NaN;
}

/**
 * The sum of a customer's pending holds past their expiry at `?`: they no
 * longer count against the balance, even before a sweep has released them.
 * `customerId` is the SQL naming the customer (a qualified column or `?`).
 */
export function expiredHeldSql(customerId: string): string {
  return `(SELECT COALESCE(SUM(amount), 0) FROM billing_holds WHERE customer_id = ${customerId} AND status = 'pending' AND expires_at <= ?)`;
}

/** What callers see of a customer (money stays behind balance()). */
export function customerOut(c: Pick<CustomerRow, 'id' | 'name' | 'createdAt'>): Customer {
  return { id: c.id, name: c.name, createdAt: iso(c.createdAt) };
}

/** The id, name and creation time of a customers row read with only those columns. */
export function customerFromNameRow(r: Row): Customer {
  return customerOut({ id: String(r.id), name: str(r.name), createdAt: num(r.created_at) });
}

export function customerFromRow(r: Row): CustomerRow {
  return {
    id: String(r.id),
    name: str(r.name),
    balance: big(r.balance),
    held: big(r.held),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    budget: r.budget === null || r.budget === undefined ? null : big(r.budget),
    budgetAnchorDay: r.budget_anchor_day === null || r.budget_anchor_day === undefined ? null : num(r.budget_anchor_day),
    budgetPeriodStart: r.budget_period_start === null || r.budget_period_start === undefined ? null : num(r.budget_period_start),
    budgetPeriodEnd: r.budget_period_end === null || r.budget_period_end === undefined ? null : num(r.budget_period_end),
    budgetSpent: r.budget_spent === null || r.budget_spent === undefined ? 0n : big(r.budget_spent),
  };
}

export function holdFromRow(r: Row): HoldRow {
  return {
    id: String(r.id),
    customerId: String(r.customer_id),
    amount: big(r.amount),
    status: String(r.status) as HoldStatus,
    expiresAt: num(r.expires_at),
    createdAt: num(r.created_at),
    chargeType: str(r.charge_type),
    quantity: str(r.quantity),
    rateCardVersion: str(r.rate_card_version),
    chargeId: str(r.charge_id),
    availableAfter: big(r.available_after),
  };
}

export function chargeFromRow(r: Row): ChargeRow {
  return {
    id: String(r.id),
    customerId: String(r.customer_id),
    holdId: str(r.hold_id),
    amount: big(r.amount),
    shortfall: big(r.shortfall),
    refunded: big(r.refunded),
    chargeType: str(r.charge_type),
    quantity: str(r.quantity),
    rateCardVersion: str(r.rate_card_version),
    createdAt: num(r.created_at),
    balanceAfter: big(r.balance_after),
    metadata: JSON.parse(String(r.metadata)) as Record<string, unknown>,
  };
}

export function entryFromRow(r: Row): Entry {
  return {
    seq: num(r.seq),
    id: String(r.id),
    customerId: String(r.customer_id),
    type: String(r.type) as EntryType,
    amount: big(r.amount),
    heldDelta: big(r.held_delta),
    balanceAfter: big(r.balance_after),
    holdId: str(r.hold_id),
    chargeId: str(r.charge_id),
    idempotencyKey: str(r.idempotency_key),
    actor: String(r.actor),
    rateCardVersion: str(r.rate_card_version),
    chargeType: str(r.charge_type),
    quantity: str(r.quantity),
    memo: str(r.memo),
    createdAt: iso(num(r.created_at)),
  };
}

export const CUSTOMER_COLUMNS = [
  'id', 'name', 'balance', 'held', 'created_at', 'updated_at',
  'budget', 'budget_anchor_day', 'budget_period_start', 'budget_period_end', 'budget_spent',
] as const;
export const customerValues = (c: CustomerRow): SqlValue[] => [
  c.id, c.name, c.balance, c.held, c.createdAt, c.updatedAt,
  c.budget, c.budgetAnchorDay, c.budgetPeriodStart, c.budgetPeriodEnd, c.budgetSpent,
];

export const HOLD_COLUMNS = [
  'id', 'customer_id', 'amount', 'status', 'expires_at', 'created_at',
  'charge_type', 'quantity', 'rate_card_version', 'charge_id', 'available_after',
] as const;
export const holdValues = (h: HoldRow): SqlValue[] => [
  h.id, h.customerId, h.amount, h.status, h.expiresAt, h.createdAt,
  h.chargeType, h.quantity, h.rateCardVersion, h.chargeId, h.availableAfter,
];

export const CHARGE_COLUMNS = [
  'id', 'customer_id', 'hold_id', 'amount', 'shortfall', 'refunded', 'charge_type',
  'quantity', 'rate_card_version', 'created_at', 'balance_after', 'metadata',
] as const;
export const chargeValues = (c: ChargeRow): SqlValue[] => [
  c.id, c.customerId, c.holdId, c.amount, c.shortfall, c.refunded, c.chargeType,
  c.quantity, c.rateCardVersion, c.createdAt, c.balanceAfter, JSON.stringify(c.metadata),
];

export const ENTRY_COLUMNS = [
  'id', 'customer_id', 'type', 'amount', 'held_delta', 'balance_after', 'hold_id', 'charge_id',
  'idempotency_key', 'actor', 'rate_card_version', 'charge_type', 'quantity', 'memo', 'created_at',
  'fingerprint', 'result', 'audit_details',
] as const;
/** The same, numbered by the writer (`Dialect.explicitSeq`). */
export const ENTRY_COLUMNS_SEQ = ['seq', ...ENTRY_COLUMNS] as const;
export const entryValues = (e: EntryRow): SqlValue[] => [
  e.id, e.customerId, e.type, e.amount, e.heldDelta, e.balanceAfter, e.holdId, e.chargeId,
  e.idempotencyKey, e.actor, e.rateCardVersion, e.chargeType, e.quantity, e.memo, e.createdAt,
  e.fingerprint, e.result, e.auditDetails,
];
// Spelled out again rather than spread from entryValues: one array per row instead of two.
export const entryValuesSeq = (e: EntryRow, seq: number): SqlValue[] => [
  seq, e.id, e.customerId, e.type, e.amount, e.heldDelta, e.balanceAfter, e.holdId, e.chargeId,
  e.idempotencyKey, e.actor, e.rateCardVersion, e.chargeType, e.quantity, e.memo, e.createdAt,
  e.fingerprint, e.result, e.auditDetails,
];

/**
 * The idempotency operation, and audit operation, an entry's type stands for
 * (one operation kind per entry type; a top-up's kind is spelled topUp).
 */
export function operationOfEntry(type: string): string {
  return type === 'topup' ? 'topUp' : type;
}

/** `availableAfter` overrides the row's (an incremental hold reports the customer's available now). */
export function publicHold(h: HoldRow, availableAfter = h.availableAfter): Hold {
  return {
    id: h.id,
    customerId: h.customerId,
    amount: h.amount,
    status: h.status,
    expiresAt: iso(h.expiresAt),
    createdAt: iso(h.createdAt),
    chargeType: h.chargeType,
    quantity: h.quantity,
    rateCardVersion: h.rateCardVersion,
    chargeId: h.chargeId,
    availableAfter,
  };
}

export function publicCharge(c: ChargeRow): Charge {
  return {
    id: c.id,
    customerId: c.customerId,
    holdId: c.holdId,
    amount: c.amount,
    shortfall: c.shortfall,
    refunded: c.refunded,
    chargeType: c.chargeType,
    quantity: c.quantity,
    rateCardVersion: c.rateCardVersion,
    createdAt: iso(c.createdAt),
    balanceAfter: c.balanceAfter,
    metadata: c.metadata,
  };
}

/** A stored idempotent result. */
export interface IdemRow {
  key: string;
  operation: string;
  fingerprint: string;
  customerId: string | null;
  result: string;
  createdAt: number;
}

/** An audit line of this batch; `entry` is the journal entry of the same operation, if it wrote one. */
export interface BatchAudit extends AuditRow {
  readonly entry: EntryRow | null;
}

/** One line of the audit trail, as every module that mutates the ledger database writes it. */
export interface AuditRow {
  at: number;
  actor: string;
  operation: string;
  idempotencyKey: string | null;
  customerId: string | null;
  rateCardVersion: string | null;
  details: Record<string, unknown>;
}

export const AUDIT_TABLE = 'billing_audit';
export const AUDIT_COLUMNS = ['at', 'actor', 'operation', 'idempotency_key', 'customer_id', 'rate_card_version', 'details'] as const;
export const AUDIT_COLUMNS_SEQ = ['seq', ...AUDIT_COLUMNS] as const;
export const auditValues = (a: AuditRow): SqlValue[] => [a.at, a.actor, a.operation, a.idempotencyKey, a.customerId, a.rateCardVersion, JSON.stringify(a.details)];
export const auditValuesSeq = (a: AuditRow, seq: number): SqlValue[] => [seq, a.at, a.actor, a.operation, a.idempotencyKey, a.customerId, a.rateCardVersion, JSON.stringify(a.details)];

/**
 * Every audit line, wherever it is kept (fold-rows.ts): billing_audit, and
 * the entries that carry theirs. `journal` tells the second kind, whose
 * operation is spelled by the entry type.
 */
export function auditQuery(customerId: string | null): string {
  const where = customerId === null ? '' : ' AND customer_id = ?';
  return `SELECT seq, at, actor, operation, idempotency_key, customer_id, rate_card_version, details, 0 AS journal, NULL AS hold_id, NULL AS charge_id FROM billing_audit WHERE 1 = 1${where}
    UNION ALL
    SELECT seq, created_at, actor, type, idempotency_key, customer_id, rate_card_version, audit_details, 1, hold_id, charge_id FROM billing_entries WHERE audit_details IS NOT NULL${where}
    ORDER BY seq LIMIT ?`;
}

const bigReplacer = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? { $big: v.toString() } : v);

/**
 * JSON that keeps bigints exact (`{"$big":"…"}`), for stored idempotent
 * results and fingerprints. Stored text is compared and decoded after a
 * restart, so it is exactly what `JSON.stringify(value, bigReplacer)` gives.
 * A replacer function called for every key was a tenth of a batch's CPU, and
 * building the text piece by piece in JavaScript allocated a string per key
 * and value (a third of a batch's bytes); instead, plain objects and arrays
 * holding bigints are copied with each bigint as its `{ $big }` object and the
 * copy goes to JSON.stringify without a replacer, which writes one flat string.
 * Anything else (toJSON, class instances) goes through the replacer path itself.
 */
export function encodeResult(value: unknown): string {
  const plain = withBigsBoxed(value);
  return plain === NOT_PLAIN ? JSON.stringify(value, bigReplacer) : JSON.stringify(plain);
}

const NOT_PLAIN: unique symbol = Symbol('not plain');

/** `v` itself when it holds no bigint, a copy with every bigint boxed when it does; NOT_PLAIN when only the replacer path can say. */
function withBigsBoxed(v: unknown): unknown {
  if (typeof v === 'bigint') return { $big: v.toString() };
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    let copy: unknown[] | null = null;
    for (let i = 0; i < v.length; i++) {
      const item: unknown = v[i];
      const out = withBigsBoxed(item);
      if (out === NOT_PLAIN) return NOT_PLAIN;
      if (copy === null && out !== item) copy = v.slice(0, i) as unknown[];
      if (copy !== null) copy[i] = out;
    }
    return copy ?? v;
  }
  const proto = Object.getPrototypeOf(v) as unknown;
  if ((proto !== Object.prototype && proto !== null) || typeof (v as { toJSON?: unknown }).toJSON === 'function') return NOT_PLAIN;
  const keys = Object.keys(v);
  const o = v as Record<string, unknown>;
  let copy: Record<string, unknown> | null = null;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const item = o[k];
    const out = withBigsBoxed(item);
    if (out === NOT_PLAIN) return NOT_PLAIN;
    if (out === item) continue;
    // A spread copies the keys in order, as own properties (an own `__proto__` too), with the object's shape;
    // assigning then finds each key on the copy itself.
    copy ??= { ...o };
    copy[k] = out;
  }
  return copy ?? v;
}

export function decodeResult<T>(text: string): T {
  return JSON.parse(text, (_k, v: unknown) =>
    v && typeof v === 'object' && '$big' in v && Object.keys(v).length === 1 ? BigInt((v as { $big: string }).$big) : v,
  ) as T;
}
