import { formatUsd, type Nanos } from '../money';

/**
 * Billing fields as they appear in LangChain run metadata and therefore on
 * Langfuse traces and observations. Prefixed so they never collide with
 * LangChain's own keys (`ls_*`) or Langfuse's (`langfuse*`). Values are strings
 * or numbers only: amounts are exact decimal USD strings, never floats.
 */
export const BILLING_METADATA_KEYS = {
  customerId: 'billing_customer_id',
  conversationId: 'billing_conversation_id',
  planTier: 'billing_plan_tier',
  rateCardVersion: 'billing_rate_card_version',
  usageCategory: 'billing_usage_category',
  costCenter: 'billing_cost_center',
  quotaRemaining: 'billing_quota_remaining',
  /** Posted balance after the latest charge of the run (after the step, for a step's cost report). */
  balanceAfterUsd: 'billing_balance_after_usd',
  /** Available balance (balance − open holds) right after the latest hold of the run. */
  availableUsd: 'billing_available_usd',
  runCostUsd: 'billing_run_cost_usd',
  /** One cost observation: its exact amount, and the ledger charge(s) behind it. */
  costUsd: 'billing_usd',
  chargeId: 'billing_charge_id',
  chargeIds: 'billing_charge_ids',
} as const;

export interface BillingMetadataInput {
  readonly customerId?: string;
  readonly conversationId?: string;
  readonly planTier?: string | null;
  readonly rateCardVersion?: string;
  readonly usageCategory?: string;
  readonly costCenter?: string;
  /** Sessions left this period; null = unlimited (written as "unlimited"). */
  readonly quotaRemaining?: number | null;
  readonly balanceAfter?: Nanos;
  readonly available?: Nanos;
  readonly runCost?: Nanos;
}

/** The metadata object for the given fields; fields that are undefined are left out. */
export function billingMetadata(i: BillingMetadataInput): Record<string, string | number> {
  const k = BILLING_METADATA_KEYS;
  const out: Record<string, string | number> = {};
  if (i.customerId !== undefined) out[k.customerId] = i.customerId;
  if (i.conversationId !== undefined) out[k.conversationId] = i.conversationId;
  if (i.planTier !== undefined) out[k.planTier] = i.planTier ?? 'none';
  if (i.rateCardVersion !== undefined) out[k.rateCardVersion] = i.rateCardVersion;
  if (i.usageCategory !== undefined) out[k.usageCategory] = i.usageCategory;
  if (i.costCenter !== undefined) out[k.costCenter] = i.costCenter;
  if (i.quotaRemaining !== undefined) out[k.quotaRemaining] = i.quotaRemaining ?? 'unlimited';
  if (i.balanceAfter !== undefined) out[k.balanceAfterUsd] = formatUsd(i.balanceAfter);
  if (i.available !== undefined) out[k.availableUsd] = formatUsd(i.available);
  if (i.runCost !== undefined) out[k.runCostUsd] = formatUsd(i.runCost);
  return out;
}
