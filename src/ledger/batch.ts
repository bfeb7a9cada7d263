import { randomUUID } from 'node:crypto';
import {
  BillingError,
  BudgetExceededError,
  CustomerNotFoundError,
  IdempotencyConflictError,
  InsufficientFundsError,
  ValidationError,
} from '../errors';
import { formatUsd, MAX_AMOUNT } from '../money';
import { periodContaining } from '../period';
import { outboxWrites } from './outbox';
import { type Dialect, placeholders, type SqlConnection, upsertClause, writeTables } from './dialect';
import {
  AUDIT_COLUMNS,
  AUDIT_TABLE,
  type AuditRow,
  auditValues,
  CHARGE_COLUMNS,
  type ChargeRow,
  chargeFromRow,
  chargeValues,
  CUSTOMER_COLUMNS,
  type CustomerRow,
  customerFromRow,
  customerValues,
  decodeResult,
  encodeResult,
  ENTRY_COLUMNS,
  type EntryRow,
  entryValues,
  HOLD_COLUMNS,
  type HoldRow,
  holdFromRow,
  holdValues,
  iso,
  publicCharge,
  publicHold,
} from './rows';
import type { BudgetState, Customer, Refund, TopUp } from './types';

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
  | { kind: 'hold'; key: string; actor: string; customerId: string; amount: bigint; ttlMs: number; priced: PricedFields }
  | { kind: 'settle'; key: string; actor: string; holdId: string; amount: bigint; priced: Partial<PricedFields> }
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
const HOLD_UPSERT = upsertClause('id', ['status', 'charge_id']);
const CHARGE_UPSERT = upsertClause('id', ['refunded']);

/** A balance may not grow past this (int64 headroom for the running sums). */
const MAX_BALANCE = 9n * MAX_AMOUNT;

function fingerprint(op: Op): string {
  switch (op.kind) {
    case 'topUp':
      return encodeResult([op.customerId, op.amount]);
    case 'hold':
      return encodeResult([op.customerId, op.amount, op.priced.chargeType, op.priced.quantity, op.priced.rateCardVersion]);
    case 'settle':
      return encodeResult([op.holdId, op.amount, op.priced.chargeType ?? null, op.priced.quantity ?? null, op.priced.rateCardVersion ?? null]);
    case 'release':
      return encodeResult([op.holdId]);
    case 'charge':
      return encodeResult([op.customerId, op.amount, op.priced.chargeType, op.priced.quantity, op.priced.rateCardVersion]);
    case 'refund':
      return encodeResult([op.chargeId, op.amount]);
    default:
      return '';
  }
}

interface IdemRow {
  key: string;
  operation: string;
  fingerprint: string;
  customerId: string | null;
  result: string;
  createdAt: number;
}

const newId = (prefix: string) => `${prefix}_${randomUUID().replace(/-/g, '')}`;

function inList(n: number): string {
  return `(${placeholders(n)})`;
}

/**
 * One write transaction applying many operations (group commit). Rows are
 * loaded and locked up front in a few round trips, every operation is applied
 * in memory in arrival order, and the resulting rows are written back with
 * multi-row statements. Business failures are per-operation outcomes; only a
 * database failure aborts the batch.
 */
