import { randomBytes } from 'node:crypto';
import { BillingError, BudgetExceededError, CustomerNotFoundError, InsufficientFundsError, ValidationError } from '../errors';
import { formatUsd, MAX_AMOUNT } from '../money';
import { periodContaining } from '../period';
import { budgetStateAt, currentBudgetPeriod } from './budget-period';
import type { Op } from './batch';
import { type AuditRow, type BatchAudit, type ChargeRow, type CustomerRow, customerOut, type EntryRow, type HoldRow, type IdemRow, iso, publicCharge, publicHold } from './rows';
import type { Refund, TopUp } from './types';

/**
 * The middle of a batch: what it loaded, what each operation changes in
 * memory, and what is left to write. One small function per operation kind
 * (APPLY); the shared rules (journal entry, budget, expiry) are methods of
 * BatchState, written once.
 */

/** What `loadRows` read (customers locked) for one batch. */
export interface LoadedRows {
  readonly customers: Map<string, CustomerRow>;
  readonly holds: Map<string, HoldRow>;
  readonly charges: Map<string, ChargeRow>;
  /** Stored results of the batch's keys that were read back (null: none, the usual new keys). */
  readonly idem: Map<string, IdemRow> | null;
  /** Net charges so far in the period a new budget starts in, per customer (null: the batch sets no budget). */
  periodSpend: Map<string, bigint> | null;
}

/** A balance may not grow past this (int64 headroom for the running sums). */
const MAX_BALANCE = 9n * MAX_AMOUNT;

let idCounter = 0;
let idMs = -1, idMsHex = '';
/**
 * `<prefix>_` + 32 hex: milliseconds (12), a per-process counter (4) and
 * randomness (16). Ids of one process grow with time, so the id indexes take
 * appends on their last page instead of a write to a random page per row; the
 * random tail keeps ids of different processes apart. A batch takes several
 * ids in one millisecond: its hex is kept, and the counter's comes from a table.
 */
export function newId(prefix: string): string {
  idCounter = (idCounter + 1) & 0xffff;
  const ms = Date.now();
  if (ms !== idMs) {
    idMs = ms;
    idMsHex = ms.toString(16).padStart(12, '0');
  }
  return `${prefix}_${idMsHex}${HEX2[idCounter >> 8]!}${HEX2[idCounter & 0xff]!}${randomHex16()}`;
}

const HEX2: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

// One getrandom call and one hex conversion per 512 ids instead of one each; an id takes a slice of the text.
let pool = '';
let poolAt = 0;
function randomHex16(): string {
  if (poolAt + 16 > pool.length) {
    pool = randomBytes(4096).toString('hex');
    poolAt = 0;
  }
  poolAt += 16;
  return pool.slice(poolAt - 16, poolAt);
}

export class BatchState {
  readonly customers: Map<string, CustomerRow>;
  readonly holds: Map<string, HoldRow>;
  readonly charges: Map<string, ChargeRow>;
  /** Stored results by key: read back, or of this batch's earlier operations (made when first needed). */
  idem: Map<string, IdemRow> | null;
  readonly periodSpend: ReadonlyMap<string, bigint> | null;
  readonly dirtyCustomers = new Set<string>();
  /**
   * Customers this batch inserts; every other dirty customer was locked when loaded and is updated in place.
   * This and expiredBy are made when first needed: most batches have neither, and a Map or Set is ~150 bytes.
   */
  createdCustomers: Set<string> | null = null;
  readonly dirtyHolds = new Set<string>();
  readonly dirtyCharges = new Set<string>();
  readonly newEntries: EntryRow[] = [];
  readonly newIdem: IdemRow[] = [];
  readonly newAudit: BatchAudit[] = [];
  expiredBy: Map<string, number> | null = null;

  constructor(
    readonly now: number,
    rows: LoadedRows,
  ) {
    this.customers = rows.customers;
    this.holds = rows.holds;
    this.charges = rows.charges;
    this.idem = rows.idem;
    this.periodSpend = rows.periodSpend;
  }

