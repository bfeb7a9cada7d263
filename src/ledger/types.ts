import type { BillingError } from '../errors';
import type { Nanos } from '../money';
import type { RateCard } from '../pricing/ratecard';
import type { Dialect, SqlConnection } from './dialect';
import type { LedgerView } from './within';

/** Who caused a mutation, for the audit trail: "cli", "node:<name>", "handler", "stripe", "system", or a library caller's own tag. */
export type Actor = string;

export interface Customer {
  readonly id: string;
  readonly name: string | null;
  readonly createdAt: string;
}

export interface Balance {
  readonly customerId: string;
  /** Posted balance: the sum of all entries. */
  readonly balance: Nanos;
  /** Sum of open (pending, unexpired) holds. */
  readonly held: Nanos;
  /** What a new hold can take: balance − held. */
  readonly available: Nanos;
}

export interface BudgetState {
  readonly customerId: string;
  /** Cap per budget period; null when the customer has none. */
  readonly budget: Nanos | null;
  /** Collected in the current budget period, net of refunds of its charges. */
  readonly spent: Nanos;
  /** Open holds, which count against the budget until settled or released. */
  readonly held: Nanos;
  readonly periodStart: string | null;
  readonly periodEnd: string | null;
}

export type HoldStatus = 'pending' | 'settled' | 'released' | 'expired';

export interface Hold {
  readonly id: string;
  readonly customerId: string;
  readonly amount: Nanos;
  readonly status: HoldStatus;
  readonly expiresAt: string;
  readonly createdAt: string;
  readonly chargeType: string | null;
  readonly quantity: string | null;
  readonly rateCardVersion: string | null;
  /** The charge that settled it, once settled. */
  readonly chargeId: string | null;
  /** Available balance right after this hold was placed. */
  readonly availableAfter: Nanos;
}

export interface Charge {
  readonly id: string;
  readonly customerId: string;
  readonly holdId: string | null;
  /** What was taken from the balance. */
  readonly amount: Nanos;
  /** Priced amount that could not be collected (settle above the hold with too little available); see README. */
  readonly shortfall: Nanos;
  readonly refunded: Nanos;
  readonly chargeType: string | null;
  readonly quantity: string | null;
  readonly rateCardVersion: string | null;
  readonly createdAt: string;
  readonly balanceAfter: Nanos;
  readonly metadata: Record<string, unknown>;
}

export interface TopUp {
  readonly id: string;
  readonly customerId: string;
  readonly amount: Nanos;
  readonly balanceAfter: Nanos;
  readonly createdAt: string;
}

export interface Refund {
  readonly id: string;
  readonly chargeId: string;
  readonly customerId: string;
  readonly amount: Nanos;
  readonly balanceAfter: Nanos;
  readonly createdAt: string;
}

export type EntryType = 'topup' | 'hold' | 'settle' | 'release' | 'expire' | 'charge' | 'refund';

/** One line of the append-only journal. `amount` moves the balance; `heldDelta` moves the held total. */
export interface Entry {
  readonly seq: number;
  readonly id: string;
  readonly customerId: string;
  readonly type: EntryType;
  readonly amount: Nanos;
  readonly heldDelta: Nanos;
  readonly balanceAfter: Nanos;
  readonly holdId: string | null;
  readonly chargeId: string | null;
  readonly idempotencyKey: string | null;
  readonly actor: Actor;
  readonly rateCardVersion: string | null;
  readonly chargeType: string | null;
  readonly quantity: string | null;
  readonly memo: string | null;
  readonly createdAt: string;
}

export interface AuditRecord {
  readonly seq: number;
  readonly at: string;
  readonly actor: Actor;
  readonly operation: string;
  readonly idempotencyKey: string | null;
  readonly customerId: string | null;
  readonly rateCardVersion: string | null;
  readonly details: Record<string, unknown>;
}

interface Mutation {
  /** Required: a replay with the same key returns the first result and changes nothing. */
  readonly idempotencyKey: string;
  readonly actor?: Actor;
}

interface Priced {
  readonly chargeType?: string;
  readonly quantity?: string;
  readonly rateCardVersion?: string;
  readonly metadata?: Record<string, unknown>;
}

