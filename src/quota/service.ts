import type { Ledger } from '../ledger/types';
import type { Nanos } from '../money';
import type { Period } from '../period';
import * as admission from './admission';
import { QuotaCore } from './core';
import type { AdmissionGate, AdmitRunInput, RunAdmission } from './gate';
import * as invoicing from './invoicing';
import * as planBook from './plan-book';
import type { Plan, PlanInput } from './plans';
import * as subscriptions from './subscriptions';
import type { Alert, Invoice, QuotaOptions, Subscription, UsageReport } from './types';
import * as usage from './usage';

export type { Alert, Invoice, MetricLine, QuotaEvent, QuotaOptions, Subscription, SubscriptionStatus, UsageReport } from './types';

/**
 * Plans, subscriptions, sessions and quotas, in the ledger's own database:
 * one entry point over the concepts, each in its own module (plan-book.ts,
 * subscriptions.ts, admission.ts, usage.ts, invoicing.ts) sharing a
 * QuotaCore (core.ts).
 */
export class QuotaService implements AdmissionGate {
  private readonly q: QuotaCore;

  constructor(
    readonly ledger: Ledger,
    opts: QuotaOptions = {},
  ) {
    this.q = new QuotaCore(ledger, opts);
  }

  // ---- plans --------------------------------------------------------------

  listPlans(): Promise<Plan[]> {
    return planBook.listPlans(this.q);
  }

  getPlan(id: string): Promise<Plan> {
    return planBook.getPlan(this.q, id);
  }

  createPlan(input: PlanInput): Promise<Plan> {
    return planBook.createPlan(this.q, input);
  }

  /** Replaces fields of a plan; takes effect for every subscriber from the next admission. */
  updatePlan(id: string, changes: Partial<PlanInput>): Promise<Plan> {
    return planBook.updatePlan(this.q, id, changes);
  }

  // ---- subscriptions ------------------------------------------------------

  getSubscription(customerId: string): Promise<Subscription | null> {
    return subscriptions.getSubscription(this.q, customerId);
  }

  /**
   * Puts a customer on a plan. New: starts a period now (anchored on today,
   * or `anchorDay`). Upgrade: immediate. Downgrade: at the next period.
   * The same plan again clears a pending downgrade or cancellation; a downgrade
   * clears a pending cancellation; any plan reactivates a canceled one now.
   */
  subscribe(input: { customerId: string; planId: string; anchorDay?: number; at?: Date }): Promise<{ subscription: Subscription; change: 'new' | 'upgrade' | 'downgrade' | 'unchanged' }> {
    return subscriptions.subscribe(this.q, input);
  }

  /** Cancels at the end of the current period; sessions keep working until then. */
  cancel(customerId: string): Promise<Subscription> {
    return subscriptions.cancel(this.q, customerId);
  }

  /** Suspends (e.g. an unpaid invoice) or resumes a subscription; suspended customers cannot start runs. */
  setStatus(customerId: string, status: 'active' | 'suspended'): Promise<Subscription> {
    return subscriptions.setStatus(this.q, customerId, status);
  }

  // ---- sessions and admission --------------------------------------------

  /**
   * Records a message in a conversation and admits the run: an existing
   * session always continues (graceful degradation); a new one needs a free
   * session in the period and an unexhausted budget.
   */
  admitRun(input: AdmitRunInput): Promise<RunAdmission> {
    return admission.admitRun(this.q, input);
  }

  alerts(customerId: string, period?: Period): Promise<Alert[]> {
    return usage.alerts(this.q, customerId, period);
  }

  // ---- usage, reports, invoices ------------------------------------------

  /** Records units of an operator-defined metric (e.g. api_calls) in the period containing `at`; idempotent by key. */
  recordUsage(input: { customerId: string; metric: string; quantity: string | number; idempotencyKey: string; at?: Date }): Promise<{ recorded: boolean }> {
    return usage.recordUsage(this.q, input);
  }

  /** The current period's invoice so far (nothing recorded). */
  previewInvoice(customerId: string): Promise<Invoice> {
    return invoicing.previewInvoice(this.q, customerId);
  }

  /**
   * Closes every ended period (an immutable record each) and returns the most
   * recent closed invoice. Closing again returns the same record.
   */
  closeInvoice(customerId: string): Promise<Invoice> {
    return invoicing.closeInvoice(this.q, customerId);
  }

  invoices(customerId: string): Promise<Invoice[]> {
    return invoicing.invoices(this.q, customerId);
  }

  /** The usage report for the current period, or for the period containing `at`. */
  usage(customerId: string, opts: { at?: Date } = {}): Promise<UsageReport> {
    return usage.usage(this.q, customerId, opts);
  }

  /** Sets (or clears with null) the customer's monthly budget, anchored like its subscription. */
  setBudget(customerId: string, limit: Nanos | null): Promise<void> {
    return usage.setBudget(this.q, customerId, limit);
  }
}