  entry(cust: CustomerRow, e: Omit<EntryRow, 'id' | 'customerId' | 'balanceAfter' | 'createdAt' | 'fingerprint' | 'result' | 'auditDetails'>): EntryRow {
    cust.balance += e.amount;
    cust.held += e.heldDelta;
    cust.updatedAt = this.now;
    this.dirtyCustomers.add(cust.id);
    // Spelled out rather than spread: one object shape for every entry, built without copying a temporary.
    const row: EntryRow = {
      id: newId('ent'), customerId: cust.id, type: e.type, amount: e.amount, heldDelta: e.heldDelta, balanceAfter: cust.balance,
      holdId: e.holdId, chargeId: e.chargeId, idempotencyKey: e.idempotencyKey, actor: e.actor, rateCardVersion: e.rateCardVersion,
      chargeType: e.chargeType, quantity: e.quantity, memo: e.memo, createdAt: this.now, fingerprint: null, result: null, auditDetails: null,
    };
    this.newEntries.push(row);
    return row;
  }

  /** An audit line; a journal operation passes its entry (batch.ts may keep the line in it). */
  audit(a: Omit<AuditRow, 'at'>, entry: EntryRow | null = null): void {
    this.newAudit.push({
      at: this.now, actor: a.actor, operation: a.operation, idempotencyKey: a.idempotencyKey, customerId: a.customerId, rateCardVersion: a.rateCardVersion, details: a.details, entry,
    });
  }

  customerOf(id: string): CustomerRow {
    const cust = this.customers.get(id);
    if (!cust) throw new CustomerNotFoundError(id);
    return cust;
  }

  available(cust: CustomerRow): bigint {
    return cust.balance - cust.held;
  }

  insufficient(cust: CustomerRow, required: bigint, extra: Record<string, unknown> = {}): InsufficientFundsError {
    return new InsufficientFundsError({ customerId: cust.id, requiredUsd: formatUsd(required), availableUsd: formatUsd(this.available(cust)), ...extra });
  }

  /** Moves the budget period forward when it has ended; spend restarts at zero. */
  rollBudget(cust: CustomerRow): void {
    const p = currentBudgetPeriod(cust, this.now);
    if (!p.rolled) return;
    cust.budgetPeriodStart = p.start;
    cust.budgetPeriodEnd = p.end;
    cust.budgetSpent = p.spent;
    this.dirtyCustomers.add(cust.id);
  }

  /** Open holds count against the budget too, so concurrent steps cannot overshoot it together. */
  checkBudget(cust: CustomerRow, amount: bigint): void {
    if (cust.budget === null) return;
    this.rollBudget(cust);
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
  }

  addSpend(cust: CustomerRow, amount: bigint, chargedAt: number): void {
    if (cust.budget === null) return;
    this.rollBudget(cust);
    if (chargedAt < (cust.budgetPeriodStart ?? 0)) return;
    cust.budgetSpent += amount;
    if (cust.budgetSpent < 0n) cust.budgetSpent = 0n;
  }

  /** Lazily expires the locked customers' overdue holds first, so available balances are right. */
  expireOverdue(): void {
    for (const h of this.holds.values()) {
      if (h.status !== 'pending' || h.expiresAt > this.now || !this.customers.has(h.customerId)) continue;
      const cust = this.customers.get(h.customerId)!;
      h.status = 'expired';
      this.dirtyHolds.add(h.id);
      const e = this.entry(cust, {
        type: 'expire', amount: 0n, heldDelta: -h.amount, holdId: h.id, chargeId: null, idempotencyKey: null,
        actor: 'system', rateCardVersion: h.rateCardVersion, chargeType: h.chargeType, quantity: h.quantity, memo: 'hold expired',
      });
      this.audit({ actor: 'system', operation: 'expire', idempotencyKey: null, customerId: cust.id, rateCardVersion: h.rateCardVersion, details: { holdId: h.id, amountUsd: formatUsd(h.amount) } }, e);
      this.expiredBy ??= new Map();
      this.expiredBy.set(cust.id, (this.expiredBy.get(cust.id) ?? 0) + 1);
    }
  }
}

