import { BillingError, CustomerNotFoundError } from '../errors';
import type { Dialect, SqlConnection, WriteOptions } from '../ledger/dialect';
import type { Ledger } from '../ledger/types';
import { periodContaining } from '../period';
import { closeInvoiceIn } from './invoicing';
import type { Plan } from './plans';
import { planIn, seedDefaultPlans } from './plan-rows';
import { lockSubscription, saveSubscription, type SubRow } from './subscription-rows';
import type { QuotaOptions } from './types';

/**
 * What every quota concept (plans, subscriptions, admission, usage,
 * invoicing) shares: the ledger and its database, the clock and options, and
 * the few steps each of them takes inside its transaction. Holds no state
 * beyond the once-per-database plan seeding.
 */
export class QuotaCore {
  readonly d: Dialect;
  readonly clock: () => number;
  readonly defaultPlanId: string;
  readonly actor: string;
  private seeded?: Promise<void>;

  constructor(
    readonly ledger: Ledger,
    readonly opts: QuotaOptions = {},
  ) {
    this.d = ledger.dialect;
    this.clock = opts.clock ?? (() => ledger.now());
    this.defaultPlanId = opts.defaultPlanId ?? 'free';
    this.actor = opts.actor ?? 'library';
  }

  write<T>(fn: (c: SqlConnection) => Promise<T>, opts?: WriteOptions): Promise<T> {
    return this.d.writeTransaction(fn, opts);
  }

  /** Seeds the default tiers once per database (never overwrites an operator's edits). */
  ensurePlans(): Promise<void> {
    this.seeded ??= this.write((c) => seedDefaultPlans(c, this.clock())).catch((e) => {
      this.seeded = undefined;
      throw e;
    });
    return this.seeded;
  }

  planIn(c: SqlConnection, id: string): Promise<Plan> {
    return planIn(c, id);
  }

  newSub(customerId: string, planId: string, anchorDay: number, at: number): SubRow {
    const p = periodContaining(at, anchorDay);
    return { customerId, planId, status: 'active', anchorDay, periodStart: p.start, periodEnd: p.end, sessionsUsed: 0, pendingPlanId: null, cancelAtPeriodEnd: false };
  }

  async requireCustomer(c: SqlConnection, customerId: string): Promise<void> {
    if (!(await this.ledger.view(c).customerExists(customerId))) throw new CustomerNotFoundError(customerId);
  }

  lockSub(c: SqlConnection, customerId: string): Promise<SubRow | null> {
    return lockSubscription(c, this.d, customerId);
  }

  /** Returns the number of rows written (0 when an insert lost a race). */
  saveSub(c: SqlConnection, s: SubRow, insert: boolean): Promise<number> {
    return saveSubscription(c, s, insert, this.clock());
  }

  async requireSub(c: SqlConnection, customerId: string): Promise<SubRow> {
    await this.requireCustomer(c, customerId);
    const sub = await this.lockSub(c, customerId);
    if (!sub) throw new BillingError('SUBSCRIPTION_NOT_FOUND', `Customer ${customerId} has no subscription; subscribe it to a plan first`, { customerId });
    return sub;
  }

  /**
   * Moves a subscription into the period containing `at`: the ended period's
   * invoice is closed with the plan that was in force (none while canceled), then a pending
   * downgrade or cancellation takes effect and the session count restarts.
   */
  async roll(c: SqlConnection, sub: SubRow, at: number): Promise<void> {
    while (at >= sub.periodEnd) {
      // A canceled subscription's periods owe nothing: closing them would bill its base price every month forever.
      if (sub.status !== 'canceled') await closeInvoiceIn(this, c, sub, { start: sub.periodStart, end: sub.periodEnd });
      const next = periodContaining(sub.periodEnd, sub.anchorDay);
      sub.periodStart = next.start;
      sub.periodEnd = next.end;
      sub.sessionsUsed = 0;
      if (sub.pendingPlanId) {
        sub.planId = sub.pendingPlanId;
        sub.pendingPlanId = null;
      }
      if (sub.cancelAtPeriodEnd) {
        sub.status = 'canceled';
        sub.cancelAtPeriodEnd = false;
      }
    }
  }

  async audit(c: SqlConnection, operation: string, customerId: string | null, details: Record<string, unknown>): Promise<void> {
    await this.ledger.view(c).audit({ at: this.clock(), actor: this.actor, operation, customerId, details });
  }
}
