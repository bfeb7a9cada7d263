import { BillingError } from '../errors';
import type { RateCard } from '../pricing/ratecard';
import { executeBatch, executeBatchNow, type Op, type Outcome } from './batch';
import { type Dialect, type Row, type SqlConnection, syncConnection } from './dialect';
import { GroupCommitter } from './group-commit';
import { idArg, intArg, jsonProblem, parse, pricedFields, schemas } from './inputs';
import { quickHold, quickSettle } from './quick-input';
import { budgetStateAt } from './budget-period';
import { ledgerView, type LedgerView, toppedUpCustomer } from './within';
import { customerCount, customersPage, renameCustomer } from './customers';
import { migrate } from './migrations';
import type { SchemaResult } from './schema-runner';
import { RateCards } from './rate-cards';
import { readAuditDetails } from './stored-results';
import { redactUrl } from './redact';
import { auditQuery, chargeFromRow, expiredHeldSql, customerFromRow, customerOut, entryFromRow, holdFromRow, iso, operationOfEntry, publicCharge, publicHold, str } from './rows';
import type {
  AuditRecord,
  Balance,
  BatchOutcome,
  BudgetState,
  Charge,
  ChargeInput,
  CreateCustomerInput,
  Customer,
  ListCustomersOptions,
  UpdateCustomerInput,
  Entry,
  Hold,
  HoldInput,
  Ledger,
  RateCardRecord,
  Refund,
  RefundInput,
  ReleaseInput,
  SettleInput,
  StatementOptions,
  TopUp,
  TopUpInput,
} from './types';

export interface LedgerOptions {
  /** Milliseconds since the epoch; injectable so tests can move time. */
  readonly clock?: () => number;
  /** How long a hold lives when the caller gives no ttlMs (default 15 minutes). */
  readonly holdTtlMs?: number;
  /** Most operations one group commit carries (default 512). */
  readonly maxBatch?: number;
  /** Default actor recorded in the audit trail. */
  readonly actor?: string;
  /**
   * Runs inside each write batch's transaction, after its operations were
   * applied and before it commits: an observer's rows (e.g. outbound events)
   * commit with their cause or not at all. Throwing aborts the batch.
   */
  readonly onBatch?: (c: SqlConnection, outcomes: readonly BatchOutcome[], now: number) => Promise<void>;
}

/**
 * Anything that is not a business outcome becomes a DATABASE_ERROR with the
 * driver's message and code. The dialects already strip their connection
 * string; any URL left is masked here too, so no password can leak.
 */
