import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import type { CliContext } from '../context';
import { keyValues, usd } from '../output';
import { customerId, parseInput } from '../validate';

export function registerBalance(program: Command, cli: CliContext): void {
  program
    .command('balance <customer>')
    .description('posted balance, open holds and what is available')
    .action(async (customer: string) => {
      const input = parseInput(z.object({ customer: customerId }), { customer });
      const b = await cli.readLedger((ledger) => ledger.balance(input.customer));
      cli.print({
        json: { customerId: b.customerId, balanceUsd: formatUsd(b.balance), heldUsd: formatUsd(b.held), availableUsd: formatUsd(b.available) },
        human: () =>
          keyValues([
            ['customer', b.customerId],
            ['balance', usd(b.balance)],
            ['held', usd(b.held)],
            ['available', usd(b.available)],
          ]),
      });
    });
}
