import { z } from 'zod';
import { ValidationError } from '../errors';
import { parseQuantity, parseUsd } from '../money';
import type { Ledger } from '../ledger/types';
import { CHARGE_TYPES, type RateCard } from '../pricing/ratecard';
import { customerIdSchema, decimalSchema, NO_CONTROL_CHARACTERS, parsedBy } from '../schemas';
import type { AdmissionGate } from '../quota/gate';
import { langfuseCredentialsSchema, sealLangfuseCredentials } from '../langfuse/reporter';

const isFn = (v: unknown, ...names: string[]) =>
  typeof v === 'object' && v !== null && names.every((n) => typeof (v as Record<string, unknown>)[n] === 'function');

const id = (what: string, max: number) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .max(max, `${what} must be at most ${max} characters`)
    .regex(NO_CONTROL_CHARACTERS, `${what} must not contain control characters`);

/**
 * A USD string the ledger can hold: parsed here with the same limit as at the run, so an amount over it
 * is refused when the handler is built instead of by the first run (as a VALIDATION_ERROR out of invoke()).
 */
const usd = (what: string, example?: string) => decimalSchema(what, example).superRefine(parsedBy((v: string) => parseUsd(v, { field: what })));

// Checked with the pricing's own parser (a number must be a safe integer), which would otherwise refuse it when the tool runs.
const quantity = z.union([z.number().int().nonnegative(), decimalSchema('quantity', '1.5')]).superRefine(parsedBy((v: string | number) => parseQuantity(v)));

const toolPriceSchema = z.object({ chargeType: z.enum(CHARGE_TYPES), quantity: quantity.default(1) }).strict();

const runFeeSchema = z.union([
  z.literal('PrivateFlowRun'),
  z.literal('FreePublicFlowRun'),
  z.object({ type: z.literal('PaidPublicFlowRun'), priceUsd: usd('priceUsd') }).strict(),
  z.literal(false),
]);

export const billingHandlerOptionsSchema = z
  .object({
    ledger: z.custom<Ledger>((v) => isFn(v, 'hold', 'settle', 'release', 'charge', 'activeRateCard'), 'ledger must implement the Ledger interface'),
    // The ledger's own rule: an id no customer can have would only surface at the run, as CUSTOMER_NOT_FOUND.
    customerId: customerIdSchema,
    conversationId: id('conversationId', 200),
    gate: z.custom<AdmissionGate>((v) => isFn(v, 'admitRun'), 'gate must have admitRun()').optional(),
    rateCard: z.custom<RateCard>((v) => typeof v === 'object' && v !== null && typeof (v as RateCard).version === 'string' && (v as RateCard).models instanceof Map, 'rateCard must be a parsed RateCard (parseRateCard)').optional(),
    /** The per-run fee: a ChargeType, a paid public run with its price, or false for none. */
    runFee: runFeeSchema.default('PrivateFlowRun'),
    /** Output tokens held for a call that sets no max_tokens. */
    maxOutputTokensCap: z.number().int().positive().max(10_000_000).default(4096),
    /** Tool name → what one call costs; the key "*" prices every tool not listed. Unlisted tools are free. */
    tools: z.record(z.string().min(1).max(200), toolPriceSchema).default({}),
    /** Root-run wall time at the compute rate; `reserveMs` is held at the start and settled at the end. */
    computeTime: z.union([z.boolean(), z.object({ reserveMs: z.number().int().nonnegative().max(24 * 3600_000) }).strict()]).default(true),
    /**
     * A retry-stable key for the run's own movements (reservation, fee, compute), e.g. a queue job id or
     * flowRunKey() of a Flowise prediction: a re-run of the same job reuses them instead of paying twice.
     */
    runKey: id('runKey', 200).optional(),
    /** Operator's budget for the run's steps (USD decimal), reserved with the fee at admission; default: the first step's maximum. */
    runBudgetUsd: usd('runBudgetUsd', '0.50').optional(),
    /**
     * A run refused for funds while other runs of the same customer are in flight in this process waits up to
     * this long for them to return money (their unused reservations) and tries again; 0 refuses at once.
     */
    fundsWaitMs: z.number().int().min(0).max(600_000).default(30_000),
    /** The model runs on the customer's own provider key (required by plans without managed models). Never the key itself. */
    usesCustomerKey: z.boolean().default(false),
    /** External message id (e.g. Flowise apiMessageId), part of every idempotency key. */
    messageId: id('messageId', 100).optional(),
    // Text below reaches ledger rows, audit lines and Langfuse metadata: id() refuses control characters (they forge lines).
    actor: id('actor', 100).default('handler'),
    costCenter: id('costCenter', 200).optional(),
    usageCategory: id('usageCategory', 200).optional(),
    /** Plan tier shown in metadata when no gate reports one. */
    planTier: id('planTier', 100).optional(),
    /**
     * Lifetime of each hold (the ledger's default, 15 minutes, when absent). A call that settles after its hold
     * expired goes unpaid (the ledger refuses the settle), so a lifetime shorter than a minute is refused.
     */
    holdTtlMs: z.number().int().min(60_000, 'holdTtlMs must be at least 60000 (1 minute): a call that ends after its hold expired goes unpaid').max(7 * 24 * 3600_000).optional(),
    // Sealed: `handler.options` is public, and logging it printed the secret key.
    langfuse: langfuseCredentialsSchema.transform(sealLangfuseCredentials).optional(),
    /** Called when settling/releasing after a step fails (the run itself is never failed by that). */
    onError: z.function().args(z.unknown(), z.record(z.unknown())).returns(z.unknown()).optional(),
  })
  .strict();

export type BillingHandlerOptions = z.input<typeof billingHandlerOptionsSchema>;
export type ResolvedBillingOptions = z.output<typeof billingHandlerOptionsSchema>;

export function parseBillingHandlerOptions(input: unknown): ResolvedBillingOptions {
  const r = billingHandlerOptionsSchema.safeParse(input);
  if (!r.success) throw ValidationError.fromZod('BillingCallbackHandler options', r.error);
  return r.data;
}

/** Compute reserve held at the start of a root run when `computeTime` is `true`: 10 s ($0.00833 at 50 Sparks/min). A longer run settles above it from what is available. */
export const DEFAULT_COMPUTE_RESERVE_MS = 10_000;
