import { InsufficientFundsError } from '../errors';
import type { Charge } from '../ledger/types';
import { formatUsd, type Nanos } from '../money';
import { priceChargeType, priceResource, type PriceQuote } from '../pricing/price';
import { type ChargeType, isChargeType, RESOURCES, type Resource } from '../pricing/ratecard';
import type { RunAdmission } from '../quota/gate';
import { recordRefusedRun } from '../webhooks/events';
import type { LedgerHandle } from './ledgers';

/** What a node may charge: a ChargeType, or a resource (`tokens`, `compute`, `storage`) at the card's resource rate. */
export type Billable = ChargeType | Resource;
export const BILLABLES: readonly Billable[] = [
  'PrivateFlowRun',
  'FreePublicFlowRun',
  'PaidPublicFlowRun',
  'Inference',
  'ObjectGenerator',
  'ObjectTransformer',
  'Zipper',
  'Training',
  ...RESOURCES,
];

export function isBillable(s: string): s is Billable {
  return isChargeType(s) || (RESOURCES as readonly string[]).includes(s);
}

export async function priceBillable(handle: LedgerHandle, item: Billable, quantity: string | number): Promise<PriceQuote> {
  const card = await handle.ledger.activeRateCard();
  return isChargeType(item) ? priceChargeType(card, item, quantity) : priceResource(card, item as Resource, quantity);
}

export interface RunFee {
  readonly item: Billable;
  readonly quantity: string;
}

export interface GuardRunInput {
  readonly handle: LedgerHandle;
  readonly customerId: string;
  /** The conversation (Flowise chatId); with the customer it names the session. */
  readonly conversationId: string;
  /** Unique per prediction (and node): the run fee's idempotency key derives from it. */
  readonly runKey: string;
  readonly runFee: RunFee | null;
  /** Refuse unless at least this much (beyond the run fee) is available. */
  readonly minimumAvailable: Nanos;
  /** Count sessions against the plan's quota (and check the budget). */
  readonly checkSessions: boolean;
  readonly actor: string;
  readonly metadata?: Record<string, unknown>;
}

export interface GuardRunResult {
  readonly customerId: string;
  readonly admission: RunAdmission | null;
  readonly fee: Charge | null;
  /** Available balance after the fee. */
  readonly available: Nanos;
}

/**
 * The refusal of a run whose funds check (a balance read, not a ledger
 * operation) came up short, with its run.refused written here: holds and
 * quota refusals write their own in their transactions.
 */
export async function shortOfFunds(handle: LedgerHandle, p: { runKey: string; customerId: string; needed: Nanos; available: Nanos }): Promise<InsufficientFundsError> {
  const refused = new InsufficientFundsError({ customerId: p.customerId, requiredUsd: formatUsd(p.needed), availableUsd: formatUsd(p.available) });
  await recordRefusedRun(handle.ledger.dialect, { runKey: p.runKey, customerId: p.customerId, error: refused });
  return refused;
}

/**
 * The checks before a flow runs, in an order that never takes something the
 * run will not get: (1) funds for the fee plus the minimum, read without
 * consuming anything; (2) session admission (quota, budget); (3) the run fee,
 * charged atomically against the available balance (a concurrent run may have
 * taken the money since (1): the ledger refuses it then).
 */
export async function guardRun(input: GuardRunInput): Promise<GuardRunResult> {
  const { ledger, quota } = input.handle;
  const bal = await ledger.balance(input.customerId);
  const fee = input.runFee ? await priceBillable(input.handle, input.runFee.item, input.runFee.quantity) : null;
  const needed = input.minimumAvailable + (fee?.amount ?? 0n);
  if (bal.available < needed) throw await shortOfFunds(input.handle, { runKey: input.runKey, customerId: input.customerId, needed, available: bal.available });
  const admission = input.checkSessions ? await quota.admitRun({ customerId: input.customerId, conversationId: input.conversationId }) : null;
  let charge: Charge | null = null;
  if (fee && fee.amount > 0n) {
    charge = await ledger.charge({
      customerId: input.customerId,
      amount: fee.amount,
      idempotencyKey: `${input.runKey}:fee`,
      chargeType: fee.item,
      quantity: fee.quantity,
      rateCardVersion: fee.rateCardVersion,
      actor: input.actor,
      metadata: { ...input.metadata, conversationId: input.conversationId, sessionId: admission?.sessionId },
    });
  }
  const after = await ledger.balance(input.customerId);
  return { customerId: input.customerId, admission, fee: charge, available: after.available };
}

export interface ChargeStepInput {
  readonly handle: LedgerHandle;
  readonly customerId: string;
  readonly item: Billable;
  readonly quantity: string | number;
  readonly idempotencyKey: string;
  readonly actor: string;
  readonly metadata?: Record<string, unknown>;
}

/** Prices `quantity` of `item` with the active rate card and charges it once per key. */
export async function chargeStep(input: ChargeStepInput): Promise<{ charge: Charge; quote: PriceQuote }> {
  const quote = await priceBillable(input.handle, input.item, input.quantity);
  const charge = await input.handle.ledger.charge({
    customerId: input.customerId,
    amount: quote.amount,
    idempotencyKey: input.idempotencyKey,
    chargeType: quote.item,
    quantity: quote.quantity,
    rateCardVersion: quote.rateCardVersion,
    actor: input.actor,
    metadata: input.metadata,
  });
  return { charge, quote };
}

// Refusals moved to ./refusal; kept here for callers that import them from the guard.
export { DEFAULT_REFUSAL_MESSAGES, REFUSAL_KINDS, refusalFor, type Refusal, type RefusalKind } from './refusal';
