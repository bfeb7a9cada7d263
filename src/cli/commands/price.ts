import type { Command } from 'commander';
import { z } from 'zod';
import { isBillingError } from '../../errors';
import { formatSparks } from '../../money';
import { defaultRateCard } from '../../pricing/ratecard';
import type { CliContext } from '../context';
import { keyValues, usd } from '../output';
import { cardForQuote, parseQuoteRequest, quote, quoteJson } from '../quote';
import { parseInput, priceItem, rateCardVersion } from '../validate';

export function registerPrice(program: Command, cli: CliContext): void {
  program
    .command('price <item> <quantity>')
    .summary('price a ChargeType or resource (tokens, compute, storage) without recording anything')
    .description(
      'Price a ChargeType or resource without recording anything.\n' +
        'item: a ChargeType, or tokens | compute (minutes) | storage (GB-months);\n' +
        'PaidPublicFlowRun: quantity is the run price in USD (shows the fee and what the creator nets)',
    )
    .option('--model <name>', 'tokens only: use this model\'s input/output prices (quantity = input tokens)')
    .option('--output-tokens <n>', 'tokens with --model: output tokens')
    .option('--version <rate-card-version>', 'price with this imported rate card instead of the active one')
    .action(async (item: string, qty: string, opts: { model?: string; outputTokens?: string; version?: string }) => {
      const input = parseInput(z.object({ item: priceItem, version: rateCardVersion.optional() }), { item, version: opts.version });
      const request = parseQuoteRequest(input.item, qty, { model: opts.model, outputTokens: opts.outputTokens });
      // Pricing reads the active card; with no ledger yet, the shipped default card prices it (nothing is created).
      const q = await cli
        .readLedger(async (ledger) => quote(await cardForQuote(ledger, input.version), request))
        .catch((e: unknown) => {
          if (isBillingError(e) && e.code === 'LEDGER_NOT_FOUND' && !input.version) return quote(defaultRateCard(), request);
          throw e;
        });
      cli.print({
        json: quoteJson(q),
        human: () =>
          keyValues([
            ['item', q.item],
            ['quantity', `${q.quantity} ${q.unit}`],
            ['price', usd(q.amount)],
            ['sparks', formatSparks(q.amount)],
            ...q.notes,
            ['rate card', q.rateCardVersion],
          ]),
      });
    });
}
