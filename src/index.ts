/**
 * The package root: money, prices, the ledger, quotas and billing tokens.
 * Loads no LangChain, Stripe or Langfuse code, so a backend that only signs
 * tokens and tops up customers needs nothing else. The rest lives in its own
 * entry point: `flowise-billing/langchain`, `/stripe`, `/flowise`, `/installer`.
 */
export * from './errors';
export * from './money';
export * from './pricing/ratecard';
export * from './pricing/price';
export * from './ledger';
export * from './period';
export type * from './quota/gate';
export * from './quota/plans';
export { QuotaService, type Alert, type Invoice, type MetricLine, type QuotaOptions, type Subscription, type SubscriptionStatus, type UsageReport } from './quota/service';
export * from './identity';
