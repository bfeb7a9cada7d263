import { z } from 'zod';
import { ValidationError } from '../errors';
import { type Nanos, parseScaled, parseSparks, USD_DECIMALS } from '../money';
import defaultCardJson from '../../ratecards/default.json';

export const CHARGE_TYPES = [
  'Inference',
  'ObjectGenerator',
  'ObjectTransformer',
  'Zipper',
  'Training',
  'PrivateFlowRun',
  'FreePublicFlowRun',
  'PaidPublicFlowRun',
] as const;
export type ChargeType = (typeof CHARGE_TYPES)[number];
export const RESOURCES = ['tokens', 'compute', 'storage'] as const;
export type Resource = (typeof RESOURCES)[number];

export function isChargeType(s: string): s is ChargeType {
  return (CHARGE_TYPES as readonly string[]).includes(s);
}

const decimal = (what: string) =>
  z.string().regex(/^\d+(\.\d{1,9})?$/, `${what} must be a non-negative decimal string with at most 9 decimals, e.g. "0.02"`);
const sparksDecimal = z.string().regex(/^\d+(\.\d{1,6})?$/, 'sparks must be a non-negative decimal string with at most 6 decimals');

/** A linear price: `usd` (or `sparks`) per `per` units, plus an optional fixed fee per charge. */
const rateSchema = z
  .object({
    unit: z.string().min(1).max(40),
    per: z.number().int().positive().max(1_000_000_000).default(1),
    usd: decimal('usd').optional(),
    sparks: sparksDecimal.optional(),
    fixedUsd: decimal('fixedUsd').default('0'),
  })
  .strict()
  .refine((r) => (r.usd === undefined) !== (r.sparks === undefined), {
    message: 'give exactly one of "usd" or "sparks"',
  });

const modelPriceSchema = z
  .object({
    inputUsdPer1k: decimal('inputUsdPer1k'),
    outputUsdPer1k: decimal('outputUsdPer1k'),
  })
  .strict();

export const rateCardSchema = z
  .object({
    version: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9._-]+$/, 'version may contain letters, digits, ".", "_" and "-" only'),
    currency: z.literal('USD'),
    description: z.string().max(500).optional(),
    chargeTypes: z.object(Object.fromEntries(CHARGE_TYPES.map((c) => [c, rateSchema])) as Record<ChargeType, typeof rateSchema>).strict(),
    resources: z.object({ tokens: rateSchema, compute: rateSchema, storage: rateSchema }).strict(),
    models: z.record(z.string().min(1).max(200), modelPriceSchema).default({}),
  })
  .strict();

export type RateCardDocument = z.input<typeof rateCardSchema>;

/** A rate in exact form: `nanos` per `per` units, plus `fixed` nanos per charge. */
export interface Rate {
  readonly unit: string;
  readonly nanos: Nanos;
  readonly per: bigint;
  readonly fixed: Nanos;
}

export interface ModelPrice {
  /** Key matched in the card ("*" when the fallback applied). */
  readonly model: string;
  readonly input: Rate;
  readonly output: Rate;
}

export interface RateCard {
  readonly version: string;
  readonly description?: string;
  readonly chargeTypes: Readonly<Record<ChargeType, Rate>>;
  readonly resources: Readonly<Record<Resource, Rate>>;
  readonly models: ReadonlyMap<string, ModelPrice>;
  /** The validated document, as stored in the ledger. */
  readonly document: z.output<typeof rateCardSchema>;
}

function toRate(r: z.output<typeof rateSchema>): Rate {
  const nanos = r.usd !== undefined ? parseScaled(r.usd, { scale: USD_DECIMALS }) : parseSparks(r.sparks!);
  return { unit: r.unit, nanos, per: BigInt(r.per), fixed: parseScaled(r.fixedUsd, { scale: USD_DECIMALS }) };
}

/** Validates a rate card document (JSON text or object); errors name every bad field. */
export function parseRateCard(input: unknown): RateCard {
  let doc = input;
  if (typeof input === 'string') {
    try {
      doc = JSON.parse(input);
    } catch (e) {
      throw new ValidationError(`Invalid rate card: not JSON (${(e as Error).message})`);
    }
  }
  const parsed = rateCardSchema.safeParse(doc);
  if (!parsed.success) throw ValidationError.fromZod('rate card', parsed.error);
  const d = parsed.data;
  const models = new Map<string, ModelPrice>();
  for (const [model, p] of Object.entries(d.models)) {
    models.set(model, {
      model,
      input: { unit: 'token', nanos: parseScaled(p.inputUsdPer1k, { scale: USD_DECIMALS }), per: 1000n, fixed: 0n },
      output: { unit: 'token', nanos: parseScaled(p.outputUsdPer1k, { scale: USD_DECIMALS }), per: 1000n, fixed: 0n },
    });
  }
  return {
    version: d.version,
    description: d.description,
    chargeTypes: Object.fromEntries(CHARGE_TYPES.map((c) => [c, toRate(d.chargeTypes[c])])) as Record<ChargeType, Rate>,
    resources: { tokens: toRate(d.resources.tokens), compute: toRate(d.resources.compute), storage: toRate(d.resources.storage) },
    models,
    document: d,
  };
}

let defaultCard: RateCard | undefined;
/** The rate card that ships with the package. */
export function defaultRateCard(): RateCard {
  defaultCard ??= parseRateCard(defaultCardJson);
  return defaultCard;
}