export async function executeBatch(d: Dialect, c: SqlConnection, ops: readonly Op[], now: number): Promise<Outcome[]> {
  const holdIds = new Set<string>();
  const chargeIds = new Set<string>();
  const keys = new Set<string>();
  const customerIds = new Set<string>();
  for (const op of ops) {
    if ('key' in op) keys.add(op.key);
    if (op.kind === 'settle' || op.kind === 'release') holdIds.add(op.holdId);
    else if (op.kind === 'refund') chargeIds.add(op.chargeId);
    else customerIds.add(op.customerId);
  }

  // Holds and charges never change owner, so their customers are found and locked in the same statement.
  const customers = new Map<string, CustomerRow>();
  const conds: string[] = [];
  const params: string[] = [];
  if (customerIds.size) {
    conds.push(`id IN ${inList(customerIds.size)}`);
    params.push(...customerIds);
  }
  if (holdIds.size) {
    conds.push(`id IN (SELECT customer_id FROM billing_holds WHERE id IN ${inList(holdIds.size)})`);
    params.push(...holdIds);
  }
  if (chargeIds.size) {
    conds.push(`id IN (SELECT customer_id FROM billing_charges WHERE id IN ${inList(chargeIds.size)})`);
    params.push(...chargeIds);
  }
  if (conds.length) {
    // Sorted lock order: concurrent batches in other processes can never deadlock on customers.
    const rows = await c.query(`SELECT * FROM billing_customers WHERE ${conds.join(' OR ')} ORDER BY id ${d.forUpdate}`, params);
    for (const r of rows) customers.set(String(r.id), customerFromRow(r));
  }
  const lockedIds = [...customers.keys()];

  const holds = new Map<string, HoldRow>();
  if (holdIds.size || lockedIds.length) {
    const conds: string[] = [];
    const params: (string | number)[] = [];
    if (holdIds.size) {
      conds.push(`id IN ${inList(holdIds.size)}`);
      params.push(...holdIds);
    }
    if (lockedIds.length) {
      conds.push(`(customer_id IN ${inList(lockedIds.length)} AND status = 'pending' AND expires_at <= ?)`);
      params.push(...lockedIds, now);
    }
    for (const r of await c.query(`SELECT * FROM billing_holds WHERE ${conds.join(' OR ')}`, params)) holds.set(String(r.id), holdFromRow(r));
  }
  const charges = new Map<string, ChargeRow>();
  if (chargeIds.size) {
    for (const r of await c.query(`SELECT * FROM billing_charges WHERE id IN ${inList(chargeIds.size)}`, [...chargeIds])) {
      charges.set(String(r.id), chargeFromRow(r));
    }
  }
  const idem = new Map<string, IdemRow>();
  if (keys.size) {
    for (const r of await c.query(`SELECT * FROM billing_idempotency WHERE key IN ${inList(keys.size)}`, [...keys])) {
      idem.set(String(r.key), {
        key: String(r.key),
        operation: String(r.operation),
        fingerprint: String(r.fingerprint),
        customerId: r.customer_id === null ? null : String(r.customer_id),
        result: String(r.result),
        createdAt: Number(r.created_at),
      });
    }
  }

  // Net charges so far in the period a new budget starts in.
  const periodSpend = new Map<string, bigint>();
  for (const op of ops) {
    if (op.kind !== 'setBudget' || op.limit === null || !customers.has(op.customerId)) continue;
    const p = periodContaining(now, op.anchorDay);
    const [row] = await c.query('SELECT COALESCE(SUM(amount - refunded), 0) AS s FROM billing_charges WHERE customer_id = ? AND created_at >= ?', [op.customerId, p.start]);
    periodSpend.set(op.customerId, BigInt(String(row?.s ?? 0)));
  }

  const dirtyCustomers = new Set<string>();
  /** Customers this batch inserts; every other dirty customer was locked above and is updated in place. */
  const createdCustomers = new Set<string>();
  const dirtyHolds = new Set<string>();
  const dirtyCharges = new Set<string>();
  const newEntries: EntryRow[] = [];
  const newIdem: IdemRow[] = [];
  const newAudit: AuditRow[] = [];

  const entry = (cust: CustomerRow, e: Omit<EntryRow, 'id' | 'customerId' | 'balanceAfter' | 'createdAt'>) => {
    cust.balance += e.amount;
    cust.held += e.heldDelta;
    cust.updatedAt = now;
    dirtyCustomers.add(cust.id);
    const row: EntryRow = { ...e, id: newId('ent'), customerId: cust.id, balanceAfter: cust.balance, createdAt: now };
    newEntries.push(row);
    return row;
  };
  const audit = (a: Omit<AuditRow, 'at'>) => newAudit.push({ ...a, at: now });
  const customerOf = (id: string) => {
    const cust = customers.get(id);
    if (!cust) throw new CustomerNotFoundError(id);
    return cust;
  };
  const available = (cust: CustomerRow) => cust.balance - cust.held;
  const insufficient = (cust: CustomerRow, required: bigint, extra: Record<string, unknown> = {}) =>
    new InsufficientFundsError({
      customerId: cust.id,
      requiredUsd: formatUsd(required),
      availableUsd: formatUsd(available(cust)),
      ...extra,
    });

  /** Moves the budget period forward when it has ended; spend restarts at zero. */
  const rollBudget = (cust: CustomerRow) => {
    if (cust.budget === null || cust.budgetAnchorDay === null) return;
    if (cust.budgetPeriodEnd !== null && now < cust.budgetPeriodEnd && cust.budgetPeriodStart !== null && now >= cust.budgetPeriodStart) return;
    const p = periodContaining(now, cust.budgetAnchorDay);
    cust.budgetPeriodStart = p.start;
    cust.budgetPeriodEnd = p.end;
    cust.budgetSpent = 0n;
    dirtyCustomers.add(cust.id);
  };
  /** Open holds count against the budget too, so concurrent steps cannot overshoot it together. */
  const checkBudget = (cust: CustomerRow, amount: bigint) => {
    if (cust.budget === null) return;
    rollBudget(cust);
    const committed = cust.budgetSpent + cust.held;
    if (committed + amount > cust.budget) {
      throw new BudgetExceededError({
        customerId: cust.id,
        budgetUsd: formatUsd(cust.budget),
        spentUsd: formatUsd(cust.budgetSpent),
        heldUsd: formatUsd(cust.held),
        requiredUsd: formatUsd(amount),
        periodEnd: iso(cust.budgetPeriodEnd!),
      });
    }
  };
  const addSpend = (cust: CustomerRow, amount: bigint, chargedAt: number) => {
    if (cust.budget === null) return;
    rollBudget(cust);
    if (chargedAt < (cust.budgetPeriodStart ?? 0)) return;
    cust.budgetSpent += amount;
    if (cust.budgetSpent < 0n) cust.budgetSpent = 0n;
  };

  // Lazily expire the locked customers' overdue holds first, so available balances are right.
  const expiredBy = new Map<string, number>();
  for (const h of holds.values()) {
    if (h.status !== 'pending' || h.expiresAt > now || !customers.has(h.customerId)) continue;
    const cust = customers.get(h.customerId)!;
    h.status = 'expired';
    dirtyHolds.add(h.id);
    entry(cust, {
      type: 'expire', amount: 0n, heldDelta: -h.amount, holdId: h.id, chargeId: null, idempotencyKey: null,
      actor: 'system', rateCardVersion: h.rateCardVersion, chargeType: h.chargeType, quantity: h.quantity, memo: 'hold expired',
    });
    audit({ actor: 'system', operation: 'expire', idempotencyKey: null, customerId: cust.id, rateCardVersion: h.rateCardVersion, details: { holdId: h.id, amountUsd: formatUsd(h.amount) } });
    expiredBy.set(cust.id, (expiredBy.get(cust.id) ?? 0) + 1);
  }

  const apply = (op: Op): unknown => {
    switch (op.kind) {
      case 'touch':
        return { expired: expiredBy.get(op.customerId) ?? 0 };

      case 'setBudget': {
        const cust = customerOf(op.customerId);
        cust.budget = op.limit;
        cust.budgetAnchorDay = op.limit === null ? null : op.anchorDay;
        if (op.limit === null) {
          cust.budgetPeriodStart = null;
          cust.budgetPeriodEnd = null;
          cust.budgetSpent = 0n;
        } else {
          const p = periodContaining(now, op.anchorDay);
          if (cust.budgetPeriodStart !== p.start) {
            // Count what this period already collected, so a budget set mid-period is honest.
            cust.budgetPeriodStart = p.start;
            cust.budgetPeriodEnd = p.end;
            cust.budgetSpent = periodSpend.get(cust.id) ?? 0n;
          }
        }
        cust.updatedAt = now;
        dirtyCustomers.add(cust.id);
        audit({ actor: op.actor, operation: 'setBudget', idempotencyKey: null, customerId: cust.id, rateCardVersion: null, details: { budgetUsd: op.limit === null ? null : formatUsd(op.limit), anchorDay: op.anchorDay } });
        return budgetOut(cust);
      }

      case 'createCustomer': {
        const existing = customers.get(op.customerId);
        if (existing) {
          if (op.name !== null && existing.name !== op.name) {
            throw new BillingError('CUSTOMER_EXISTS', `Customer ${op.customerId} already exists with a different name`, {
              customerId: op.customerId,
              existingName: existing.name,
            });
          }
          return customerOut(existing);
        }
        const cust: CustomerRow = {
          id: op.customerId, name: op.name, balance: 0n, held: 0n, createdAt: now, updatedAt: now,
          budget: null, budgetAnchorDay: null, budgetPeriodStart: null, budgetPeriodEnd: null, budgetSpent: 0n,
        };
        customers.set(cust.id, cust);
        dirtyCustomers.add(cust.id);
        createdCustomers.add(cust.id);
        audit({ actor: op.actor, operation: 'createCustomer', idempotencyKey: `customer:${cust.id}`, customerId: cust.id, rateCardVersion: null, details: { name: op.name } });
        return customerOut(cust);
      }

      case 'topUp': {
        const cust = customerOf(op.customerId);
        if (cust.balance + op.amount > MAX_BALANCE) {
          throw new ValidationError(`Top-up would take the balance of ${cust.id} past $${formatUsd(MAX_BALANCE)}`, { customerId: cust.id });
        }
        const e = entry(cust, {
          type: 'topup', amount: op.amount, heldDelta: 0n, holdId: null, chargeId: null, idempotencyKey: op.key,
          actor: op.actor, rateCardVersion: null, chargeType: null, quantity: null, memo: op.memo,
        });
        const out: TopUp = { id: e.id, customerId: cust.id, amount: op.amount, balanceAfter: cust.balance, createdAt: iso(now) };
        audit({ actor: op.actor, operation: 'topUp', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: null, details: { amountUsd: formatUsd(op.amount), memo: op.memo } });
        return out;
      }

      case 'hold': {
        const cust = customerOf(op.customerId);
        if (op.amount > available(cust)) throw insufficient(cust, op.amount, { operation: 'hold' });
        checkBudget(cust, op.amount);
        const h: HoldRow = {
          id: newId('hold'), customerId: cust.id, amount: op.amount, status: 'pending', expiresAt: now + op.ttlMs, createdAt: now,
          chargeType: op.priced.chargeType, quantity: op.priced.quantity, rateCardVersion: op.priced.rateCardVersion, chargeId: null,
          availableAfter: available(cust) - op.amount,
        };
        holds.set(h.id, h);
        dirtyHolds.add(h.id);
        entry(cust, {
          type: 'hold', amount: 0n, heldDelta: op.amount, holdId: h.id, chargeId: null, idempotencyKey: op.key, actor: op.actor,
          rateCardVersion: h.rateCardVersion, chargeType: h.chargeType, quantity: h.quantity, memo: null,
        });
        audit({ actor: op.actor, operation: 'hold', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: h.rateCardVersion, details: { holdId: h.id, amountUsd: formatUsd(op.amount), expiresAt: iso(h.expiresAt) } });
        return publicHold(h);
      }

      case 'settle': {
        const h = pendingHold(holds, op.holdId, 'settle');
        const cust = customerOf(h.customerId);
        // Releasing this hold frees its amount; anything above the hold comes out of what else is available.
        const canCollect = cust.balance - (cust.held - h.amount);
        const collected = op.amount <= canCollect ? op.amount : canCollect;
        const ch: ChargeRow = {
          id: newId('chg'), customerId: cust.id, holdId: h.id, amount: collected, shortfall: op.amount - collected, refunded: 0n,
          chargeType: op.priced.chargeType ?? h.chargeType, quantity: op.priced.quantity ?? h.quantity,
          rateCardVersion: op.priced.rateCardVersion ?? h.rateCardVersion, createdAt: now, balanceAfter: 0n, metadata: op.priced.metadata ?? {},
        };
        entry(cust, {
          type: 'settle', amount: -collected, heldDelta: -h.amount, holdId: h.id, chargeId: ch.id, idempotencyKey: op.key, actor: op.actor,
          rateCardVersion: ch.rateCardVersion, chargeType: ch.chargeType, quantity: ch.quantity,
          memo: ch.shortfall > 0n ? `shortfall ${formatUsd(ch.shortfall)}` : null,
        });
        ch.balanceAfter = cust.balance;
        addSpend(cust, collected, now);
        h.status = 'settled';
        h.chargeId = ch.id;
        holds.set(h.id, h);
        dirtyHolds.add(h.id);
        charges.set(ch.id, ch);
        dirtyCharges.add(ch.id);
        audit({ actor: op.actor, operation: 'settle', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: ch.rateCardVersion, details: { holdId: h.id, chargeId: ch.id, heldUsd: formatUsd(h.amount), amountUsd: formatUsd(collected), shortfallUsd: formatUsd(ch.shortfall) } });
        return publicCharge(ch);
      }

      case 'release': {
        const h = holds.get(op.holdId);
        if (!h) throw new BillingError('HOLD_NOT_FOUND', `Hold ${op.holdId} does not exist`, { holdId: op.holdId });
        // An expired hold has already given its funds back: releasing it is a no-op success.
        if (h.status === 'expired') return publicHold(h);
        const pending = pendingHold(holds, op.holdId, 'release');
        const cust = customerOf(pending.customerId);
        pending.status = 'released';
        dirtyHolds.add(pending.id);
        entry(cust, {
          type: 'release', amount: 0n, heldDelta: -pending.amount, holdId: pending.id, chargeId: null, idempotencyKey: op.key, actor: op.actor,
          rateCardVersion: pending.rateCardVersion, chargeType: pending.chargeType, quantity: pending.quantity, memo: null,
        });
        audit({ actor: op.actor, operation: 'release', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: pending.rateCardVersion, details: { holdId: pending.id, amountUsd: formatUsd(pending.amount) } });
        return publicHold(pending);
      }

      case 'charge': {
        const cust = customerOf(op.customerId);
        if (op.amount > available(cust)) throw insufficient(cust, op.amount, { operation: 'charge' });
        checkBudget(cust, op.amount);
        const ch: ChargeRow = {
          id: newId('chg'), customerId: cust.id, holdId: null, amount: op.amount, shortfall: 0n, refunded: 0n,
          chargeType: op.priced.chargeType, quantity: op.priced.quantity, rateCardVersion: op.priced.rateCardVersion,
          createdAt: now, balanceAfter: 0n, metadata: op.priced.metadata,
        };
        entry(cust, {
          type: 'charge', amount: -op.amount, heldDelta: 0n, holdId: null, chargeId: ch.id, idempotencyKey: op.key, actor: op.actor,
          rateCardVersion: ch.rateCardVersion, chargeType: ch.chargeType, quantity: ch.quantity, memo: null,
        });
        ch.balanceAfter = cust.balance;
        addSpend(cust, op.amount, now);
        charges.set(ch.id, ch);
        dirtyCharges.add(ch.id);
        audit({ actor: op.actor, operation: 'charge', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: ch.rateCardVersion, details: { chargeId: ch.id, chargeType: ch.chargeType, quantity: ch.quantity, amountUsd: formatUsd(op.amount) } });
        return publicCharge(ch);
      }

      case 'refund': {
        const ch = charges.get(op.chargeId);
        if (!ch) throw new BillingError('CHARGE_NOT_FOUND', `Charge ${op.chargeId} does not exist`, { chargeId: op.chargeId });
        const cust = customerOf(ch.customerId);
        const refundable = ch.amount - ch.refunded;
        const amount = op.amount ?? refundable;
        if (amount <= 0n || amount > refundable) {
          throw new BillingError(
            'REFUND_EXCEEDS_CHARGE',
            refundable === 0n
              ? `Charge ${ch.id} is already fully refunded`
              : `Refund of $${formatUsd(amount)} exceeds the $${formatUsd(refundable)} still refundable on charge ${ch.id}`,
            { chargeId: ch.id, requestedUsd: formatUsd(amount), refundableUsd: formatUsd(refundable) },
          );
        }
        ch.refunded += amount;
        dirtyCharges.add(ch.id);
        addSpend(cust, -amount, ch.createdAt);
        const e = entry(cust, {
          type: 'refund', amount, heldDelta: 0n, holdId: null, chargeId: ch.id, idempotencyKey: op.key, actor: op.actor,
          rateCardVersion: ch.rateCardVersion, chargeType: ch.chargeType, quantity: null, memo: op.reason,
        });
        audit({ actor: op.actor, operation: 'refund', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: ch.rateCardVersion, details: { chargeId: ch.id, amountUsd: formatUsd(amount), reason: op.reason } });
        const out: Refund = { id: e.id, chargeId: ch.id, customerId: cust.id, amount, balanceAfter: cust.balance, createdAt: iso(now) };
        return out;
      }
    }
  };

  const outcomes: Outcome[] = ops.map((op) => {
    try {
      if ('key' in op) {
        const fp = fingerprint(op);
        const prior = idem.get(op.key);
        if (prior) {
          if (prior.operation !== op.kind || prior.fingerprint !== fp) throw new IdempotencyConflictError(op.key, op.kind);
          return { ok: true, value: decodeResult(prior.result) };
        }
        const value = apply(op);
        const row: IdemRow = {
          key: op.key, operation: op.kind, fingerprint: fp, customerId: customerIdOf(op, holds, charges), result: encodeResult(value), createdAt: now,
        };
        idem.set(op.key, row);
        newIdem.push(row);
        return { ok: true, value };
      }
      return { ok: true, value: apply(op) };
    } catch (e) {
      if (e instanceof BillingError) return { ok: false, error: e };
      throw e;
    }
  });

  // Meter events owed to Stripe, in this same transaction as their entries (see outbox.ts).
  const outbox = await outboxWrites(c, newEntries, now);

  await writeTables(c, d, [
    // A plain INSERT: if another process created the customer after this batch looked (its row was
    // invisible, so unlocked), the unique violation aborts the batch and it is retried against the
    // committed row, instead of an upsert overwriting that row's balance with this batch's zero.
    { table: 'billing_customers', columns: CUSTOMER_COLUMNS, rows: [...createdCustomers].map((id) => customerValues(customers.get(id)!)) },
    {
      table: 'billing_customers',
      columns: CUSTOMER_COLUMNS,
      rows: [...dirtyCustomers].filter((id) => !createdCustomers.has(id)).map((id) => customerValues(customers.get(id)!)),
      onConflict: CUSTOMER_UPSERT,
    },
    { table: 'billing_holds', columns: HOLD_COLUMNS, rows: [...dirtyHolds].map((id) => holdValues(holds.get(id)!)), onConflict: HOLD_UPSERT },
    { table: 'billing_charges', columns: CHARGE_COLUMNS, rows: [...dirtyCharges].map((id) => chargeValues(charges.get(id)!)), onConflict: CHARGE_UPSERT },
    { table: 'billing_entries', columns: ENTRY_COLUMNS, rows: newEntries.map(entryValues) },
    {
      table: 'billing_idempotency',
      columns: ['key', 'operation', 'fingerprint', 'customer_id', 'result', 'created_at'],
      rows: newIdem.map((r) => [r.key, r.operation, r.fingerprint, r.customerId, r.result, r.createdAt]),
    },
    {
      table: AUDIT_TABLE,
      columns: AUDIT_COLUMNS,
      rows: newAudit.map(auditValues),
    },
    ...outbox,
  ]);
  return outcomes;
}

