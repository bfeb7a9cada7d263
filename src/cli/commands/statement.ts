import type { Command } from 'commander';
import { z } from 'zod';
import type { Entry } from '../../ledger/types';
import { formatUsd } from '../../money';
import type { CliContext } from '../context';
import { type Column, keyValues, shortTime, signedUsd, table, usd } from '../output';
import { customerId, integer, parseInput } from '../validate';

export function entryJson(e: Entry): Record<string, unknown> {
  return {
    seq: e.seq,
    id: e.id,
    type: e.type,
    amountUsd: formatUsd(e.amount),
    heldDeltaUsd: formatUsd(e.heldDelta),
    balanceAfterUsd: formatUsd(e.balanceAfter),
    chargeType: e.chargeType,
    quantity: e.quantity,
    rateCardVersion: e.rateCardVersion,
    holdId: e.holdId,
    chargeId: e.chargeId,
    idempotencyKey: e.idempotencyKey,
    actor: e.actor,
    memo: e.memo,
    createdAt: e.createdAt,
  };
}

const STATEMENT_COLUMNS: readonly Column<Entry>[] = [
  { header: 'seq', align: 'right', value: (e) => e.seq },
  { header: 'time (UTC)', value: (e) => shortTime(e.createdAt) },
  { header: 'type', value: (e) => e.type },
  { header: 'amount', align: 'right', value: (e) => signedUsd(e.amount) },
  { header: 'held Δ', align: 'right', narrow: 'drop', value: (e) => signedUsd(e.heldDelta) },
  { header: 'balance after', align: 'right', value: (e) => usd(e.balanceAfter) },
  { header: 'charge type', value: (e) => e.chargeType ?? '' },
  { header: 'quantity', align: 'right', value: (e) => e.quantity ?? '' },
  // What `refund <chargeId>` takes: never shortened.
  { header: 'charge id', narrow: 'keep', value: (e) => e.chargeId ?? '' },
  { header: 'key', narrow: 'drop', value: (e) => e.idempotencyKey ?? '' },
];

export function statementTable(entries: readonly Entry[], indent = ''): string {
  return table(STATEMENT_COLUMNS, entries, { indent });
}

export function registerStatement(program: Command, cli: CliContext): void {
  program
    .command('statement <customer>')
    .description('the customer\'s journal: every top-up, hold, charge and refund with the balance after it')
    .option('--limit <n>', 'only the most recent n entries (still listed oldest first)')
    .option('--after <seq>', 'only entries after this sequence number')
    .action(async (customer: string, opts: { limit?: string; after?: string }) => {
      const input = parseInput(
        z.object({ customer: customerId, limit: integer('limit', 1, 100_000).optional(), after: integer('after', 0, Number.MAX_SAFE_INTEGER).optional() }),
        { customer, limit: opts.limit, after: opts.after },
      );
      const { entries, balance } = await cli.readLedger(async (ledger) => {
        // The ledger pages oldest-first; the most recent n are the tail.
        const all = await ledger.statement(input.customer, { afterSeq: input.after, limit: 100_000 });
        return { entries: input.limit ? all.slice(-input.limit) : all, balance: await ledger.balance(input.customer) };
      });
      cli.print({
        json: {
          customerId: input.customer,
          entries: entries.map(entryJson),
          balanceUsd: formatUsd(balance.balance),
          heldUsd: formatUsd(balance.held),
          availableUsd: formatUsd(balance.available),
        },
        human: () =>
          `Statement for ${input.customer}\n\n${statementTable(entries)}\n\n` +
          keyValues([
            ['balance', usd(balance.balance)],
            ['held', usd(balance.held)],
            ['available', usd(balance.available)],
          ]),
      });
    });
}
