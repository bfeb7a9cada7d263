import { BillingError, ValidationError } from '../errors';
import { divRound, formatQuantity, type Nanos, NANOS_PER_USD, parseQuantity, type Quantity } from '../money';
import { type ChargeType, type ModelPrice, type Rate, type RateCard, type Resource, isChargeType } from './ratecard';

export interface PriceQuote {
  readonly amount: Nanos;
  readonly rateCardVersion: string;
  /** What was priced: a ChargeType, a resource, or `tokens:<model>`. */
  readonly item: string;
  readonly quantity: string;
  readonly unit: string;
}

/**
 * Refuses a quote of $0 for an external charge (the API's and the CLI's): a quantity of 0, or one too small to
 * cost a nano-USD, is a client's mistake, not usage. Metering's own zero settles never come through here.
 */
export function refuseFreeCharge(q: Pick<PriceQuote, 'amount' | 'item' | 'quantity' | 'rateCardVersion'>): void {
  if (q.amount !== 0n) return;
  throw new ValidationError(`${q.item} × ${q.quantity} costs $0 at rate card ${q.rateCardVersion}: a charge must be greater than zero`, {
    field: 'quantity',
    rateCardVersion: q.rateCardVersion,
  });
}

/**
 * rate × num/den + fixed, as one exact fraction rounded once (half-up).
 * `num/den` is the quantity in the rate's unit.
 */
export function priceFraction(rate: Rate, num: bigint, den: bigint): Nanos {
  if (num < 0n || den <= 0n) throw new ValidationError('quantity must not be negative', { quantity: `${num}/${den}` });
  const d = rate.per * den;
  return divRound(rate.nanos * num + rate.fixed * d, d);
}

export function priceRate(rate: Rate, q: Quantity): Nanos {
  return priceFraction(rate, q.units, 10n ** BigInt(q.scale));
}

export function priceChargeType(card: RateCard, chargeType: ChargeType, quantity: string | number | bigint): PriceQuote {
  if (!isChargeType(chargeType)) {
    throw new ValidationError(`Unknown ChargeType "${chargeType}"`, { field: 'chargeType', value: chargeType });
  }
  const q = parseQuantity(quantity);
  const rate = card.chargeTypes[chargeType];
  return { amount: priceRate(rate, q), rateCardVersion: card.version, item: chargeType, quantity: formatQuantity(q), unit: rate.unit };
}

export function priceResource(card: RateCard, resource: Resource, quantity: string | number | bigint): PriceQuote {
  const q = parseQuantity(quantity);
  const rate = card.resources[resource];
  return { amount: priceRate(rate, q), rateCardVersion: card.version, item: resource, quantity: formatQuantity(q), unit: rate.unit };
}

const MS_PER_MINUTE = 60_000n;

/** Compute time at millisecond precision; the card's compute rate is per minute. */
export function priceComputeMs(card: RateCard, ms: number | bigint): PriceQuote {
  const msInt = typeof ms === 'bigint' ? ms : BigInt(Math.max(0, Math.round(ms)));
  const rate = card.resources.compute;
  return {
    amount: priceFraction(rate, msInt, MS_PER_MINUTE),
    rateCardVersion: card.version,
    item: 'compute',
    quantity: `${msInt}`,
    unit: 'ms',
  };
}

/**
 * The card's price for a model: exact name, else the longest listed prefix
 * (providers report dated names such as "gpt-4o-mini-2024-07-18"), else "*".
 */
export function modelPrice(card: RateCard, model: string | undefined): ModelPrice {
  const name = (model ?? '').trim();
  const exact = card.models.get(name);
  if (exact) return exact;
  let best: ModelPrice | undefined;
  for (const [key, price] of card.models) {
    if (key !== '*' && name.startsWith(key) && (!best || key.length > best.model.length)) best = price;
  }
  best ??= card.models.get('*');
  if (!best) {
    throw new BillingError('UNKNOWN_MODEL', `Rate card ${card.version} has no price for model "${name}" and no "*" fallback`, {
      model: name,
      rateCardVersion: card.version,
    });
  }
  return best;
}

/**
 * Input tokens the provider served from its prompt cache (`cacheReadTokens`) or wrote to it
 * (`cacheWriteTokens`, Anthropic). Both are parts of `inputTokens`, not added to it.
 */
export interface TokenCacheParts {
  readonly cacheReadTokens?: number;
  readonly cacheWriteTokens?: number;
}

export interface TokenQuote extends PriceQuote {
  readonly model: string;
  /** All input tokens, cached parts included. */
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cacheReadTokens: number;
  readonly cacheWriteTokens: number;
  /**
   * Each part alone, rounded; `amount` is the exact sum rounded once, so these may differ from it by a nano.
   * `inputAmount` is the uncached input (inputTokens − cacheReadTokens − cacheWriteTokens) at the input price.
   */
  readonly inputAmount: Nanos;
  readonly cacheReadAmount: Nanos;
  readonly cacheWriteAmount: Nanos;
  readonly outputAmount: Nanos;
}

