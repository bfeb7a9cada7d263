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
// eslint-disable-next-line no-control-regex
const ACTOR = /^[^\u0000-\u001f\u007f]{1,100}$/;
const MAX_TTL_MS = 7 * 24 * 3600_000;

const actorOk = (v: unknown): v is string | undefined => v === undefined || (typeof v === 'string' && ACTOR.test(v));
const str = (v: unknown, max: number): v is string | undefined => v === undefined || (typeof v === 'string' && v.length >= 1 && v.length <= max);
const amountOk = (v: unknown): v is bigint => typeof v === 'bigint' && v >= 0n && v <= MAX_AMOUNT;

export interface QuickPriced {
  chargeType?: string;
  quantity?: string;
  rateCardVersion?: string;
  metadata?: Record<string, unknown>;
}

/** Metadata the schema would accept, copied as the schema copies it (undefined when absent); NOT_QUICK when the schema must decide. */
function metadataOf(v: unknown, jsonProblem: (m: unknown) => string | null): Record<string, unknown> | undefined | typeof NOT_QUICK {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype || jsonProblem(v) !== null) return NOT_QUICK;
  const copy: Record<string, unknown> = {};
  for (const k of Object.keys(v)) if (k !== '__proto__') copy[k] = (v as Record<string, unknown>)[k];
  return copy;
}

const NOT_QUICK: unique symbol = Symbol('not quick');

/** The priced fields are strings of the schema's lengths (metadata is checked by metadataOf). */
const pricedOk = (o: Record<string, unknown>): boolean => str(o.chargeType, 100) && str(o.quantity, 100) && str(o.rateCardVersion, 64);

export function quickHold(
  input: unknown,
  jsonProblem: (m: unknown) => string | null,
): (QuickPriced & { customerId: string; amount: bigint; idempotencyKey: string; actor?: string; ttlMs?: number; addTo?: string }) | null {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return null;
  const o = input as Record<string, unknown>;
  if (typeof o.customerId !== 'string' || !CUSTOMER_ID_PATTERN.test(o.customerId) || !amountOk(o.amount)) return null;
  if (typeof o.idempotencyKey !== 'string' || !KEY.test(o.idempotencyKey) || !actorOk(o.actor) || !str(o.addTo, 100)) return null;
  const ttl = o.ttlMs;
  if (ttl !== undefined && !(typeof ttl === 'number' && Number.isInteger(ttl) && ttl > 0 && ttl <= MAX_TTL_MS)) return null;
  if (!pricedOk(o)) return null;
  const metadata = metadataOf(o.metadata, jsonProblem);
  if (metadata === NOT_QUICK) return null;
  // One object, fields as the schema gives them (no intermediate priced object to spread).
  return {
    customerId: o.customerId, amount: o.amount, idempotencyKey: o.idempotencyKey, actor: o.actor, ttlMs: ttl, addTo: o.addTo,
    chargeType: o.chargeType as string | undefined, quantity: o.quantity as string | undefined, rateCardVersion: o.rateCardVersion as string | undefined, metadata,
  };
}

export function quickSettle(
  input: unknown,
  jsonProblem: (m: unknown) => string | null,
): (QuickPriced & { holdId: string; amount: bigint; idempotencyKey: string; actor?: string; final?: boolean }) | null {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return null;
  const o = input as Record<string, unknown>;
  if (typeof o.holdId !== 'string' || o.holdId.length < 1 || o.holdId.length > 100 || !amountOk(o.amount)) return null;
  if (typeof o.idempotencyKey !== 'string' || !KEY.test(o.idempotencyKey) || !actorOk(o.actor)) return null;
  if (o.final !== undefined && typeof o.final !== 'boolean') return null;
  if (!pricedOk(o)) return null;
  const metadata = metadataOf(o.metadata, jsonProblem);
  if (metadata === NOT_QUICK) return null;
  return {
    holdId: o.holdId, amount: o.amount, idempotencyKey: o.idempotencyKey, actor: o.actor, final: o.final,
    chargeType: o.chargeType as string | undefined, quantity: o.quantity as string | undefined, rateCardVersion: o.rateCardVersion as string | undefined, metadata,
  };
}
