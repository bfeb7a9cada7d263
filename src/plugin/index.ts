/**
 * What the Flowise nodes call (no Flowise imports here): the shared ledger per
 * location, the checks before a run, step charges, refusal messages and the
 * customer's own usage view.
 */
export * from './ledgers';
export * from './guard';
export * from './refusal';
export * from './flow-run';
export * from './run-key';
export * from './usage';
export * from '../identity';
export { z } from 'zod';
export { CUSTOMER_ID_PATTERN, customerIdSchema, DECIMAL_PATTERN, parsedBy } from '../schemas';
export { ValidationError, BillingError, isBillingError } from '../errors';
export { formatUsd, MAX_AMOUNT, parseUsd } from '../money';
export { ledgerTarget } from '../ledger/open';
export { CHARGE_TYPES, isChargeType as isChargeTypeName, type ChargeType } from '../pricing/ratecard';
export * from './admit';
export * from './metered';
export * from './usage-tool';
export { sharedRead } from './shared-reads';
export { billingMetadata, BILLING_METADATA_KEYS } from '../langfuse/metadata';
export { addTokenCounts, callSignal, type StreamCounts, streamChunkUsageOf, streamTotal, type TokenCounts, usageMetadataOf, withStreamedCounts } from '../metering/estimate';
