import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import { CLI_ACTOR, type CliContext, isReplay, keyOrNew } from '../context';
import { keyValues, usd } from '../output';
import { customerId, idempotencyKey, parseInput, text, usdAmount } from '../validate';

export function registerTopup(program: Command, cli: CliContext): void {
  program
    .command('topup <customer> <usd>')
    .description('add funds to a customer (amount in USD, e.g. 10 or 0.50); replaying with the same --key changes nothing')
    .option('--key <idempotency-key>', 'idempotency key; without it a fresh key is made and printed')
    .option('--memo <text>', 'note stored on the ledger entry')
    .action(async (customer: string, amount: string, opts: { key?: string; memo?: string }) => {
      const input = parseInput(
        z.object({
          customer: customerId,
          amount: usdAmount('amount', { positive: true }),
          key: idempotencyKey.optional(),
          memo: text('memo', 500).optional(),
        }),
        { customer, amount, key: opts.key, memo: opts.memo },
      );
      const key = keyOrNew(input.key, 'topup');
      const started = Date.now();
      const { t, b } = await cli.withLedger(async (ledger) => {
        const t = await ledger.topUp({ customerId: input.customer, amount: input.amount, idempotencyKey: key, memo: input.memo, actor: CLI_ACTOR });
        return { t, b: await ledger.balance(input.customer) };
      });
      const replayed = isReplay(t.createdAt, started);
      cli.print({
        json: {
          topupId: t.id,
          customerId: t.customerId,
          amountUsd: formatUsd(t.amount),
          balanceUsd: formatUsd(b.balance),
          availableUsd: formatUsd(b.available),
          idempotencyKey: key,
          replayed,
          createdAt: t.createdAt,
        },
        human: () =>
          `${replayed ? 'Already applied (replay of an earlier request with this key; nothing changed)' : 'Topped up'}\n` +
          keyValues([
            ['customer', t.customerId],
            ['amount', usd(t.amount)],
            ['balance now', usd(b.balance)],
            ['available', usd(b.available)],
            ['top-up id', t.id],
            ['key', `${key}${input.key ? '' : '  (replay safely with --key)'}`],
          ], '  '),
      });
    });
}