type OpOf<K extends Op['kind']> = Extract<Op, { kind: K }>;

function touch(s: BatchState, op: OpOf<'touch'>): unknown {
  return { expired: s.expiredBy?.get(op.customerId) ?? 0 };
}

function setBudget(s: BatchState, op: OpOf<'setBudget'>): unknown {
  const cust = s.customerOf(op.customerId);
  cust.budget = op.limit;
  cust.budgetAnchorDay = op.limit === null ? null : op.anchorDay;
  if (op.limit === null) {
    cust.budgetPeriodStart = null;
    cust.budgetPeriodEnd = null;
    cust.budgetSpent = 0n;
  } else {
    const p = periodContaining(s.now, op.anchorDay);
    if (cust.budgetPeriodStart !== p.start) {
      // Count what this period already collected, so a budget set mid-period is honest.
      cust.budgetPeriodStart = p.start;
      cust.budgetPeriodEnd = p.end;
      cust.budgetSpent = s.periodSpend?.get(cust.id) ?? 0n;
    }
  }
  cust.updatedAt = s.now;
  s.dirtyCustomers.add(cust.id);
  s.audit({ actor: op.actor, operation: 'setBudget', idempotencyKey: null, customerId: cust.id, rateCardVersion: null, details: { budgetUsd: op.limit === null ? null : formatUsd(op.limit), anchorDay: op.anchorDay } });
  return budgetStateAt(cust, s.now);
}

function createCustomer(s: BatchState, op: OpOf<'createCustomer'>): unknown {
  const existing = s.customers.get(op.customerId);
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
    id: op.customerId, name: op.name, balance: 0n, held: 0n, createdAt: s.now, updatedAt: s.now,
    budget: null, budgetAnchorDay: null, budgetPeriodStart: null, budgetPeriodEnd: null, budgetSpent: 0n,
  };
  s.customers.set(cust.id, cust);
  s.dirtyCustomers.add(cust.id);
  (s.createdCustomers ??= new Set()).add(cust.id);
  s.audit({ actor: op.actor, operation: 'createCustomer', idempotencyKey: `customer:${cust.id}`, customerId: cust.id, rateCardVersion: null, details: { name: op.name } });
  return customerOut(cust);
}

function topUp(s: BatchState, op: OpOf<'topUp'>): unknown {
  const cust = s.customerOf(op.customerId);
  if (cust.balance + op.amount > MAX_BALANCE) {
    throw new ValidationError(`Top-up would take the balance of ${cust.id} past $${formatUsd(MAX_BALANCE)}`, { customerId: cust.id });
  }
  const e = s.entry(cust, {
    type: 'topup', amount: op.amount, heldDelta: 0n, holdId: null, chargeId: null, idempotencyKey: op.key,
    actor: op.actor, rateCardVersion: null, chargeType: null, quantity: null, memo: op.memo,
  });
  const out: TopUp = { id: e.id, customerId: cust.id, amount: op.amount, balanceAfter: cust.balance, createdAt: iso(s.now) };
  s.audit({ actor: op.actor, operation: 'topUp', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: null, details: { amountUsd: formatUsd(op.amount), memo: op.memo } }, e);
  return out;
}

function hold(s: BatchState, op: OpOf<'hold'>): unknown {
  const cust = s.customerOf(op.customerId);
  if (op.amount > s.available(cust)) throw s.insufficient(cust, op.amount, { operation: 'hold' });
  s.checkBudget(cust, op.amount);
  if (op.addTo) return addToHold(s, op, cust, op.addTo);
  const h: HoldRow = {
    id: newId('hold'), customerId: cust.id, amount: op.amount, status: 'pending', expiresAt: s.now + op.ttlMs, createdAt: s.now,
    chargeType: op.priced.chargeType, quantity: op.priced.quantity, rateCardVersion: op.priced.rateCardVersion, chargeId: null,
    availableAfter: s.available(cust) - op.amount,
  };
  s.holds.set(h.id, h);
  s.dirtyHolds.add(h.id);
  const e = s.entry(cust, {
    type: 'hold', amount: 0n, heldDelta: op.amount, holdId: h.id, chargeId: null, idempotencyKey: op.key, actor: op.actor,
    rateCardVersion: h.rateCardVersion, chargeType: h.chargeType, quantity: h.quantity, memo: null,
  });
  s.audit({ actor: op.actor, operation: 'hold', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: h.rateCardVersion, details: { holdId: h.id, amountUsd: formatUsd(op.amount), expiresAt: iso(h.expiresAt) } }, e);
  return publicHold(h);
}