export function budgetOut(c: CustomerRow): BudgetState {
  return {
    customerId: c.id,
    budget: c.budget,
    spent: c.budgetSpent,
    held: c.held,
    periodStart: c.budgetPeriodStart === null ? null : iso(c.budgetPeriodStart),
    periodEnd: c.budgetPeriodEnd === null ? null : iso(c.budgetPeriodEnd),
  };
}

function customerOut(c: CustomerRow): Customer {
  return { id: c.id, name: c.name, createdAt: iso(c.createdAt) };
}

function pendingHold(holds: Map<string, HoldRow>, holdId: string, action: string): HoldRow {
  const h = holds.get(holdId);
  if (!h) throw new BillingError('HOLD_NOT_FOUND', `Hold ${holdId} does not exist`, { holdId });
  if (h.status === 'expired') {
    throw new BillingError('HOLD_EXPIRED', `Hold ${holdId} expired at ${iso(h.expiresAt)} and its funds were released; cannot ${action} it`, { holdId, expiresAt: iso(h.expiresAt) });
  }
  if (h.status !== 'pending') {
    throw new BillingError('HOLD_NOT_PENDING', `Hold ${holdId} is already ${h.status}; cannot ${action} it`, { holdId, status: h.status });
  }
  return h;
}

function customerIdOf(op: Op, holds: Map<string, HoldRow>, charges: Map<string, ChargeRow>): string | null {
  if (op.kind === 'settle' || op.kind === 'release') return holds.get(op.holdId)?.customerId ?? null;
  if (op.kind === 'refund') return charges.get(op.chargeId)?.customerId ?? null;
  return op.customerId;
}
