import type Stripe from 'stripe';
import type { Charge, Refund } from '../ledger/types';
import type { Ledger } from '../ledger/types';
import { formatUsd, type Nanos } from '../money';
import { paidPublicFlowSplit } from '../pricing/price';
import { StripeIntegrationError } from './errors';
import { NANOS_PER_CENT } from './recharge';

/**
 * Paid public flows: an external user pays `price` to run a creator's flow.
 * The platform fee is the PaidPublicFlowRun formula (23 % + $0.39, from the
 * active rate card via paidPublicFlowSplit); the creator's net goes
 *  - to their Stripe Connect account by transfer, when one is given
 *    (whole cents, rounded down; the sub-cent rest stays with the platform and
 *    is reported), idempotency key `fb-payout:<runId>`;
 *  - otherwise to the creator's ledger balance, topUp key `paid-flow:<runId>:creator`.
 * The payer is charged from their ledger balance (key `paid-flow:<runId>:charge`,
 * ChargeType PaidPublicFlowRun), which also queues its meter event.
 * A payout row (billing_stripe_payouts) is written before the transfer and
 * marked paid after, so a rerun after a crash resumes with the same key.
 */
export interface PaidFlowRunInput {
  readonly runId: string;
  readonly payerCustomerId: string;
  readonly creatorCustomerId: string;
  readonly price: Nanos;
  /** The creator's Connect account (`acct_…`); without it the net is credited in the ledger. */
  readonly creatorConnectAccount?: string | null;
  readonly stripe?: Stripe;
  readonly currency?: string;
}

export interface PaidFlowRunResult {
  readonly runId: string;
  readonly priceUsd: string;
  readonly feeUsd: string;
  readonly creatorNetUsd: string;
  readonly charge: Charge;
  readonly payout:
    | { method: 'ledger'; topUpId: string; amountUsd: string }
    | { method: 'connect'; transferId: string; amountCents: number; keptByPlatformUsd: string };
}

export async function settlePaidPublicFlowRun(ledger: Ledger, input: PaidFlowRunInput): Promise<PaidFlowRunResult> {
  const card = await ledger.activeRateCard();
  const split = paidPublicFlowSplit(card, input.price);
  const charge = await ledger.charge({
    customerId: input.payerCustomerId,
    amount: split.price,
    idempotencyKey: `paid-flow:${input.runId}:charge`,
    chargeType: 'PaidPublicFlowRun',
    quantity: '1',
    rateCardVersion: split.rateCardVersion,
    metadata: { runId: input.runId, creator: input.creatorCustomerId, feeUsd: formatUsd(split.fee), creatorNetUsd: formatUsd(split.creatorNet) },
    actor: 'stripe',
  });
  const base = { runId: input.runId, priceUsd: formatUsd(split.price), feeUsd: formatUsd(split.fee), creatorNetUsd: formatUsd(split.creatorNet), charge };

  if (!input.creatorConnectAccount) {
    const t = await ledger.topUp({
      customerId: input.creatorCustomerId,
      amount: split.creatorNet,
      idempotencyKey: `paid-flow:${input.runId}:creator`,
      memo: `net of paid public flow run ${input.runId}`,
      actor: 'stripe',
    });
    return { ...base, payout: { method: 'ledger', topUpId: t.id, amountUsd: formatUsd(split.creatorNet) } };
  }

  if (!input.stripe) throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', 'a Connect payout needs a Stripe client', { runId: input.runId });
  const cents = split.creatorNet / NANOS_PER_CENT;
  const kept = split.creatorNet - cents * NANOS_PER_CENT;
  const key = `fb-payout:${input.runId}`;
  const d = ledger.dialect;
  const now = ledger.now();
  const [existing] = await d.writeTransaction(async (c) => {
    await c.run(
      `INSERT INTO billing_stripe_payouts (key, creator_id, amount_nanos, method, reference, status, created_at, updated_at)
       VALUES (?, ?, ?, 'connect', NULL, 'pending', ?, ?) ON CONFLICT (key) DO NOTHING`,
      [key, input.creatorCustomerId, split.creatorNet, now, now],
    );
    return c.query('SELECT status, reference FROM billing_stripe_payouts WHERE key = ?', [key]);
  });
  if (existing && String(existing.status) === 'paid') {
    return { ...base, payout: { method: 'connect', transferId: String(existing.reference), amountCents: Number(cents), keptByPlatformUsd: formatUsd(kept) } };
  }
  const transfer = await input.stripe.transfers.create(
    {
      amount: Number(cents),
      currency: input.currency ?? 'usd',
      destination: input.creatorConnectAccount,
      description: `Paid public flow run ${input.runId}`,
      metadata: { fb_run_id: input.runId, fb_creator_id: input.creatorCustomerId, fb_fee_usd: formatUsd(split.fee) },
    },
    { idempotencyKey: key },
  );
  await d.writeTransaction((c) => c.run("UPDATE billing_stripe_payouts SET status = 'paid', reference = ?, updated_at = ? WHERE key = ?", [transfer.id, ledger.now(), key]));
  return { ...base, payout: { method: 'connect', transferId: transfer.id, amountCents: Number(cents), keptByPlatformUsd: formatUsd(kept) } };
}

/**
 * The CLI's refund of a flow charge: credits the ledger and corrects the usage
 * sent to Stripe. The correction needs no extra step — the refund's ledger
 * entry queues a negative meter event (identifier `fb_<refund entry id>`) in
 * the same transaction — and this returns it so the operator can see it.
 */
export async function refundFlowCharge(
  ledger: Ledger,
  input: { chargeId: string; amount?: Nanos; idempotencyKey: string; reason?: string; actor?: string },
): Promise<{ refund: Refund; meterEvent: { identifier: string; eventName: string; value: string; status: string } | null }> {
  const refund = await ledger.refund({ chargeId: input.chargeId, amount: input.amount, idempotencyKey: input.idempotencyKey, reason: input.reason, actor: input.actor ?? 'cli' });
  const [row] = await ledger.dialect.read((c) => c.query('SELECT id, event_name, value, status FROM billing_stripe_outbox WHERE entry_id = ?', [refund.id]));
  return {
    refund,
    meterEvent: row ? { identifier: String(row.id), eventName: String(row.event_name), value: String(row.value), status: String(row.status) } : null,
  };
}
