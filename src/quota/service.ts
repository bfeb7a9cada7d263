import { randomUUID } from 'node:crypto';
import { BillingError, BudgetExceededError, CustomerNotFoundError, QuotaExceededError, ValidationError } from '../errors';
import type { Dialect, SqlConnection } from '../ledger/dialect';
import { iso } from '../ledger/rows';
import type { BudgetState, Ledger } from '../ledger/types';
import { formatQuantity, formatUsd, type Nanos, parseQuantity } from '../money';
import { type Period, periodContaining } from '../period';
import type { AdmissionGate, AdmitRunInput, RunAdmission } from './gate';
import { comparePlans, type Plan, type PlanInput, parsePlan, planIdSchema } from './plans';
import { allPlans, insertPlan, planIn, replacePlan, seedDefaultPlans } from './plan-rows';
import { openSessionAndCount, planAndConversation, sessionsInPeriod, touchConversation } from './session-rows';
import { usageReport } from './usage-report';
import { deliverAlerts, fireAlerts, listAlerts } from './alerts';
import { allInvoices, decodeInvoice, encodeInvoice, invoiceClosed, invoiceFor, latestInvoice, storeInvoice } from './invoices';
import { lockSubscription, percent, saveSubscription, type SubRow, subFromRow, subOut } from './subscription-rows';
import type { Alert, Invoice, MetricLine, QuotaEvent, QuotaOptions, Subscription, SubscriptionStatus, UsageReport } from './types';

export type { Alert, Invoice, MetricLine, QuotaEvent, QuotaOptions, Subscription, SubscriptionStatus, UsageReport } from './types';

/**
 * Plans, subscriptions, sessions and quotas, in the ledger's own database.
 * Every admission is one write transaction holding the subscription row, so
 * concurrent first messages and the last free session are decided atomically.
 */
/** A run may not start once the budget is fully used (spent + held); steps are capped by the ledger itself. */
function budgetRefusal(b: BudgetState): BudgetExceededError | null {
  if (b.budget === null) return null;
  if (b.spent + b.held < b.budget) return null;
  return new BudgetExceededError({ customerId: b.customerId, budgetUsd: formatUsd(b.budget), spentUsd: formatUsd(b.spent), heldUsd: formatUsd(b.held), requiredUsd: '0.00', periodEnd: b.periodEnd });
}

export class QuotaService implements AdmissionGate {
  private readonly d: Dialect;
  private readonly clock: () => number;
  private readonly defaultPlanId: string;
  private readonly actor: string;
  private seeded?: Promise<void>;

  constructor(
    readonly ledger: Ledger,
    private readonly opts: QuotaOptions = {},
  ) {
    this.d = ledger.dialect;
    this.clock = opts.clock ?? (() => ledger.now());
    this.defaultPlanId = opts.defaultPlanId ?? 'free';
    this.actor = opts.actor ?? 'library';
  }

  private write<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T> {
    return this.d.writeTransaction(fn);
  }

  /** Seeds the default tiers once per database (never overwrites an operator's edits). */
  private ensurePlans(): Promise<void> {
    this.seeded ??= this.write((c) => seedDefaultPlans(c, this.clock())).catch((e) => {
      this.seeded = undefined;
      throw e;
    });
    return this.seeded;
  }

  // ---- plans --------------------------------------------------------------

  async listPlans(): Promise<Plan[]> {
    await this.ensurePlans();
    return this.d.read(allPlans);
  }

  async getPlan(id: string): Promise<Plan> {
    await this.ensurePlans();
    return this.d.read((c) => this.planIn(c, id));
  }

  private planIn(c: SqlConnection, id: string): Promise<Plan> {
    return planIn(c, id);
  }

  async createPlan(input: PlanInput): Promise<Plan> {
    const plan = parsePlan(input);
    await this.ensurePlans();
    return this.write(async (c) => {
      await insertPlan(c, plan, this.clock());
      await this.audit(c, 'createPlan', null, { planId: plan.id });
      return plan;
    });
  }