type TokenField = 'inputTokens' | 'outputTokens' | 'cacheReadTokens' | 'cacheWriteTokens';

/** A token count is a non-negative safe integer. */
function checkTokenCount(field: TokenField, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new ValidationError(`${field} must be a non-negative integer, got ${v}`, { field, value: v });
}

const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? a : gcd(b, a % b));
const lcm = (a: bigint, b: bigint): bigint => (a / gcd(a, b)) * b;

/**
 * Tokens at the model's prices: uncached input, cache reads and cache writes (parts of the input, each at
 * its own price; a card without cache prices charges them as input) and output, rounded once for the call.
 */
export function priceTokens(card: RateCard, model: string | undefined, inputTokens: number, outputTokens: number, cache: TokenCacheParts = {}): TokenQuote {
  const { cacheReadTokens = 0, cacheWriteTokens = 0 } = cache;
  checkTokenCount('inputTokens', inputTokens);
  checkTokenCount('outputTokens', outputTokens);
  checkTokenCount('cacheReadTokens', cacheReadTokens);
  checkTokenCount('cacheWriteTokens', cacheWriteTokens);
  if (cacheReadTokens + cacheWriteTokens > inputTokens) {
    throw new ValidationError(`cached input tokens (${cacheReadTokens} read + ${cacheWriteTokens} written) exceed inputTokens (${inputTokens})`, {
      field: 'cacheReadTokens',
      inputTokens,
      cacheReadTokens,
      cacheWriteTokens,
    });
  }
  const p = modelPrice(card, model);
  const inT = BigInt(inputTokens - cacheReadTokens - cacheWriteTokens);
  const outT = BigInt(outputTokens);
  // One exact fraction over a common denominator of the rates' `per`, rounded once. Written out, not as a
  // list of parts: this runs twice for every metered call (its hold and its settle).
  let amount: Nanos;
  let cacheReadAmount = 0n;
  let cacheWriteAmount = 0n;
  if (cacheReadTokens === 0 && cacheWriteTokens === 0) {
    amount = divRound(p.input.nanos * inT * p.output.per + p.output.nanos * outT * p.input.per, p.input.per * p.output.per);
  } else {
    const readT = BigInt(cacheReadTokens);
    const writeT = BigInt(cacheWriteTokens);
    const den = lcm(lcm(p.input.per, p.output.per), lcm(p.cacheRead.per, p.cacheWrite.per));
    amount = divRound(
      p.input.nanos * inT * (den / p.input.per) + p.cacheRead.nanos * readT * (den / p.cacheRead.per) + p.cacheWrite.nanos * writeT * (den / p.cacheWrite.per) + p.output.nanos * outT * (den / p.output.per),
      den,
    );
    cacheReadAmount = priceFraction(p.cacheRead, readT, 1n);
    cacheWriteAmount = priceFraction(p.cacheWrite, writeT, 1n);
  }
  const inputAmount = priceFraction(p.input, inT, 1n);
  const outputAmount = priceFraction(p.output, outT, 1n);
  return {
    amount,
    rateCardVersion: card.version,
    item: `tokens:${p.model}`,
    model: p.model,
    quantity: `${inputTokens + outputTokens}`,
    unit: 'token',
    inputTokens,
    outputTokens,
    cacheReadTokens,
    cacheWriteTokens,
    inputAmount,
    cacheReadAmount,
    cacheWriteAmount,
    outputAmount,
  };
}

const NO_CACHE: Readonly<Record<string, never>> = Object.freeze({});

/** A token charge's cache counts for its stored metadata: only those there were, so other charges' metadata is unchanged. */
export function cacheMetadata(q: Pick<TokenQuote, 'cacheReadTokens' | 'cacheWriteTokens'>): { cacheReadTokens?: number; cacheWriteTokens?: number } {
  if (!q.cacheReadTokens && !q.cacheWriteTokens) return NO_CACHE;
  const out: { cacheReadTokens?: number; cacheWriteTokens?: number } = {};
  if (q.cacheReadTokens) out.cacheReadTokens = q.cacheReadTokens;
  if (q.cacheWriteTokens) out.cacheWriteTokens = q.cacheWriteTokens;
  return out;
}

export interface PaidPublicFlowSplit {
  readonly price: Nanos;
  readonly fee: Nanos;
  readonly creatorNet: Nanos;
  readonly rateCardVersion: string;
}

/** A paid public run: the platform keeps the PaidPublicFlowRun fee; the creator nets the rest (never below zero). */
export function paidPublicFlowSplit(card: RateCard, price: Nanos): PaidPublicFlowSplit {
  if (price < 0n) throw new ValidationError('price must not be negative', { field: 'price' });
  const fee = priceFraction(card.chargeTypes.PaidPublicFlowRun, price, NANOS_PER_USD);
  const creatorNet = price > fee ? price - fee : 0n;
  return { price, fee, creatorNet, rateCardVersion: card.version };
}
