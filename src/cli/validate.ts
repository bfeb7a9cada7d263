import { z } from 'zod';
import { ValidationError } from '../errors';
import { type Nanos, parseQuantity, parseUsd, type Quantity } from '../money';
import { calendarDay } from '../period';
import { CHARGE_TYPES, type ChargeType, RESOURCES, type Resource } from '../pricing/ratecard';
import { customerIdSchema, idempotencyKeySchema, parsedBy } from '../schemas';

/**
 * The CLI's input boundary: every argument and option is checked here, before
 * the ledger is opened, so bad input gets a clear VALIDATION_ERROR and changes
 * nothing. Exact parsers (parseUsd, parseQuantity) do the numeric work; zod
 * carries the field names and collects every problem at once.
 */

/** Same rule as the ledger's, checked early so the message names the argument. */
export const customerId = customerIdSchema;

/** Same rule as the ledger's. */
export const idempotencyKey = idempotencyKeySchema;

export const rateCardVersion = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9._-]+$/, 'rate card version may contain letters, digits, ".", "_" and "-" only');

export const entityId = (what: string) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .max(100, `${what} must be at most 100 characters`)
    .regex(/^[A-Za-z0-9_-]+$/, `${what} looks like "chg_…": letters, digits, "_" and "-" only`);

export const text = (what: string, max: number) => z.string().min(1, `${what} must not be empty`).max(max, `${what} must be at most ${max} characters`);

/** A USD amount: plain decimal, at most 9 decimals, optional "$"; never an exponent, NaN or a sign. */
export const usdAmount = (field: string, opts: { positive?: boolean } = {}) =>
  z.string().transform(parsedBy((s): Nanos => {
    const n = parseUsd(s, { field });
    if (opts.positive && n <= 0n) throw new ValidationError(`${field} must be greater than zero, got "${s}"`);
    return n;
  }));

/** An exact non-negative quantity (up to 9 decimals). */
export const quantity = (field = 'quantity') =>
  z.string().transform(parsedBy((s): Quantity => {
    if (s.length > 40) throw new ValidationError(`${field} is too long`);
    return parseQuantity(s, field);
  }));

/** A whole number in [min, max], digits only ("1e3", "0x10", "5.0" are refused). */
export const integer = (field: string, min: number, max: number) =>
  z.string().transform(parsedBy((s): number => {
    if (!/^\d+$/.test(s)) throw new ValidationError(`${field} must be a whole number (digits only), got "${s}"`);
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new ValidationError(`${field} must be between ${min} and ${max}, got "${s}"`);
    return n;
  }));

function suggestion(input: string, valid: readonly string[]): string {
  const lower = input.toLowerCase();
  const hit = valid.find((v) => v.toLowerCase() === lower) ?? valid.find((v) => lower.length >= 3 && v.toLowerCase().startsWith(lower));
  return hit ? ` Did you mean "${hit}"?` : '';
}

function oneOf<T extends string>(what: string, valid: readonly T[]) {
  return z.string().transform((s, ctx): T => {
    if ((valid as readonly string[]).includes(s)) return s as T;
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `unknown ${what} "${s}".${suggestion(s, valid)} Valid ${what}s: ${valid.join(', ')}`,
      params: { valid },
    });
    return z.NEVER;
  });
}

export const chargeType = oneOf<ChargeType>('ChargeType', CHARGE_TYPES);

export type PriceItem = ChargeType | Resource;
const PRICE_ITEMS: readonly PriceItem[] = [...CHARGE_TYPES, ...RESOURCES];
export const priceItem = oneOf<PriceItem>('item', PRICE_ITEMS);

/** Whether the YYYY-MM-DD a time starts with is a day of the calendar (not 2026-02-30, which Date.parse reads as March 2). */
function realDay(s: string): boolean {
  const d = /^(\d{4})-(\d{2})-(\d{2})/.exec(s);
  return d !== null && calendarDay(+d[1]!, +d[2]!, +d[3]!) !== null;
}

/** Billing periods are computed with Date.UTC, which reads the years 0–99 as 1900–1999: earlier dates are refused, not moved. */
function beforeEpoch(field: string, s: string, t: number): void {
  if (t < 0) throw new ValidationError(`${field} must be 1970-01-01 or later, got "${s}"`);
}

/** The ISO-8601 forms taken: a day, or a day and time with an optional zone. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/;

/** An ISO-8601 time such as 2026-11-23T10:00:00Z. */
export const isoTime = (field: string) =>
  z.string().transform(parsedBy((s): Date => {
    const t = Date.parse(s);
    if (!ISO_TIME.test(s) || Number.isNaN(t) || !realDay(s)) {
      throw new ValidationError(`${field} must be an ISO time such as 2026-11-23T10:00:00Z, got "${s}"`);
    }
    beforeEpoch(field, s, t);
    return new Date(t);
  }));

/**
 * `--period` of reports: the same spellings as `stripe reconcile --period`
 * (YYYY-MM, YYYY-MM-DD) plus an ISO time; the report covers the billing period
 * containing that instant (YYYY-MM: its first day, 00:00 UTC).
 */
export const periodAt = (field: string) =>
  z.string().transform(parsedBy((s): Date => {
    const month = /^(\d{4})-(\d{2})$/.exec(s);
    const t = month ? calendarDay(+month[1]!, +month[2]!, 1) ?? NaN : Date.parse(s);
    if (Number.isNaN(t) || (!month && (!ISO_TIME.test(s) || !realDay(s)))) {
      throw new ValidationError(`${field} must be YYYY-MM, YYYY-MM-DD or an ISO time such as 2026-11-23T10:00:00Z, got "${s}"`);
    }
    beforeEpoch(field, s, t);
    return new Date(t);
  }));

/** Where the CLI keeps its ledger: present and bounded here; what it may be (schemes, URL, schema) is ledgerTarget's rule. */
export const dbTarget = z.string().min(1, 'database location (--db / FLOWISE_BILLING_DB) must not be empty').max(4096);

/**
 * Parses an object of raw CLI strings; every problem is named in one VALIDATION_ERROR:
 * `Invalid input: amount "-5" must not be negative…` with details.issues[{path, message}].
 */
export function parseInput<S extends z.ZodTypeAny>(schema: S, raw: Record<string, unknown>): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data as z.output<S>;
  const issues = r.error.issues.map((i) => {
    const path = i.path.join('.') || '(input)';
    const value = i.path.length ? raw[String(i.path[0])] : undefined;
    return {
      path,
      message: i.message,
      ...(typeof value === 'string' ? { value } : {}),
      ...(i.code === z.ZodIssueCode.custom && i.params ? i.params : {}),
    };
  });
  const summary = issues.map((i) => (i.message.toLowerCase().startsWith(i.path.toLowerCase()) ? i.message : `${i.path}: ${i.message}`)).join('; ');
  throw new ValidationError(`Invalid input: ${summary}`, { issues });
}