  /** Replaces fields of a plan; takes effect for every subscriber from the next admission. */
  async updatePlan(id: string, changes: Partial<PlanInput>): Promise<Plan> {
    await this.ensurePlans();
    return this.write(async (c) => {
      const current = await this.planIn(c, id);
      const plan = parsePlan({ ...current.document, ...changes, id });
      await replacePlan(c, plan, this.clock());
      await this.audit(c, 'updatePlan', null, { planId: id, changes });
      return plan;
    });
  }

  // ---- subscriptions ------------------------------------------------------

  async getSubscription(customerId: string): Promise<Subscription | null> {
    const [r] = await this.d.read((c) => c.query('SELECT * FROM billing_subscriptions WHERE customer_id = ?', [customerId]));
    return r ? subOut(subFromRow(r)) : null;
  }

  /**
   * Puts a customer on a plan. New: starts a period now (anchored on today,
   * or `anchorDay`). Upgrade: immediate. Downgrade: at the next period.
   * The same plan again clears a pending downgrade or cancellation.
   */
  async subscribe(input: { customerId: string; planId: string; anchorDay?: number; at?: Date }): Promise<{ subscription: Subscription; change: 'new' | 'upgrade' | 'downgrade' | 'unchanged' }> {
    const planId = planIdSchema.safeParse(input.planId);
    if (!planId.success) throw ValidationError.fromZod('plan id', planId.error);
    if (input.anchorDay !== undefined && (!Number.isInteger(input.anchorDay) || input.anchorDay < 1 || input.anchorDay > 31)) {
      throw new ValidationError('anchor day must be an integer 1–31', { field: 'anchorDay', value: input.anchorDay });
    }
    await this.ensurePlans();
    const at = input.at?.getTime() ?? this.clock();
    return this.write(async (c) => {
      await this.requireCustomer(c, input.customerId);
      const plan = await this.planIn(c, input.planId);
      const sub = await this.lockSub(c, input.customerId);
      if (!sub) {
        const fresh = this.newSub(input.customerId, plan.id, input.anchorDay ?? new Date(at).getUTCDate(), at);
        await this.saveSub(c, fresh, true);
        await this.audit(c, 'subscribe', input.customerId, { planId: plan.id, change: 'new' });
        return { subscription: subOut(fresh), change: 'new' as const };
      }
      await this.roll(c, sub, at);
      const current = await this.planIn(c, sub.planId);
      const cmp = comparePlans(plan, current);
      let change: 'upgrade' | 'downgrade' | 'unchanged';
      if (plan.id === current.id) {
        change = 'unchanged';
        sub.pendingPlanId = null;
        sub.cancelAtPeriodEnd = false;
        if (sub.status === 'canceled') sub.status = 'active';
      } else if (cmp > 0 || (cmp === 0 && plan.id !== current.id)) {
        change = 'upgrade';
        sub.planId = plan.id;
        sub.pendingPlanId = null;
        sub.cancelAtPeriodEnd = false;
        if (sub.status === 'canceled') sub.status = 'active';
      } else {
        change = 'downgrade';
        sub.pendingPlanId = plan.id;
      }
      await this.saveSub(c, sub, false);
      await this.audit(c, 'subscribe', input.customerId, { planId: plan.id, change });
      return { subscription: subOut(sub), change };
    });
  }

  /** Cancels at the end of the current period; sessions keep working until then. */
  async cancel(customerId: string): Promise<Subscription> {
    return this.write(async (c) => {
      const sub = await this.lockSub(c, customerId);
      if (!sub) throw new BillingError('SUBSCRIPTION_NOT_FOUND', `Customer ${customerId} has no subscription`, { customerId });
      await this.roll(c, sub, this.clock());
      sub.cancelAtPeriodEnd = true;
      await this.saveSub(c, sub, false);
      await this.audit(c, 'cancel', customerId, { periodEnd: iso(sub.periodEnd) });
      return subOut(sub);
    });
  }

