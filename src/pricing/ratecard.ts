import fs from 'node:fs';
import { z } from 'zod';
import { ValidationError } from '../errors';
import { type Nanos, parseScaled, parseSparks, USD_DECIMALS } from '../money';
import { decimalSchema } from '../schemas';
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

/**
 * Limits on a rate card. A card is read on every charge's price lookup and
 * stored in the ledger, so an oversized one would slow every charge; these are
 * far above any real price list.
 */
export const MAX_RATE_CARD_BYTES = 1_048_576;
export const MAX_RATE_CARD_MODELS = 5_000;

const decimal = (what: string) => decimalSchema(what, '0.02');
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

// Cache prices are optional and stay absent in the stored document (no zod default): a card written before
// they existed keeps its exact JSON, so re-importing its version is not "different prices".
const modelPriceSchema = z
  .object({
    inputUsdPer1k: decimal('inputUsdPer1k'),
    outputUsdPer1k: decimal('outputUsdPer1k'),
    /** Input tokens read from the provider's prompt cache; absent: the input price. */
    cachedInputUsdPer1k: decimal('cachedInputUsdPer1k').optional(),
    /** Input tokens written to the provider's prompt cache (Anthropic); absent: the input price. */
    cacheWriteUsdPer1k: decimal('cacheWriteUsdPer1k').optional(),
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
    models: z
      .record(z.string().min(1).max(200), modelPriceSchema)
      .refine((m) => Object.keys(m).length <= MAX_RATE_CARD_MODELS, { message: `at most ${MAX_RATE_CARD_MODELS} models per rate card` })
      .default({}),
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
  /** Cache reads and writes: the card's `cachedInputUsdPer1k` / `cacheWriteUsdPer1k`, else the input rate. */
  readonly cacheRead: Rate;
  readonly cacheWrite: Rate;
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
    if (Buffer.byteLength(input) > MAX_RATE_CARD_BYTES) {
      throw new ValidationError(`Invalid rate card: larger than the ${MAX_RATE_CARD_BYTES}-byte limit`, { field: 'document', limitBytes: MAX_RATE_CARD_BYTES });
    }
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
  const per1k = (usd: string): Rate => ({ unit: 'token', nanos: parseScaled(usd, { scale: USD_DECIMALS }), per: 1000n, fixed: 0n });
  for (const [model, p] of Object.entries(d.models)) {
    const input = per1k(p.inputUsdPer1k);
    models.set(model, {
      model,
      input,
      output: per1k(p.outputUsdPer1k),
      cacheRead: p.cachedInputUsdPer1k === undefined ? input : per1k(p.cachedInputUsdPer1k),
      cacheWrite: p.cacheWriteUsdPer1k === undefined ? input : per1k(p.cacheWriteUsdPer1k),
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

/**
 * Reads a rate card file, refusing anything that is not a regular file (a
 * FIFO or /dev/zero would never end) or is over the size limit, before
 * reading it.
 */
export function readRateCardFile(file: string): RateCard {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw new ValidationError(`Cannot read rate card file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new ValidationError(`Rate card ${file} is not a regular file`, { file });
    if (st.size > MAX_RATE_CARD_BYTES) {
      throw new ValidationError(`Rate card ${file} is ${st.size} bytes, over the ${MAX_RATE_CARD_BYTES}-byte limit`, { file, limitBytes: MAX_RATE_CARD_BYTES });
    }
    // Read one byte past the limit, so a file that grew after fstat is still refused.
    const buf = Buffer.alloc(MAX_RATE_CARD_BYTES + 1);
    let n = 0;
    for (let r: number; n < buf.length && (r = fs.readSync(fd, buf, n, buf.length - n, null)) > 0; ) n += r;
    if (n > MAX_RATE_CARD_BYTES) {
      throw new ValidationError(`Rate card ${file} is over the ${MAX_RATE_CARD_BYTES}-byte limit`, { file, limitBytes: MAX_RATE_CARD_BYTES });
    }
    return parseRateCard(buf.subarray(0, n).toString('utf8'));
  } finally {
    fs.closeSync(fd);
  }
}

let defaultCard: RateCard | undefined;
/** The rate card that ships with the package. */
export function defaultRateCard(): RateCard {
  defaultCard ??= parseRateCard(defaultCardJson);
  return defaultCard;
}
