import type { Command } from 'commander';
import { z } from 'zod';
import { formatSparks, formatUsd } from '../../money';
import { CLI_ACTOR, type CliContext, isReplay, keyOrNew } from '../context';
import { keyValues, usd } from '../output';
import { refuseFreeCharge } from '../../pricing/price';
import { parseQuoteRequest, quote } from '../quote';
import { chargeType, customerId, idempotencyKey, parseInput } from '../validate';

export function registerCharge(program: Command, cli: CliContext): void {
  program
    .command('charge <customer> <chargeType> <quantity>')
    .description('price a ChargeType with the active rate card and charge it (PaidPublicFlowRun: quantity is the run price in USD)')
    .option('--key <idempotency-key>', 'idempotency key; without it a fresh key is made and printed')
    .action(async (customer: string, type: string, qty: string, opts: { key?: string }) => {
      const input = parseInput(
        z.object({ customer: customerId, chargeType, quantity: z.string(), key: idempotencyKey.optional() }),
        { customer, chargeType: type, quantity: qty, key: opts.key },
      );
      const request = parseQuoteRequest(input.chargeType, input.quantity);
      const key = keyOrNew(input.key, 'charge');
      const started = Date.now();
      const { q, ch, b } = await cli.withLedger(async (ledger) => {
        const q = quote(await ledger.activeRateCard(), request);
        refuseFreeCharge(q);
        const ch = await ledger.charge({
          customerId: input.customer,
          amount: q.amount,
          idempotencyKey: key,
          chargeType: input.chargeType,
          quantity: q.quantity,
          rateCardVersion: q.rateCardVersion,
          metadata: { source: 'cli', ...q.extra },
          actor: CLI_ACTOR,
        });
        return { q, ch, b: await ledger.balance(input.customer) };
      });
      const replayed = isReplay(ch.createdAt, started);
      cli.print({
        json: {
          chargeId: ch.id,
          customerId: ch.customerId,
          chargeType: ch.chargeType,
          quantity: ch.quantity,
          unit: q.unit,
          usd: formatUsd(ch.amount),
          sparks: formatSparks(ch.amount),
          balanceUsd: formatUsd(b.balance),
          availableUsd: formatUsd(b.available),
          rateCardVersion: ch.rateCardVersion,
          idempotencyKey: key,
          replayed,
          createdAt: ch.createdAt,
          ...q.extra,
        },
        human: () =>
          `${replayed ? 'Already charged (replay of an earlier request with this key; nothing changed)' : 'Charged'}\n` +
          keyValues([
            ['customer', ch.customerId],
            ['charge type', `${ch.chargeType} × ${ch.quantity} ${q.unit}`],
            ['amount', usd(ch.amount)],
            ...q.notes,
            ['balance now', usd(b.balance)],
            ['rate card', ch.rateCardVersion ?? ''],
            ['charge id', ch.id],
            ['key', `${key}${input.key ? '' : '  (replay safely with --key)'}`],
          ], '  '),
      });
    });
}