  /** Suspends (e.g. an unpaid invoice) or resumes a subscription; suspended customers cannot start runs. */
  async setStatus(customerId: string, status: 'active' | 'suspended'): Promise<Subscription> {
    return this.write(async (c) => {
      const sub = await this.lockSub(c, customerId);
      if (!sub) throw new BillingError('SUBSCRIPTION_NOT_FOUND', `Customer ${customerId} has no subscription`, { customerId });
      sub.status = status;
      await this.saveSub(c, sub, false);
      await this.audit(c, status === 'active' ? 'resume' : 'suspend', customerId, {});
      return subOut(sub);
    });
  }

  private newSub(customerId: string, planId: string, anchorDay: number, at: number): SubRow {
    const p = periodContaining(at, anchorDay);
    return { customerId, planId, status: 'active', anchorDay, periodStart: p.start, periodEnd: p.end, sessionsUsed: 0, pendingPlanId: null, cancelAtPeriodEnd: false };
  }

  private async requireCustomer(c: SqlConnection, customerId: string): Promise<void> {
    if (!(await this.ledger.view(c).customerExists(customerId))) throw new CustomerNotFoundError(customerId);
  }

  private lockSub(c: SqlConnection, customerId: string): Promise<SubRow | null> {
    return lockSubscription(c, this.d, customerId);
  }

  /** Returns the number of rows written (0 when an insert lost a race). */
  private saveSub(c: SqlConnection, s: SubRow, insert: boolean): Promise<number> {
    return saveSubscription(c, s, insert, this.clock());
  }