export function asBillingError(e: unknown): BillingError {
  if (e instanceof BillingError) return e;
  const err = e as { message?: string; code?: string };
  const message = String(err?.message ?? e).replace(/postgres(ql)?:\/\/[^\s'"]*/gi, (m) => redactUrl(m));
  return new BillingError('DATABASE_ERROR', `Ledger database error: ${message}`, { cause: typeof err?.code === 'string' ? err.code : null });
}

export const throwAsBillingError = (e: unknown): never => {
  throw asBillingError(e);
};

function batchOutcome(op: Op, o: Outcome): BatchOutcome {
  return {
    operation: op.kind,
    idempotencyKey: 'key' in op ? op.key : null,
    customerId: 'customerId' in op ? op.customerId : null,
    ...(o.ok ? { value: o.value } : { error: o.error }),
  };
}

/** The batch's outcomes, after the observer's rows (LedgerOptions.onBatch) went into its transaction. */
async function batchThen(batch: Promise<Outcome[]>, onBatch: LedgerOptions['onBatch'], c: SqlConnection, ops: readonly Op[], now: number): Promise<Outcome[]> {
  const outcomes = await batch;
  if (onBatch) await onBatch(c, ops.map((op, i) => batchOutcome(op, outcomes[i]!)), now);
  return outcomes;
}

/** A customer's balance and what is held, with the expired holds' sum (rows.ts expiredHeldSql): one statement. */
const BALANCE_SQL = `SELECT balance, held, ${expiredHeldSql('billing_customers.id')} AS expired FROM billing_customers WHERE id = ?`;

/** The Ledger over any Dialect: the behaviour lives here and in batch.ts, once. */
export class SqlLedger implements Ledger {
  readonly backend: 'sqlite' | 'postgres';
  readonly location: string;
  private readonly committer: GroupCommitter<Op>;
  private readonly clock: () => number;
  private readonly holdTtlMs: number;
  private readonly actor: string;
  private readonly rateCards: RateCards;

  private constructor(
    private readonly d: Dialect,
    opts: LedgerOptions,
    /** What opening it migrated, per owner of tables (empty lists: the database was up to date). */
    readonly schemaApplied: readonly SchemaResult[] = [],
  ) {
    this.backend = d.name;
    this.location = d.location;
    this.clock = opts.clock ?? Date.now;
    this.holdTtlMs = opts.holdTtlMs ?? 15 * 60_000;
    this.actor = opts.actor ?? 'library';
    this.rateCards = new RateCards({
      dialect: d,
      clock: this.clock,
      actor: this.actor,
      read: (fn) => this.read(fn),
      write: (fn) => this.write(fn),
    });
    const onBatch = opts.onBatch;
    this.committer = new GroupCommitter(
      (ops) =>
        d.writeTransaction((c) => {
          const now = this.clock();
          const sync = onBatch ? null : syncConnection(c);
          // A synchronous driver (SQLite) runs the whole batch, and its transaction, without a promise between the steps.
          return sync === null ? batchThen(executeBatch(d, c, ops, now), onBatch, c, ops, now) : executeBatchNow(d, sync, ops, now);
        }),
      opts.maxBatch ?? 512,
      (e) => d.isRetryableConflict(e),
    );
  }

  /** Opens the ledger and applies pending migrations. */
  static async open(d: Dialect, opts: LedgerOptions = {}): Promise<SqlLedger> {
    let applied: SchemaResult[];
    try {
      applied = await migrate(d, opts.clock);
    } catch (e) {
      await d.close().catch(() => undefined);
      throw asBillingError(e);
    }
    return new SqlLedger(d, opts, applied);
  }

  /** The dialect, for modules (quota, outbox) that keep their tables in the same database. */
  get dialect(): Dialect {
    return this.d;
  }

  now(): number {
    return this.clock();
  }

  view(c: SqlConnection): LedgerView {
    return ledgerView(c, this.d);
  }

  async toppedUpCustomer(idempotencyKey: string): Promise<string | null> {
    idArg('idempotencyKey', idempotencyKey);
    return this.read((c) => toppedUpCustomer(c, idempotencyKey));
  }

  private submit<T>(op: Op, deferrable = false): Promise<T> {
    return this.committer.submit(op, deferrable).then(undefined, throwAsBillingError) as Promise<T>;
  }

  /**
   * The operation `make` builds from a caller's input, submitted; input it refuses (it throws) is a
   * rejected promise, as from an async method. Written out for the operations metering sends on every
   * call: an async method returning submit's promise cost a frame, an extra promise and a resolve job.
   */
  private submitOf<T>(make: () => Op): Promise<T> {
    let op: Op;
    try {
      op = make();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.submit(op);
  }

  private async read<T>(fn: Parameters<Dialect['read']>[0]): Promise<T> {
    try {
      return (await this.d.read(fn)) as T;
    } catch (e) {
      throw asBillingError(e);
    }
  }

  async createCustomer(input: CreateCustomerInput): Promise<Customer> {
    const i = parse(schemas.createCustomer, 'customer', input);
    return this.submit({ kind: 'createCustomer', customerId: i.id, name: i.name ?? null, actor: i.actor ?? this.actor });
  }

  async findCustomer(id: string): Promise<Customer | null> {
    idArg('customerId', id);
    const rows = await this.read<Row[]>((c) => c.query('SELECT * FROM billing_customers WHERE id = ?', [id]));
    if (!rows[0]) return null;
    return customerOut(customerFromRow(rows[0]));
  }

  async getCustomer(id: string): Promise<Customer> {
    const c = await this.findCustomer(id);
    if (!c) throw new BillingError('CUSTOMER_NOT_FOUND', `Customer ${id} does not exist`, { customerId: id });
    return c;
  }

  async listCustomers(opts: ListCustomersOptions = {}): Promise<Customer[]> {
    const o = parse(schemas.listCustomers, 'customer list', opts);
    return this.read((c) => customersPage(c, { limit: o.limit ?? Number.MAX_SAFE_INTEGER, after: o.after ?? null }));
  }

  async countCustomers(): Promise<number> {
    return this.read(customerCount);
  }

  async updateCustomer(input: UpdateCustomerInput): Promise<Customer> {
    const i = parse(schemas.updateCustomer, 'customer', input);
    const now = this.clock();
    const r = await this.write((c) => renameCustomer(c, this.d, { id: i.id, name: i.name, actor: i.actor ?? this.actor, now }));
    return r.customer;
  }

  async topUp(input: TopUpInput): Promise<TopUp> {
    const i = parse(schemas.topUp, 'top-up', input);
    return this.submit({ kind: 'topUp', key: i.idempotencyKey, actor: i.actor ?? this.actor, customerId: i.customerId, amount: i.amount, memo: i.memo ?? null });
  }

  hold(input: HoldInput): Promise<Hold> {
    return this.submitOf(() => {
      const i = quickHold(input, jsonProblem) ?? parse(schemas.hold, 'hold', input);
      return {
        kind: 'hold', key: i.idempotencyKey, actor: i.actor ?? this.actor, customerId: i.customerId, amount: i.amount,
        ttlMs: i.ttlMs ?? this.holdTtlMs, priced: pricedFields(i), ...(i.addTo ? { addTo: i.addTo } : {}),
      };
    });
  }

  settle(input: SettleInput): Promise<Charge> {
    return this.submitOf(() => {
      const i = quickSettle(input, jsonProblem) ?? parse(schemas.settle, 'settle', input);
      return {
        kind: 'settle', key: i.idempotencyKey, actor: i.actor ?? this.actor, holdId: i.holdId, amount: i.amount, final: i.final,
        priced: { chargeType: i.chargeType, quantity: i.quantity, rateCardVersion: i.rateCardVersion, metadata: i.metadata },
      };
    });
  }

  async release(input: ReleaseInput): Promise<Hold> {
    const i = parse(schemas.release, 'release', input);
    return this.submit({ kind: 'release', key: i.idempotencyKey, actor: i.actor ?? this.actor, holdId: i.holdId }, i.deferrable === true);
  }

  charge(input: ChargeInput): Promise<Charge> {
    return this.submitOf(() => {
      const i = parse(schemas.charge, 'charge', input);
      return { kind: 'charge', key: i.idempotencyKey, actor: i.actor ?? this.actor, customerId: i.customerId, amount: i.amount, priced: pricedFields(i) };
    });
  }

  async refund(input: RefundInput): Promise<Refund> {
    const i = parse(schemas.refund, 'refund', input);
    return this.submit({ kind: 'refund', key: i.idempotencyKey, actor: i.actor ?? this.actor, chargeId: i.chargeId, amount: i.amount ?? null, reason: i.reason ?? null });
  }

  /** Sets (or with `limit: null` clears) the customer's monthly spending cap; holds and charges past it fail with BUDGET_EXCEEDED. */
  async setBudget(input: { customerId: string; limit: bigint | null; anchorDay?: number; actor?: string }): Promise<BudgetState> {
    const i = parse(schemas.setBudget, 'budget', input);
    return this.submit({ kind: 'setBudget', customerId: i.customerId, limit: i.limit, anchorDay: i.anchorDay ?? 1, actor: i.actor ?? this.actor });
  }

  /** The budget and what the current budget period has used (spent + open holds). */
  async budget(customerId: string): Promise<BudgetState> {
    idArg('customerId', customerId);
    const rows = await this.read<Row[]>((c) => c.query('SELECT * FROM billing_customers WHERE id = ?', [customerId]));
    if (!rows[0]) throw new BillingError('CUSTOMER_NOT_FOUND', `Customer ${customerId} does not exist`, { customerId });
    // A period that has ended reads as a fresh one, exactly as the next hold would see it.
    return budgetStateAt(customerFromRow(rows[0]), this.clock());
  }

  async balance(customerId: string): Promise<Balance> {
    idArg('customerId', customerId);
    const now = this.clock();
    return this.read(async (c) => {
      // One statement (every guarded prediction reads the balance): holds past their expiry no longer
      // count, even before a sweep has released them.
      const [r] = await c.query(BALANCE_SQL, [now, customerId], { prepare: true });
      if (!r) throw new BillingError('CUSTOMER_NOT_FOUND', `Customer ${customerId} does not exist`, { customerId });
      const balance = BigInt(r.balance as string);
      const held = BigInt(r.held as string) - BigInt((r.expired ?? 0) as string);
      return { customerId, balance, held, available: balance - held };
    });
  }

  async getHold(id: string): Promise<Hold> {
    idArg('holdId', id);
    const rows = await this.read<Row[]>((c) => c.query('SELECT * FROM billing_holds WHERE id = ?', [id]));
    if (!rows[0]) throw new BillingError('HOLD_NOT_FOUND', `Hold ${id} does not exist`, { holdId: id });
    return publicHold(holdFromRow(rows[0]));
  }

  async getCharge(id: string): Promise<Charge> {
    idArg('chargeId', id);
    const rows = await this.read<Row[]>((c) => c.query('SELECT * FROM billing_charges WHERE id = ?', [id]));
    if (!rows[0]) throw new BillingError('CHARGE_NOT_FOUND', `Charge ${id} does not exist`, { chargeId: id });
    return publicCharge(chargeFromRow(rows[0]));
  }

  async statement(customerId: string, opts: StatementOptions = {}): Promise<Entry[]> {
    await this.getCustomer(customerId);
    const limit = Math.min(Math.max(intArg('limit', opts.limit ?? 10_000), 1), 100_000);
    const afterSeq = intArg('afterSeq', opts.afterSeq ?? 0);
    const rows = await this.read<Row[]>((c) =>
      c.query('SELECT * FROM billing_entries WHERE customer_id = ? AND seq > ? ORDER BY seq LIMIT ?', [customerId, afterSeq, limit]),
    );
    return rows.map(entryFromRow);
  }

  async audit(opts: { customerId?: string; limit?: number } = {}): Promise<AuditRecord[]> {
    if (opts.customerId !== undefined) idArg('customerId', opts.customerId);
    const limit = Math.min(Math.max(intArg('limit', opts.limit ?? 1000), 1), 100_000);
    // Lines in billing_audit and lines kept in their journal entries (fold-rows.ts), in one numbering.
    const customerId = opts.customerId ?? null;
    const rows = await this.read<Row[]>((c) => c.query(auditQuery(customerId), customerId === null ? [limit] : [customerId, customerId, limit]));
    return rows.map((r) => ({
      seq: Number(r.seq),
      at: iso(Number(r.at)),
      actor: String(r.actor),
      operation: Number(r.journal) === 1 ? operationOfEntry(String(r.operation)) : String(r.operation),
      idempotencyKey: str(r.idempotency_key),
      customerId: str(r.customer_id),
      rateCardVersion: str(r.rate_card_version),
      details: Number(r.journal) === 1 ? readAuditDetails(String(r.details), str(r.hold_id), str(r.charge_id)) : (JSON.parse(String(r.details)) as Record<string, unknown>),
    }));
  }

  async sweepExpiredHolds(): Promise<{ expired: number }> {
    const rows = await this.read<Row[]>((c) =>
      c.query("SELECT DISTINCT customer_id FROM billing_holds WHERE status = 'pending' AND expires_at <= ?", [this.clock()]),
    );
    const results = await Promise.all(rows.map((r) => this.submit<{ expired: number }>({ kind: 'touch', customerId: String(r.customer_id) })));
    return { expired: results.reduce((n, r) => n + r.expired, 0) };
  }

  // ---- rate cards (rate-cards.ts) -----------------------------------------

  importRateCard(card: RateCard, opts: { activate?: boolean; actor?: string } = {}): Promise<RateCardRecord> {
    return this.rateCards.import(card, opts);
  }

  async activateRateCard(version: string, opts: { actor?: string } = {}): Promise<RateCardRecord> {
    idArg('version', version);
    return this.rateCards.activate(version, opts);
  }

  activeRateCard(): Promise<RateCard> {
    return this.rateCards.active();
  }

  async getRateCard(version: string): Promise<RateCard> {
    idArg('version', version);
    return this.rateCards.get(version);
  }

  listRateCards(): Promise<RateCardRecord[]> {
    return this.rateCards.list();
  }

  private async write<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T> {
    try {
      return (await this.d.writeTransaction(fn)) as T;
    } catch (e) {
      throw asBillingError(e);
    }
  }

  // ---- checks -------------------------------------------------------------

  async checkInvariants(): Promise<{ ok: boolean; violations: Array<{ customerId: string; problem: string }> }> {
    const rows = await this.read<Row[]>((c) =>
      c.query(`SELECT c.id, c.balance, c.held,
          (SELECT COALESCE(SUM(e.amount), 0) FROM billing_entries e WHERE e.customer_id = c.id) AS entry_balance,
          (SELECT COALESCE(SUM(e.held_delta), 0) FROM billing_entries e WHERE e.customer_id = c.id) AS entry_held,
          (SELECT COALESCE(SUM(h.amount), 0) FROM billing_holds h WHERE h.customer_id = c.id AND h.status = 'pending') AS open_holds,
          (SELECT COALESCE(SUM(ch.amount - ch.refunded), 0) FROM billing_charges ch WHERE ch.customer_id = c.id) AS net_charges,
          (SELECT COALESCE(SUM(e.amount), 0) FROM billing_entries e WHERE e.customer_id = c.id AND e.type = 'topup') AS topups
        FROM billing_customers c`),
    );
    const violations: Array<{ customerId: string; problem: string }> = [];
    for (const r of rows) {
      const id = String(r.id);
      const [balance, held, entryBalance, entryHeld, openHolds, netCharges, topups] = [r.balance, r.held, r.entry_balance, r.entry_held, r.open_holds, r.net_charges, r.topups].map((v) => BigInt(String(v)));
      if (balance !== entryBalance) violations.push({ customerId: id, problem: `balance ${balance} != sum of entries ${entryBalance}` });
      if (held !== entryHeld) violations.push({ customerId: id, problem: `held ${held} != sum of held deltas ${entryHeld}` });
      if (held !== openHolds) violations.push({ customerId: id, problem: `held ${held} != sum of pending holds ${openHolds}` });
      if (balance !== topups! - netCharges!) violations.push({ customerId: id, problem: `balance ${balance} != top-ups ${topups} − net charges ${netCharges}` });
      if (balance! < 0n || balance! - held! < 0n) violations.push({ customerId: id, problem: `overdrawn: balance ${balance}, held ${held}` });
    }
    return { ok: violations.length === 0, violations };
  }

  async close(): Promise<void> {
    await this.committer.flush();
    await this.d.close();
  }
}