export interface CreateCustomerInput {
  readonly id: string;
  readonly name?: string;
  readonly idempotencyKey?: string;
  readonly actor?: Actor;
}
/** A display-name change; `name: null` clears it. Setting the current name again changes nothing. */
export interface UpdateCustomerInput {
  readonly id: string;
  readonly name: string | null;
  readonly actor?: Actor;
}
export interface ListCustomersOptions {
  /** Page size (default: every customer; at most 10,000 a page when given). */
  readonly limit?: number;
  /** Keyset cursor: only customers whose id sorts after this one (ids are ordered as the database orders them). */
  readonly after?: string;
}
export interface TopUpInput extends Mutation {
  readonly customerId: string;
  readonly amount: Nanos;
  readonly memo?: string;
}
export interface HoldInput extends Mutation, Priced {
  readonly customerId: string;
  readonly amount: Nanos;
  /** Defaults to the ledger's holdTtlMs (15 minutes). */
  readonly ttlMs?: number;
  /**
   * Adds `amount` to this pending hold of the same customer instead of opening a
   * new one (an incremental authorization); same availability and budget checks.
   * The hold's expiry moves to now + ttl when that is later.
   */
  readonly addTo?: string;
}
export interface SettleInput extends Mutation, Priced {
  readonly holdId: string;
  readonly amount: Nanos;
  /**
   * Default true: the hold is closed and what it does not take is released.
   * false (partial capture): takes `amount` from the hold, which stays pending
   * with the rest; more than the hold has left comes from what is available.
   */
  readonly final?: boolean;
}
export interface ReleaseInput extends Mutation {
  readonly holdId: string;
  /**
   * Nobody waits for this release (a run's leftover after its idle end): it may
   * travel in the next transaction other operations of this process start, up
   * to 300 ms later, instead of a transaction of its own.
   */
  readonly deferrable?: boolean;
}
export interface ChargeInput extends Mutation, Priced {
  readonly customerId: string;
  readonly amount: Nanos;
}
export interface RefundInput extends Mutation {
  readonly chargeId: string;
  /** Defaults to everything not yet refunded. */
  readonly amount?: Nanos;
  readonly reason?: string;
}

export interface StatementOptions {
  readonly limit?: number;
  /** Only entries with seq greater than this. */
  readonly afterSeq?: number;
}

export interface RateCardRecord {
  readonly version: string;
  readonly active: boolean;
  readonly importedAt: string;
  readonly activatedAt: string | null;
}

/** One operation of a committed batch, as an in-transaction observer sees it (see LedgerOptions.onBatch). */
export interface BatchOutcome {
  /** topUp, hold, settle, release, charge, refund, createCustomer, setBudget, touch. */
  readonly operation: string;
  readonly idempotencyKey: string | null;
  /** The customer named by the request (null for settle/release/refund: read it from the value). */
  readonly customerId: string | null;
  readonly value?: unknown;
  readonly error?: BillingError;
}

/**
 * The ledger: one interface, identical behaviour on every backend (the
 * contract tests run the same suite against each). All amounts are nano-USD.
 */
export interface Ledger {
  readonly backend: 'sqlite' | 'postgres';
  /** Where it lives, with any password removed. */
  readonly location: string;

  createCustomer(input: CreateCustomerInput): Promise<Customer>;
  getCustomer(id: string): Promise<Customer>;
  findCustomer(id: string): Promise<Customer | null>;
  /** Customers in id order; with `limit`/`after`, one keyset page read with SQL LIMIT. */
  listCustomers(opts?: ListCustomersOptions): Promise<Customer[]>;
  countCustomers(): Promise<number>;
  /** Changes a customer's display name (the only customer field that is not money); audited. */
  updateCustomer(input: UpdateCustomerInput): Promise<Customer>;

  topUp(input: TopUpInput): Promise<TopUp>;
  hold(input: HoldInput): Promise<Hold>;
  settle(input: SettleInput): Promise<Charge>;
  release(input: ReleaseInput): Promise<Hold>;
  charge(input: ChargeInput): Promise<Charge>;
  refund(input: RefundInput): Promise<Refund>;

  balance(customerId: string): Promise<Balance>;
  setBudget(input: { customerId: string; limit: Nanos | null; anchorDay?: number; actor?: Actor }): Promise<BudgetState>;
  budget(customerId: string): Promise<BudgetState>;
  getHold(id: string): Promise<Hold>;
  getCharge(id: string): Promise<Charge>;
  statement(customerId: string, opts?: StatementOptions): Promise<Entry[]>;
  audit(opts?: { customerId?: string; limit?: number }): Promise<AuditRecord[]>;
  /** Releases every pending hold past its expiry; returns how many. */
  sweepExpiredHolds(): Promise<{ expired: number }>;

  importRateCard(card: RateCard, opts?: { activate?: boolean; actor?: Actor }): Promise<RateCardRecord>;
  activateRateCard(version: string, opts?: { actor?: Actor }): Promise<RateCardRecord>;
  /** The active card; the packaged default is imported and activated on first use. */
  activeRateCard(): Promise<RateCard>;
  getRateCard(version: string): Promise<RateCard>;
  listRateCards(): Promise<RateCardRecord[]>;

  /** Verifies balance = Σ entries and held = Σ open holds for every customer; returns the customers that break it. */
  checkInvariants(): Promise<{ ok: boolean; violations: Array<{ customerId: string; problem: string }> }>;
  close(): Promise<void>;

  /**
   * The database the ledger lives in, for modules that keep their own tables
   * beside it (quota, stripe, webhooks) and must commit with it. Never for the
   * ledger's own tables: read those through `view` and the methods above.
   */
  readonly dialect: Dialect;
  /** The ledger's clock (injectable in tests), in ms since the epoch. */
  now(): number;
  /** Read-only ledger state inside a caller's transaction on `dialect`. */
  view(c: SqlConnection): LedgerView;
  /** The customer a top-up with this idempotency key credited, or null when none did. */
  toppedUpCustomer(idempotencyKey: string): Promise<string | null>;
}
