import { MAX_AMOUNT } from '../money';
import { CUSTOMER_ID_PATTERN } from '../schemas';

/**
 * The usual, valid hold and settle (what metering sends for every model and
 * tool call), checked without zod, which was a few per cent of a batch's CPU.
 * Every test here is at least as strict as the schema in inputs.ts, and
 * the result has the fields the schema would give, so input accepted here is
 * treated exactly as the schema would treat it. Anything else returns null
 * and goes through the schema, which gives the same typed errors as before.
 */

// eslint-disable-next-line no-control-regex
const KEY = /^[^\u0000-\u001f\u007f]{1,255}$/;
const MAX_TTL_MS = 7 * 24 * 3600_000;

const str = (v: unknown, max: number): v is string | undefined => v === undefined || (typeof v === 'string' && v.length >= 1 && v.length <= max);
const amountOk = (v: unknown): v is bigint => typeof v === 'bigint' && v >= 0n && v <= MAX_AMOUNT;

export interface QuickPriced {
  chargeType?: string;
  quantity?: string;
  rateCardVersion?: string;
  metadata?: Record<string, unknown>;
}

/** Metadata the schema would accept, copied as the schema copies it; undefined when the schema must decide. */
function metadataOf(v: unknown, jsonProblem: (m: unknown) => string | null): { ok: boolean; value?: Record<string, unknown> } {
  if (v === undefined) return { ok: true };
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype || jsonProblem(v) !== null) return { ok: false };
  const copy: Record<string, unknown> = {};
  for (const k of Object.keys(v)) if (k !== '__proto__') copy[k] = (v as Record<string, unknown>)[k];
  return { ok: true, value: copy };
}

function pricedOf(o: Record<string, unknown>, jsonProblem: (m: unknown) => string | null): QuickPriced | null {
  if (!str(o.chargeType, 100) || !str(o.quantity, 100) || !str(o.rateCardVersion, 64)) return null;
  const m = metadataOf(o.metadata, jsonProblem);
  if (!m.ok) return null;
  return { chargeType: o.chargeType, quantity: o.quantity, rateCardVersion: o.rateCardVersion, metadata: m.value };
}

export function quickHold(
  input: unknown,
  jsonProblem: (m: unknown) => string | null,
): (QuickPriced & { customerId: string; amount: bigint; idempotencyKey: string; actor?: string; ttlMs?: number; addTo?: string }) | null {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return null;
  const o = input as Record<string, unknown>;
  if (typeof o.customerId !== 'string' || !CUSTOMER_ID_PATTERN.test(o.customerId) || !amountOk(o.amount)) return null;
  if (typeof o.idempotencyKey !== 'string' || !KEY.test(o.idempotencyKey) || !str(o.actor, 100) || !str(o.addTo, 100)) return null;
  const ttl = o.ttlMs;
  if (ttl !== undefined && !(typeof ttl === 'number' && Number.isInteger(ttl) && ttl > 0 && ttl <= MAX_TTL_MS)) return null;
  const priced = pricedOf(o, jsonProblem);
  if (!priced) return null;
  return { customerId: o.customerId, amount: o.amount, idempotencyKey: o.idempotencyKey, actor: o.actor, ttlMs: ttl, addTo: o.addTo, ...priced };
}

export function quickSettle(
  input: unknown,
  jsonProblem: (m: unknown) => string | null,
): (QuickPriced & { holdId: string; amount: bigint; idempotencyKey: string; actor?: string; final?: boolean }) | null {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return null;
  const o = input as Record<string, unknown>;
  if (typeof o.holdId !== 'string' || o.holdId.length < 1 || o.holdId.length > 100 || !amountOk(o.amount)) return null;
  if (typeof o.idempotencyKey !== 'string' || !KEY.test(o.idempotencyKey) || !str(o.actor, 100)) return null;
  if (o.final !== undefined && typeof o.final !== 'boolean') return null;
  const priced = pricedOf(o, jsonProblem);
  if (!priced) return null;
  return { holdId: o.holdId, amount: o.amount, idempotencyKey: o.idempotencyKey, actor: o.actor, final: o.final, ...priced };
}
