import { ValidationError } from './errors';

/**
 * Money is a bigint count of nano-USD (1e-9 USD). That unit holds the smallest
 * listed price exactly (a token at $0.000025 is 25,000 nanos) and a signed
 * 64-bit column still holds ±$9.2 billion. There is no floating point anywhere
 * money is computed.
 *
 * Rounding rule (the only one): a price is computed as an exact fraction and
 * rounded once per charge to the nearest nano-USD, halves away from zero.
 */
export type Nanos = bigint;

export const NANOS_PER_USD = 1_000_000_000n;
export const NANOS_PER_SPARK = 1_000_000n; // 1 Spark = $0.001
export const USD_DECIMALS = 9;
/** Largest amount a single operation accepts: $1,000,000,000. */
export const MAX_AMOUNT: Nanos = 1_000_000_000n * NANOS_PER_USD;

const DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

export interface ParseDecimalOptions {
  /** Maximum digits after the point. */
  scale: number;
  allowNegative?: boolean;
  /** Name used in error messages, e.g. "amount" or "quantity". */
  field?: string;
}

/**
 * Parses a plain decimal string into an integer scaled by 10^scale.
 * Rejects what a careless parser would let through: NaN, Infinity, exponents,
 * hex, blanks, signs where not allowed, and more decimals than the unit holds
 * (which would otherwise be silently rounded).
 */
export function parseScaled(input: string, opts: ParseDecimalOptions): bigint {
  const field = opts.field ?? 'amount';
  if (typeof input !== 'string') {
    throw new ValidationError(`${field} must be a decimal string, got ${typeof input}`, { field, value: String(input) });
  }
  const m = DECIMAL.exec(input);
  if (!m) {
    throw new ValidationError(`${field} "${input}" is not a plain decimal number (digits, one optional point; no exponent, sign rules apply)`, {
      field,
      value: input,
    });
  }
  const [, minus, whole, frac = ''] = m;
  if (minus && !opts.allowNegative) {
    throw new ValidationError(`${field} must not be negative, got "${input}"`, { field, value: input });
  }
  if (frac.length > opts.scale) {
    throw new ValidationError(`${field} "${input}" has ${frac.length} decimals; at most ${opts.scale} are allowed`, {
      field,
      value: input,
      maxDecimals: opts.scale,
    });
  }
  const scaled = BigInt(whole! + frac.padEnd(opts.scale, '0'));
  return minus ? -scaled : scaled;
}

// 10^0 … 10^18, built once: every amount in an audit line and an error is formatted.
const POWERS_OF_TEN: readonly bigint[] = Array.from({ length: 19 }, (_, i) => 10n ** BigInt(i));

/** Formats an integer scaled by 10^scale as a decimal string with at least `minDecimals` decimals. */
export function formatScaled(value: bigint, scale: number, minDecimals = 0): string {
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const base = POWERS_OF_TEN[scale] ?? 10n ** BigInt(scale);
  const whole = abs / base;
  const rest = abs % base;
  let frac = rest === 0n ? '' : withoutTrailingZeros(rest.toString().padStart(scale, '0'));
  if (frac.length < minDecimals) frac = frac.padEnd(minDecimals, '0');
  return `${negative ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}

function withoutTrailingZeros(digits: string): string {
  let end = digits.length;
  while (end > 0 && digits.charCodeAt(end - 1) === 48) end--;
  return end === digits.length ? digits : digits.slice(0, end);
}

/** "12.5" → 12_500_000_000n. Accepts an optional leading "$". */
export function parseUsd(input: string, opts: { allowNegative?: boolean; field?: string } = {}): Nanos {
  const s = typeof input === 'string' && input.startsWith('$') ? input.slice(1) : input;
  const n = parseScaled(s, { scale: USD_DECIMALS, allowNegative: opts.allowNegative, field: opts.field ?? 'amount (USD)' });
  if (n > MAX_AMOUNT || n < -MAX_AMOUNT) {
    throw new ValidationError(`${opts.field ?? 'amount (USD)'} "${input}" exceeds the limit of $${formatUsd(MAX_AMOUNT)}`, {
      field: opts.field ?? 'amount',
      value: input,
    });
  }
  return n;
}

/** 80_000_000n → "0.08"; always at least two decimals, never trailing zeros beyond them. */
export function formatUsd(nanos: Nanos): string {
  return formatScaled(nanos, USD_DECIMALS, 2);
}

export function parseSparks(input: string, opts: { field?: string } = {}): Nanos {
  // A Spark is 1e6 nanos, so at most 6 decimals stay exact.
  return parseScaled(input, { scale: 6, field: opts.field ?? 'amount (Sparks)' });
}

export function formatSparks(nanos: Nanos): string {
  return formatScaled(nanos, 6);
}

export type RoundingMode = 'half-up' | 'up' | 'down';

/** Divides exactly and rounds once. `half-up` rounds halves away from zero. */
export function divRound(numerator: bigint, denominator: bigint, mode: RoundingMode = 'half-up'): bigint {
  if (denominator === 0n) throw new RangeError('division by zero');
  if (denominator < 0n) {
    numerator = -numerator;
    denominator = -denominator;
  }
  const negative = numerator < 0n;
  const abs = negative ? -numerator : numerator;
  let q = abs / denominator;
  const r = abs % denominator;
  if (r !== 0n) {
    if (mode === 'up' || (mode === 'half-up' && 2n * r >= denominator)) q += 1n;
  }
  return negative ? -q : q;
}

/** Exact non-negative quantity: `units / 10^scale`, parsed from a decimal string (up to 9 decimals). */
export interface Quantity {
  readonly units: bigint;
  readonly scale: number;
}

export const QUANTITY_DECIMALS = 9;

export function parseQuantity(input: string | number | bigint, field = 'quantity'): Quantity {
  if (typeof input === 'bigint') {
    if (input < 0n) throw new ValidationError(`${field} must not be negative`, { field, value: input.toString() });
    return { units: input, scale: 0 };
  }
  if (typeof input === 'number') {
    // Integers (token counts, milliseconds) are exact; fractions must come as strings.
    if (!Number.isSafeInteger(input)) {
      throw new ValidationError(`${field} must be a non-negative integer or a decimal string, got ${input}`, { field, value: String(input) });
    }
    input = String(input);
  }
  const raw = parseScaled(input, { scale: QUANTITY_DECIMALS, field });
  // Keep the shortest exact scale so stored quantities read naturally.
  let units = raw;
  let scale = QUANTITY_DECIMALS;
  while (scale > 0 && units % 10n === 0n) {
    units /= 10n;
    scale -= 1;
  }
  return { units, scale };
}

export function formatQuantity(q: Quantity): string {
  return formatScaled(q.units, q.scale);
}