/** An incremental hold: the amount joins a pending hold of the same customer (checked by the caller against available and budget). */
function addToHold(s: BatchState, op: OpOf<'hold'>, cust: CustomerRow, holdId: string): unknown {
  const into = pendingHold(s.holds, holdId, 'add to');
  if (into.customerId !== cust.id) throw new ValidationError(`Hold ${into.id} belongs to another customer`, { holdId: into.id });
  into.amount += op.amount;
  if (s.now + op.ttlMs > into.expiresAt) into.expiresAt = s.now + op.ttlMs;
  s.dirtyHolds.add(into.id);
  const e = s.entry(cust, {
    type: 'hold', amount: 0n, heldDelta: op.amount, holdId: into.id, chargeId: null, idempotencyKey: op.key, actor: op.actor,
    rateCardVersion: op.priced.rateCardVersion ?? into.rateCardVersion, chargeType: op.priced.chargeType ?? into.chargeType, quantity: op.priced.quantity, memo: 'added to the hold',
  });
  s.audit({ actor: op.actor, operation: 'hold', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: into.rateCardVersion, details: { holdId: into.id, addedUsd: formatUsd(op.amount), amountUsd: formatUsd(into.amount), expiresAt: iso(into.expiresAt) } }, e);
  return publicHold(into, s.available(cust));
}

function settle(s: BatchState, op: OpOf<'settle'>): unknown {
  const h = pendingHold(s.holds, op.holdId, 'settle');
  const cust = s.customerOf(h.customerId);
  // A final settle frees the whole hold; a partial one (final: false) only what it takes, the rest stays held.
  const partial = op.final === false;
  const freed = partial ? (op.amount < h.amount ? op.amount : h.amount) : h.amount;
  // Anything above what the hold gives comes out of what else is available.
  const canCollect = cust.balance - (cust.held - freed);
  const collected = op.amount <= canCollect ? op.amount : canCollect;
  const ch: ChargeRow = {
    id: newId('chg'), customerId: cust.id, holdId: h.id, amount: collected, shortfall: op.amount - collected, refunded: 0n,
    chargeType: op.priced.chargeType ?? h.chargeType, quantity: op.priced.quantity ?? h.quantity,
    rateCardVersion: op.priced.rateCardVersion ?? h.rateCardVersion, createdAt: s.now, balanceAfter: 0n, metadata: op.priced.metadata ?? {},
  };
  const e = s.entry(cust, {
    type: 'settle', amount: -collected, heldDelta: -freed, holdId: h.id, chargeId: ch.id, idempotencyKey: op.key, actor: op.actor,
    rateCardVersion: ch.rateCardVersion, chargeType: ch.chargeType, quantity: ch.quantity,
    memo: ch.shortfall > 0n ? `shortfall ${formatUsd(ch.shortfall)}` : null,
  });
  ch.balanceAfter = cust.balance;
  s.addSpend(cust, collected, s.now);
  if (partial) h.amount -= freed;
  else h.status = 'settled';
  h.chargeId = ch.id;
  s.holds.set(h.id, h);
  s.dirtyHolds.add(h.id);
  s.charges.set(ch.id, ch);
  s.dirtyCharges.add(ch.id);
  s.audit({ actor: op.actor, operation: 'settle', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: ch.rateCardVersion, details: { holdId: h.id, chargeId: ch.id, heldUsd: formatUsd(h.amount), amountUsd: formatUsd(collected), shortfallUsd: formatUsd(ch.shortfall) } }, e);
  return publicCharge(ch);
}

