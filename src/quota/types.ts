import type { BillingError } from '../errors';
import type { SqlConnection } from '../ledger/dialect';
import type { Nanos } from '../money';

/** The quota module's public shapes (plans live in plans.ts). */

export type SubscriptionStatus = 'active' | 'suspended' | 'canceled';

export interface Subscription {
  readonly customerId: string;
  readonly planId: string;
  readonly status: SubscriptionStatus;
  readonly anchorDay: number;
  readonly periodStart: string;
  readonly periodEnd: string;
  readonly sessionsUsed: number;
  /** A downgrade waiting for the next period. */
  readonly pendingPlanId: string | null;
  readonly cancelAtPeriodEnd: boolean;
}

export interface Alert {
  readonly customerId: string;
  readonly kind: 'sessions' | 'budget';
  readonly threshold: number;
  /** The usage percentage when it fired, e.g. "76.00". */
  readonly value: string;
  readonly periodStart: string;
  readonly firedAt: string;
}

export interface MetricLine {
  readonly metric: string;
  readonly unit: string;
  readonly used: string;
  readonly included: string;
  readonly overage: string;
  readonly overagePrice: Nanos;
  readonly amount: Nanos;
}

export interface Invoice {
  readonly id: string | null;
  readonly customerId: string;
  readonly planId: string;
  readonly periodStart: string;
  readonly periodEnd: string;
  readonly base: Nanos;
  readonly lines: readonly MetricLine[];
  readonly overage: Nanos;
  /** base + overage: what the period owes beyond prepaid usage. */
  readonly total: Nanos;
  /** Metered usage already paid from the credit balance in the period (not in total). */
  readonly prepaidUsage: Nanos;
  readonly closedAt: string | null;
}

export interface UsageReport {
  readonly customerId: string;
  readonly tier: string;
  readonly status: SubscriptionStatus;
  readonly periodStart: string;
  readonly periodEnd: string;
  readonly sessionsUsed: number;
  readonly sessionsLimit: number | null;
  readonly sessionsRemaining: number | null;
  /** Sessions used as a percentage of the limit, two decimals; 0 when unlimited. */
  readonly usagePercentage: number;
  readonly isNearLimit: boolean;
  /** The usage percentage from which isNearLimit is true: the plan's lowest alert threshold (null: the plan has none). */
  readonly nearLimitThreshold: number | null;
  readonly canMakeRequests: boolean;
  readonly base: Nanos;
  readonly overage: Nanos;
  readonly usageCharges: Nanos;
  /** base + overage + usage charges. */
  readonly currentCharges: Nanos;
  readonly balance: Nanos;
  readonly available: Nanos;
  readonly budget: Nanos | null;
  readonly budgetUsed: Nanos;
  readonly metrics: readonly MetricLine[];
  readonly alerts: readonly Alert[];
  readonly managedModels: boolean;
}

export interface QuotaOptions {
  readonly clock?: () => number;
  /** Plan a customer gets on first admission when it has no subscription (default "free"). */
  readonly defaultPlanId?: string;
  /** Called once per alert, after it is recorded; later issues deliver these as webhooks. */
  readonly onAlert?: (alert: Alert) => void | Promise<void>;
  /** Runs inside the transaction that records an alert, a refusal or a closed invoice, so an outbox row commits with its cause. */
  readonly inTransaction?: (c: SqlConnection, event: QuotaEvent) => Promise<void>;
  readonly actor?: string;
}

export type QuotaEvent =
  | { readonly kind: 'alert'; readonly alert: Alert }
  | { readonly kind: 'refused'; readonly customerId: string; readonly conversationId: string; readonly error: BillingError; readonly at: number }
  | { readonly kind: 'invoiceClosed'; readonly invoice: Invoice };
