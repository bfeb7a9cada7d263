import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import { CLI_ACTOR, type CliContext, isReplay, keyOrNew } from '../context';
import { keyValues, usd } from '../output';
import { entityId, idempotencyKey, parseInput, text, usdAmount } from '../validate';

export function registerRefund(program: Command, cli: CliContext): void {
  program
    .command('refund <chargeId> [usd]')
    .description('refund a charge, fully or the given USD amount')
    .option('--key <idempotency-key>', 'idempotency key; without it a fresh key is made and printed')
    .option('--reason <text>', 'why, stored on the ledger entry')
    .action(async (chargeId: string, amount: string | undefined, opts: { key?: string; reason?: string }) => {
      const input = parseInput(
        z.object({
          chargeId: entityId('charge id'),
          amount: usdAmount('amount', { positive: true }).optional(),
          key: idempotencyKey.optional(),
          reason: text('reason', 500).optional(),
        }),
        { chargeId, amount, key: opts.key, reason: opts.reason },
      );
      const key = keyOrNew(input.key, 'refund');
      const started = Date.now();
      const { r, b } = await cli.withLedger(async (ledger) => {
        const r = await ledger.refund({ chargeId: input.chargeId, amount: input.amount, idempotencyKey: key, reason: input.reason, actor: CLI_ACTOR });
        return { r, b: await ledger.balance(r.customerId) };
      });
      const replayed = isReplay(r.createdAt, started);
      cli.print({
        json: {
          refundId: r.id,
          chargeId: r.chargeId,
          customerId: r.customerId,
          amountUsd: formatUsd(r.amount),
          balanceUsd: formatUsd(b.balance),
          availableUsd: formatUsd(b.available),
          idempotencyKey: key,
          replayed,
          createdAt: r.createdAt,
        },
        human: () =>
          `${replayed ? 'Already refunded (replay of an earlier request with this key; nothing changed)' : 'Refunded'}\n` +
          keyValues([
            ['customer', r.customerId],
            ['charge', r.chargeId],
            ['amount', usd(r.amount)],
            ['balance now', usd(b.balance)],
            ['refund id', r.id],
            ['key', `${key}${input.key ? '' : '  (replay safely with --key)'}`],
          ], '  '),
      });
    });
}