function release(s: BatchState, op: OpOf<'release'>): unknown {
  const h = s.holds.get(op.holdId);
  if (!h) throw new BillingError('HOLD_NOT_FOUND', `Hold ${op.holdId} does not exist`, { holdId: op.holdId });
  // An expired hold has already given its funds back: releasing it is a no-op success.
  if (h.status === 'expired') return publicHold(h);
  const pending = pendingHold(s.holds, op.holdId, 'release');
  const cust = s.customerOf(pending.customerId);
  pending.status = 'released';
  s.dirtyHolds.add(pending.id);
  const e = s.entry(cust, {
    type: 'release', amount: 0n, heldDelta: -pending.amount, holdId: pending.id, chargeId: null, idempotencyKey: op.key, actor: op.actor,
    rateCardVersion: pending.rateCardVersion, chargeType: pending.chargeType, quantity: pending.quantity, memo: null,
  });
  s.audit({ actor: op.actor, operation: 'release', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: pending.rateCardVersion, details: { holdId: pending.id, amountUsd: formatUsd(pending.amount) } }, e);
  return publicHold(pending);
}

function charge(s: BatchState, op: OpOf<'charge'>): unknown {
  const cust = s.customerOf(op.customerId);
  if (op.amount > s.available(cust)) throw s.insufficient(cust, op.amount, { operation: 'charge' });
  s.checkBudget(cust, op.amount);
  const ch: ChargeRow = {
    id: newId('chg'), customerId: cust.id, holdId: null, amount: op.amount, shortfall: 0n, refunded: 0n,
    chargeType: op.priced.chargeType, quantity: op.priced.quantity, rateCardVersion: op.priced.rateCardVersion,
    createdAt: s.now, balanceAfter: 0n, metadata: op.priced.metadata,
  };
  const e = s.entry(cust, {
    type: 'charge', amount: -op.amount, heldDelta: 0n, holdId: null, chargeId: ch.id, idempotencyKey: op.key, actor: op.actor,
    rateCardVersion: ch.rateCardVersion, chargeType: ch.chargeType, quantity: ch.quantity, memo: null,
  });
  ch.balanceAfter = cust.balance;
  s.addSpend(cust, op.amount, s.now);
  s.charges.set(ch.id, ch);
  s.dirtyCharges.add(ch.id);
  s.audit({ actor: op.actor, operation: 'charge', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: ch.rateCardVersion, details: { chargeId: ch.id, chargeType: ch.chargeType, quantity: ch.quantity, amountUsd: formatUsd(op.amount) } }, e);
  return publicCharge(ch);
}

function refund(s: BatchState, op: OpOf<'refund'>): unknown {
  const ch = s.charges.get(op.chargeId);
  if (!ch) throw new BillingError('CHARGE_NOT_FOUND', `Charge ${op.chargeId} does not exist`, { chargeId: op.chargeId });
  const cust = s.customerOf(ch.customerId);
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
  s.dirtyCharges.add(ch.id);
  s.addSpend(cust, -amount, ch.createdAt);
  const e = s.entry(cust, {
    type: 'refund', amount, heldDelta: 0n, holdId: null, chargeId: ch.id, idempotencyKey: op.key, actor: op.actor,
    rateCardVersion: ch.rateCardVersion, chargeType: ch.chargeType, quantity: null, memo: op.reason,
  });
  s.audit({ actor: op.actor, operation: 'refund', idempotencyKey: op.key, customerId: cust.id, rateCardVersion: ch.rateCardVersion, details: { chargeId: ch.id, amountUsd: formatUsd(amount), reason: op.reason } }, e);
  const out: Refund = { id: e.id, chargeId: ch.id, customerId: cust.id, amount, balanceAfter: cust.balance, createdAt: iso(s.now) };
  return out;
}

/** One function per operation kind: checks the rules, changes the loaded rows, returns the caller's result. */
export const APPLY: { readonly [K in Op['kind']]: (s: BatchState, op: OpOf<K>) => unknown } = {
  touch,
  setBudget,
  createCustomer,
  topUp,
  hold,
  settle,
  release,
  charge,
  refund,
};

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

