/**
 * `flowise-billing/langchain`: metering for LangChain runs (needs the optional
 * peer `@langchain/core`) and the Langfuse costs the handler reports.
 */
export { BillingCallbackHandler, type MeteredCharge, type MeteredRun } from './metering/handler';
export { billingHandlerOptionsSchema, type BillingHandlerOptions } from './metering/options';
export { billingRunConfig, withBilling } from './metering/run-config';
export { meteringKey } from './metering/keys';
export { estimatePromptTokens, estimateTextTokens, usageOf, type TokenUsage } from './metering/estimate';
export { BILLING_METADATA_KEYS, billingMetadata } from './langfuse/metadata';
export { LangfuseCostReporter, langfuseReporterFor, shutdownLangfuseReporters, type LangfuseCredentials } from './langfuse/reporter';