  /**
   * Moves a subscription into the period containing `at`: the ended period's
   * invoice is closed with the plan that was in force, then a pending
   * downgrade or cancellation takes effect and the session count restarts.
   */
  private async roll(c: SqlConnection, sub: SubRow, at: number): Promise<void> {
    while (at >= sub.periodEnd) {
      await this.closeInvoiceIn(c, sub, { start: sub.periodStart, end: sub.periodEnd });
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

  // ---- sessions and admission --------------------------------------------

  /**
   * Records a message in a conversation and admits the run: an existing
   * session always continues (graceful degradation); a new one needs a free
   * session in the period and an unexhausted budget.
   */
  async admitRun(input: AdmitRunInput): Promise<RunAdmission> {
    const at = input.at?.getTime() ?? this.clock();
    if (typeof input.conversationId !== 'string' || input.conversationId.length === 0 || input.conversationId.length > 255) {
      throw new ValidationError('conversation id must be 1–255 characters', { field: 'conversationId' });
    }
    await this.ensurePlans();
    const fired: Alert[] = [];
    // Round trips are the cost of an admission (every metered prediction makes one): the customer and its
    // budget in one read, the subscription locked, its plan and the conversation in one read, a new
    // session's three rows in one write where the dialect can (PostgreSQL), and no write of an unchanged row.
    let budgeted = false;
    const admission = await this.write(async (c) => {
      // Three reads that need no answer from each other, in this order (the plan and conversation once the
      // row is locked). Awaited one by one: node-pg deprecates queueing statements on a busy client; a
      // connection that pipelines could send them, with BEGIN, in one round trip.
      const budget = await this.ledger.view(c).budgetAt(input.customerId, at);
      if (!budget) throw new CustomerNotFoundError(input.customerId);
      budgeted = budget.budget !== null;
      let sub = await this.lockSub(c, input.customerId);
      let { plan, conversation: conv } = await planAndConversation(c, input.customerId, input.conversationId);
      let fresh = false;
      if (!sub) {
        // Racing first runs both insert; the loser's insert is a no-op and both then lock the one row.
        const initial = this.newSub(input.customerId, this.defaultPlanId, new Date(at).getUTCDate(), at);
        await this.planIn(c, initial.planId);
        const inserted = await this.saveSub(c, initial, true);
        sub = (await this.lockSub(c, input.customerId))!;
        if (inserted) {
          await this.audit(c, 'subscribe', input.customerId, { planId: sub.planId, change: 'new', reason: 'default plan on first run' });
        }
        fresh = true;
        // Read before the subscription existed (and was locked): read again.
        ({ plan, conversation: conv } = await planAndConversation(c, input.customerId, input.conversationId));
      }
      const before = sub.periodEnd;
      await this.roll(c, sub, at);
      const changed = fresh || sub.periodEnd !== before;
      if (sub.status !== 'active') {
        if (changed) await this.saveSub(c, sub, false);
        return this.refused(c, input, at, new BillingError('SUBSCRIPTION_INACTIVE', `The subscription of customer ${input.customerId} is ${sub.status}`, { customerId: input.customerId, status: sub.status }));
      }
      // A roll may have moved the subscription to its pending plan.
      if (plan?.id !== sub.planId) plan = await this.planIn(c, sub.planId);
      let session: 'new' | 'existing';
      let sessionId: string;
      if (conv && at - conv.lastActivityAt <= plan.sessionTimeoutMs) {
        session = 'existing';
        sessionId = conv.sessionId;
        await touchConversation(c, input.customerId, input.conversationId, Math.max(at, conv.lastActivityAt));
        if (changed) await this.saveSub(c, sub, false);
      } else {
        if (plan.sessionsIncluded !== null && sub.sessionsUsed >= plan.sessionsIncluded) {
          if (changed) await this.saveSub(c, sub, false);
          return this.refused(c, input, at, new QuotaExceededError({
            customerId: input.customerId,
            sessionsUsed: sub.sessionsUsed,
            sessionsLimit: plan.sessionsIncluded,
            periodEnd: iso(sub.periodEnd),
            planId: plan.id,
          }));
        }
        const overBudget = budgetRefusal(budget);
        if (overBudget) {
          if (changed) await this.saveSub(c, sub, false);
          return this.refused(c, input, at, overBudget);
        }
        session = 'new';
        sessionId = `ses_${randomUUID().replace(/-/g, '')}`;
        sub.sessionsUsed += 1;
        await openSessionAndCount(c, this.d, { id: sessionId, customerId: input.customerId, conversationId: input.conversationId, at, periodStart: sub.periodStart }, sub, this.clock());
        if (plan.sessionsIncluded !== null && plan.sessionsIncluded > 0) {
          const pct = percent(BigInt(sub.sessionsUsed), BigInt(plan.sessionsIncluded));
          fired.push(...(await this.fire(c, input.customerId, sub.periodStart, 'sessions', pct, plan.alertThresholds, at)));
        }
      }
      const limit = plan.sessionsIncluded;
      return {
        session,
        sessionId,
        tier: plan.id,
        sessionsUsed: sub.sessionsUsed,
        sessionsLimit: limit,
        sessionsRemaining: limit === null ? null : Math.max(0, limit - sub.sessionsUsed),
        periodStart: iso(sub.periodStart),
        periodEnd: iso(sub.periodEnd),
        managedModels: plan.managedModels,
      } satisfies RunAdmission;
    });
    // Refusals are returned from the transaction so the period roll it did is kept.
    if (admission instanceof BillingError) throw admission;
    // A customer without a budget has no budget alerts: no need to read it again.
    if (budgeted) fired.push(...(await this.checkBudgetAlerts(input.customerId, at)));
    await this.deliver(fired);
    return admission;
  }

  private async refused(c: SqlConnection, input: AdmitRunInput, at: number, error: BillingError): Promise<BillingError> {
    await this.opts.inTransaction?.(c, { kind: 'refused', customerId: input.customerId, conversationId: input.conversationId, error, at });
    return error;
  }

  private async checkBudgetAlerts(customerId: string, at: number): Promise<Alert[]> {
    const b = await this.ledger.budget(customerId);
    if (b.budget === null || b.budget === 0n || !b.periodStart) return [];
    const [sub] = await this.d.read((c) => c.query('SELECT plan_id FROM billing_subscriptions WHERE customer_id = ?', [customerId]));
    const thresholds = sub ? (await this.getPlan(String(sub.plan_id))).alertThresholds : [75, 90, 95];
    const pct = percent(b.spent, b.budget);
    return this.write((c) => this.fire(c, customerId, Date.parse(b.periodStart!), 'budget', pct, thresholds, at));
  }

  private fire(c: SqlConnection, customerId: string, periodStart: number, kind: Alert['kind'], pct: number, thresholds: readonly number[], at: number): Promise<Alert[]> {
    return fireAlerts(c, this.opts.inTransaction, { customerId, periodStart, kind, pct, thresholds, at });
  }

  private deliver(alerts: Alert[]): Promise<void> {
    return deliverAlerts(this.opts.onAlert, alerts);
  }

  async alerts(customerId: string, period?: Period): Promise<Alert[]> {
    return this.d.read((c) => listAlerts(c, customerId, period));
  }

  // ---- usage, reports, invoices ------------------------------------------

  /** Records units of an operator-defined metric (e.g. api_calls) in the period containing `at`; idempotent by key. */
  async recordUsage(input: { customerId: string; metric: string; quantity: string | number; idempotencyKey: string; at?: Date }): Promise<{ recorded: boolean }> {
    const q = parseQuantity(input.quantity);
    if (!/^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/.test(input.metric)) throw new ValidationError(`metric "${input.metric}" must be letters, digits and _ . : -`, { field: 'metric' });
    if (!input.idempotencyKey) throw new ValidationError('idempotency key is required', { field: 'idempotencyKey' });
    const at = input.at?.getTime() ?? this.clock();
    await this.ensurePlans();
    return this.write(async (c) => {
      await this.requireCustomer(c, input.customerId);
      const sub = await this.lockSub(c, input.customerId);
      const anchor = sub?.anchorDay ?? 1;
      const period = periodContaining(at, anchor);
      const [prior] = await c.query('SELECT customer_id, metric, quantity FROM billing_usage WHERE idempotency_key = ?', [input.idempotencyKey]);
      if (prior) {
        if (String(prior.customer_id) !== input.customerId || String(prior.metric) !== input.metric || String(prior.quantity) !== formatQuantity(q)) {
          throw new BillingError('IDEMPOTENCY_CONFLICT', `Idempotency key "${input.idempotencyKey}" was already used for different usage`, { idempotencyKey: input.idempotencyKey });
        }
        return { recorded: false };
      }
      await c.run('INSERT INTO billing_usage (customer_id, metric, quantity, period_start, idempotency_key, recorded_at) VALUES (?, ?, ?, ?, ?, ?)', [
        input.customerId,
        input.metric,
        formatQuantity(q),
        period.start,
        input.idempotencyKey,
        at,
      ]);
      await this.audit(c, 'recordUsage', input.customerId, { metric: input.metric, quantity: formatQuantity(q), idempotencyKey: input.idempotencyKey });
      return { recorded: true };
    });
  }

  /** Closes the period's invoice once (an immutable record); the first close wins. */
  private async closeInvoiceIn(c: SqlConnection, sub: SubRow, period: Period): Promise<void> {
    if (await invoiceClosed(c, sub.customerId, period.start)) return;
    const inv = await invoiceFor(c, this.ledger.view(c), sub.customerId, await this.planIn(c, sub.planId), period);
    const id = `inv_${randomUUID().replace(/-/g, '')}`;
    const closedAt = this.clock();
    const doc = encodeInvoice({ ...inv, id, closedAt: iso(closedAt) });
    await storeInvoice(c, { id, customerId: sub.customerId, period, planId: sub.planId, total: inv.total, document: doc, closedAt });
    await this.audit(c, 'closeInvoice', sub.customerId, { invoiceId: id, totalUsd: formatUsd(inv.total), periodStart: iso(period.start) });
    await this.opts.inTransaction?.(c, { kind: 'invoiceClosed', invoice: decodeInvoice(doc) });
  }

  /** The current period's invoice so far (nothing recorded). */
  async previewInvoice(customerId: string): Promise<Invoice> {
    await this.ensurePlans();
    return this.write(async (c) => {
      const sub = await this.requireSub(c, customerId);
      await this.roll(c, sub, this.clock());
      await this.saveSub(c, sub, false);
      return invoiceFor(c, this.ledger.view(c), customerId, await this.planIn(c, sub.planId), { start: sub.periodStart, end: sub.periodEnd });
    });
  }

  /**
   * Closes every ended period (an immutable record each) and returns the most
   * recent closed invoice. Closing again returns the same record.
   */
  async closeInvoice(customerId: string): Promise<Invoice> {
    await this.ensurePlans();
    return this.write(async (c) => {
      const sub = await this.requireSub(c, customerId);
      await this.roll(c, sub, this.clock());
      await this.saveSub(c, sub, false);
      const latest = await latestInvoice(c, customerId);
      if (!latest) {
        throw new ValidationError(`No billing period of ${customerId} has ended yet; the current one ends ${iso(sub.periodEnd)} (see invoice preview)`, {
          customerId,
          periodEnd: iso(sub.periodEnd),
        });
      }
      return latest;
    });
  }

  async invoices(customerId: string): Promise<Invoice[]> {
    return this.d.read((c) => allInvoices(c, customerId));
  }

  private async requireSub(c: SqlConnection, customerId: string): Promise<SubRow> {
    await this.requireCustomer(c, customerId);
    const sub = await this.lockSub(c, customerId);
    if (!sub) throw new BillingError('SUBSCRIPTION_NOT_FOUND', `Customer ${customerId} has no subscription; subscribe it to a plan first`, { customerId });
    return sub;
  }

  /** The usage report for the current period, or for the period containing `at`. */
  async usage(customerId: string, opts: { at?: Date } = {}): Promise<UsageReport> {
    await this.ensurePlans();
    const now = this.clock();
    const at = opts.at?.getTime() ?? now;
    const bal = await this.ledger.balance(customerId);
    const budget = await this.ledger.budget(customerId);
    const view = await this.d.read(async (c) => {
      await this.requireCustomer(c, customerId);
      const [r] = await c.query('SELECT * FROM billing_subscriptions WHERE customer_id = ?', [customerId]);
      // No subscription yet: report what the first run will get (the default plan).
      const sub = r ? subFromRow(r) : this.newSub(customerId, this.defaultPlanId, new Date(now).getUTCDate(), now);
      // Read-only view of a period that has ended but not yet rolled.
      let planId = sub.planId;
      let status = sub.status;
      if (now >= sub.periodEnd) {
        if (sub.pendingPlanId) planId = sub.pendingPlanId;
        if (sub.cancelAtPeriodEnd) status = 'canceled';
      }
      const period = periodContaining(at, sub.anchorDay);
      const isCurrent = period.start === periodContaining(now, sub.anchorDay).start;
      const plan = await this.planIn(c, isCurrent ? planId : sub.planId);
      const sessionsUsed = await sessionsInPeriod(c, customerId, period.start);
      const inv = await invoiceFor(c, this.ledger.view(c), customerId, plan, period);
      return { ...usageReport({ customerId, plan, status, period, sessionsUsed, invoice: inv, balance: bal, budget }), period };
    });
    const { period, ...report } = view;
    return { ...report, alerts: await this.alerts(customerId, period) };
  }

  /** Sets (or clears with null) the customer's monthly budget, anchored like its subscription. */
  async setBudget(customerId: string, limit: Nanos | null): Promise<void> {
    const sub = await this.getSubscription(customerId);
    await this.ledger.setBudget({ customerId, limit, anchorDay: sub?.anchorDay ?? 1, actor: this.actor });
  }

  private async audit(c: SqlConnection, operation: string, customerId: string | null, details: Record<string, unknown>): Promise<void> {
    await this.ledger.view(c).audit({ at: this.clock(), actor: this.actor, operation, customerId, details });
  }
}

