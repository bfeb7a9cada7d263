import { z } from 'zod';
import { ValidationError } from '../errors';
import type { Ledger } from '../ledger/types';
import { formatQuantity, formatSparks, formatUsd, type Nanos, type Quantity } from '../money';
import { paidPublicFlowSplit, priceChargeType, priceResource, priceTokens } from '../pricing/price';
import { type ChargeType, defaultRateCard, isChargeType, type RateCard } from '../pricing/ratecard';
import { integer, parseInput, type PriceItem, quantity as quantitySchema, usdAmount } from './validate';

/** A priced item as the CLI shows it: the exact amount plus what explains it. */
export interface CliQuote {
  readonly item: string;
  /** The quantity as recorded on a charge (for PaidPublicFlowRun: the run price in USD). */
  readonly quantity: string;
  readonly unit: string;
  readonly amount: Nanos;
  readonly rateCardVersion: string;
  /** Item-specific fields for JSON (token split, paid-run split). */
  readonly extra: Record<string, string | number>;
  /** The same, as label/value lines for people. */
  readonly notes: ReadonlyArray<readonly [string, string]>;
}

export interface QuoteOptions {
  readonly model?: string;
  readonly outputTokens?: string;
}

const MAX_TOKENS = Number.MAX_SAFE_INTEGER;

/** A validated request to price something; parsing needs no card, so it happens before the ledger is touched. */
export type QuoteRequest =
  | { readonly kind: 'paidRun'; readonly item: 'PaidPublicFlowRun'; readonly price: Nanos }
  | { readonly kind: 'chargeType'; readonly item: ChargeType; readonly quantity: Quantity }
  | { readonly kind: 'tokens'; readonly item: 'tokens'; readonly tokens: number }
  | { readonly kind: 'modelTokens'; readonly item: 'tokens'; readonly model: string; readonly inputTokens: number; readonly outputTokens: number }
  | { readonly kind: 'resource'; readonly item: 'compute' | 'storage'; readonly quantity: Quantity };

/**
 * Checks the quantity for its item. Its meaning depends on the item: a count or
 * decimal in the rate's unit; whole tokens for `tokens`; the run price in USD
 * for PaidPublicFlowRun (whose price is the platform fee).
 */
export function parseQuoteRequest(item: PriceItem, rawQuantity: string, opts: QuoteOptions = {}): QuoteRequest {
  const tokenOptions = opts.model !== undefined || opts.outputTokens !== undefined;
  if (tokenOptions && item !== 'tokens') {
    throw new ValidationError(`Invalid input: --model and --output-tokens apply to "tokens" only, not to ${item}`, {
      issues: [{ path: 'model', message: '--model and --output-tokens apply to "tokens" only' }],
    });
  }
  if (item === 'PaidPublicFlowRun') {
    const { price } = parseInput(z.object({ price: usdAmount('run price (USD)') }), { price: rawQuantity });
    return { kind: 'paidRun', item, price };
  }
  if (isChargeType(item)) {
    return { kind: 'chargeType', item, quantity: parseInput(z.object({ quantity: quantitySchema('quantity') }), { quantity: rawQuantity }).quantity };
  }
  if (item === 'tokens') {
    const p = parseInput(
      z.object({
        quantity: integer('quantity (tokens)', 0, MAX_TOKENS),
        model: z.string().min(1, 'model must not be empty').max(200).optional(),
        outputTokens: integer('output tokens', 0, MAX_TOKENS).optional(),
      }),
      { quantity: rawQuantity, model: opts.model, outputTokens: opts.outputTokens },
    );
    if (p.model !== undefined) return { kind: 'modelTokens', item, model: p.model, inputTokens: p.quantity, outputTokens: p.outputTokens ?? 0 };
    if (p.outputTokens !== undefined) {
      throw new ValidationError('Invalid input: --output-tokens needs --model (the resource rate does not split input and output)', {
        issues: [{ path: 'outputTokens', message: '--output-tokens needs --model' }],
      });
    }
    return { kind: 'tokens', item, tokens: p.quantity };
  }
  // compute (minutes) and storage (GB-months): decimals allowed.
  return { kind: 'resource', item, quantity: parseInput(z.object({ quantity: quantitySchema('quantity') }), { quantity: rawQuantity }).quantity };
}

/** Prices a checked request against a card. */
export function quote(card: RateCard, r: QuoteRequest): CliQuote {
  const plain = (q: { item: string; quantity: string; unit: string; amount: Nanos }): CliQuote => ({
    item: q.item, quantity: q.quantity, unit: q.unit, amount: q.amount, rateCardVersion: card.version, extra: {}, notes: [],
  });
  switch (r.kind) {
    case 'paidRun': {
      const split = paidPublicFlowSplit(card, r.price);
      const q = priceChargeType(card, r.item, formatUsd(r.price));
      return {
        ...plain(q),
        extra: { runPriceUsd: formatUsd(split.price), feeUsd: formatUsd(split.fee), creatorNetUsd: formatUsd(split.creatorNet) },
        notes: [
          ['run price', `$${formatUsd(split.price)}`],
          ['platform fee', `$${formatUsd(split.fee)}`],
          ['creator nets', `$${formatUsd(split.creatorNet)}`],
        ],
      };
    }
    case 'chargeType':
      return plain(priceChargeType(card, r.item, formatQuantity(r.quantity)));
    case 'tokens':
      return plain(priceResource(card, 'tokens', String(r.tokens)));
    case 'resource':
      return plain(priceResource(card, r.item, formatQuantity(r.quantity)));
    case 'modelTokens': {
      const t = priceTokens(card, r.model, r.inputTokens, r.outputTokens);
      return {
        ...plain(t),
        extra: {
          model: t.model,
          requestedModel: r.model,
          inputTokens: t.inputTokens,
          outputTokens: t.outputTokens,
          inputUsd: formatUsd(t.inputAmount),
          outputUsd: formatUsd(t.outputAmount),
        },
        notes: [
          ['model price', t.model === r.model ? t.model : `${t.model} (used for "${r.model}")`],
          ['input tokens', `${t.inputTokens} → $${formatUsd(t.inputAmount)}`],
          ['output tokens', `${t.outputTokens} → $${formatUsd(t.outputAmount)}`],
        ],
      };
    }
  }
}

/** The JSON fields every quote carries: amounts as USD strings, plus Sparks. */
export function quoteJson(q: CliQuote): Record<string, unknown> {
  return {
    item: q.item,
    quantity: q.quantity,
    unit: q.unit,
    usd: formatUsd(q.amount),
    sparks: formatSparks(q.amount),
    rateCardVersion: q.rateCardVersion,
    ...q.extra,
  };
}

/**
 * The card a price quote uses, read without writing: the active card, or the
 * packaged default that the ledger activates on its first charge.
 */
export async function cardForQuote(ledger: Ledger, version?: string): Promise<RateCard> {
  if (version) return ledger.getRateCard(version);
  const active = (await ledger.listRateCards()).find((r) => r.active);
  return active ? ledger.getRateCard(active.version) : defaultRateCard();
}
