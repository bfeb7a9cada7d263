import { types } from 'node:util';
import { z } from 'zod';
import { ValidationError } from '../errors';
import { formatUsd, MAX_AMOUNT } from '../money';
import { customerIdSchema, customerNameSchema, idempotencyKeySchema, NO_CONTROL_CHARACTERS } from '../schemas';
import type { PricedFields } from './batch';

/**
 * What the ledger accepts from callers: one schema per operation, checked
 * before anything reaches a batch, so bad input is a VALIDATION_ERROR that
 * names the field and changes nothing (never a database error).
 */

const customerId = customerIdSchema;
const key = idempotencyKeySchema;
const entityId = z.string().min(1).max(100);
const amount = (min: bigint) =>
  z
    .bigint({ invalid_type_error: 'amount must be a bigint count of nano-USD' })
    .refine((v) => v >= min, { message: `amount must be at least ${min} nano-USD` })
    .refine((v) => v <= MAX_AMOUNT, { message: `amount must be at most $${formatUsd(MAX_AMOUNT)}` });
// Written into entries and audit lines the CLI prints as tables and CSV: a newline or an escape would break or forge them.
const actor = z.string().min(1).max(100).regex(NO_CONTROL_CHARACTERS, 'actor must not contain control characters').optional();
const priced = {
  chargeType: z.string().min(1).max(100).optional(),
  quantity: z.string().min(1).max(100).optional(),
  rateCardVersion: z.string().min(1).max(64).optional(),
  metadata: z
    .record(z.unknown())
    .superRefine((m, ctx) => {
      const problem = jsonProblem(m);
      if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
    })
    .optional(),
};

/** Largest metadata object a charge may carry, as JSON. */
const MAX_METADATA_BYTES = 16_384;

/** Why `m` cannot be stored as charge metadata (cycles, bigints, functions, size), or null when it can. */
export function jsonProblem(m: unknown): string | null {
  // The usual metadata (a few plain fields, on every hold and settle) is shown fine without writing its JSON.
  if (jsonBoundSafely(m) >= 0) return null;
  let text: string;
  try {
    text = JSON.stringify(m);
  } catch (e) {
    return `metadata must be plain JSON (no cycles, no bigint): ${(e as Error).message.split('\n')[0]}`;
  }
  // UTF-8 takes at most 3 bytes per UTF-16 unit: short text needs no count (counting allocated, on every hold and settle).
  if (text.length > MAX_METADATA_BYTES / 3 && Buffer.byteLength(text) > MAX_METADATA_BYTES) return `metadata must be at most ${MAX_METADATA_BYTES} bytes as JSON`;
  return null;
}

/** jsonBound from the top; a getter that throws leaves the verdict (and its message) to the stringify. */
function jsonBoundSafely(m: unknown): number {
  try {
    return jsonBound(m, 0, MAX_METADATA_BYTES);
  } catch {
    return -1;
  }
}

/**
 * What is left of `budget` (UTF-8 bytes) after an upper bound of the size of
 * JSON.stringify(v), when that call certainly succeeds; -1 when unsure. Only
 * plain objects and arrays (at most 8 deep, so no cycle), strings, numbers,
 * booleans and null are judged; a bigint, a toJSON method, a class instance or
 * a proxy is left to the stringify itself. A string unit takes at most 6 bytes
 * (an escape such as \u001f), a number at most 25.
 */
function jsonBound(v: unknown, depth: number, budget: number): number {
  switch (typeof v) {
    case 'string':
      return budget - 6 * v.length - 2;
    case 'number':
      return budget - 25;
    case 'boolean':
      return budget - 5;
    case 'undefined':
    case 'function':
    case 'symbol':
      // Left out of an object, null in an array.
      return budget - 4;
    case 'object':
      break;
    default:
      return -1;
  }
  if (v === null) return budget - 4;
  if (depth >= 8 || types.isProxy(v) || typeof (v as { toJSON?: unknown }).toJSON === 'function') return -1;
  const proto = Object.getPrototypeOf(v) as unknown;
  let left = budget - 2;
  if (Array.isArray(v)) {
    if (proto !== Array.prototype) return -1;
    for (let i = 0; i < v.length && left >= 0; i++) left = jsonBound(v[i], depth + 1, left - 1);
    return left;
  }
  if (proto !== Object.prototype && proto !== null) return -1;
  const o = v as Record<string, unknown>;
  for (const k in o) {
    if (left < 0) return -1;
    if (!Object.prototype.hasOwnProperty.call(o, k)) continue;
    left = jsonBound(o[k], depth + 1, left - 6 * k.length - 4);
  }
  return left;
}

export const schemas = {
  createCustomer: z.object({ id: customerId, name: customerNameSchema.optional(), idempotencyKey: key.optional(), actor }),
  updateCustomer: z.object({ id: customerId, name: customerNameSchema.nullable(), actor }).strict(),
  listCustomers: z.object({ limit: z.number().int().min(1).max(10_000).optional(), after: customerId.optional() }).strict(),
  topUp: z.object({ customerId, amount: amount(1n), idempotencyKey: key, actor, memo: z.string().max(500).optional() }),
  hold: z.object({ customerId, amount: amount(0n), idempotencyKey: key, actor, ttlMs: z.number().int().positive().max(7 * 24 * 3600_000).optional(), addTo: entityId.optional(), ...priced }),
  settle: z.object({ holdId: entityId, amount: amount(0n), idempotencyKey: key, actor, final: z.boolean().optional(), ...priced }),
  release: z.object({ holdId: entityId, idempotencyKey: key, actor, deferrable: z.boolean().optional() }),
  charge: z.object({ customerId, amount: amount(0n), idempotencyKey: key, actor, ...priced }),
  setBudget: z.object({ customerId, limit: amount(0n).nullable(), anchorDay: z.number().int().min(1).max(31).optional(), actor }),
  refund: z.object({ chargeId: entityId, amount: amount(1n).optional(), idempotencyKey: key, actor, reason: z.string().max(500).optional() }),
};

export function parse<T>(schema: z.ZodType<T>, what: string, input: unknown): T {
  const r = schema.safeParse(input);
  if (!r.success) throw ValidationError.fromZod(what, r.error);
  return r.data;
}

export function pricedFields(i: { chargeType?: string; quantity?: string; rateCardVersion?: string; metadata?: Record<string, unknown> }): PricedFields {
  return { chargeType: i.chargeType ?? null, quantity: i.quantity ?? null, rateCardVersion: i.rateCardVersion ?? null, metadata: i.metadata ?? {} };
}

/** Lookups take ids from callers too: a non-string is a caller's mistake, never a database error. */
export function idArg(what: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 255) {
    throw new ValidationError(`${what} must be a non-empty string of at most 255 characters`, { field: what });
  }
  return value;
}

export function intArg(what: string, value: unknown): number {
  if (!Number.isSafeInteger(value)) throw new ValidationError(`${what} must be an integer`, { field: what });
  return value as number;
}
