import type { Command } from 'commander';
import { z } from 'zod';
import type { CliContext } from '../context';
import { shortTime, table } from '../output';
import { customerId, integer, parseInput } from '../validate';

export function registerAudit(program: Command, cli: CliContext): void {
  program
    .command('audit')
    .description('who changed what: every mutation with its actor and idempotency key (oldest first)')
    .option('--customer <id>', 'only this customer')
    .option('--limit <n>', 'at most n records (default 1000)')
    .action(async (opts: { customer?: string; limit?: string }) => {
      const input = parseInput(z.object({ customer: customerId.optional(), limit: integer('limit', 1, 100_000).optional() }), opts);
      const records = await cli.withLedger((ledger) => ledger.audit({ customerId: input.customer, limit: input.limit }));
      cli.print({
        json: { records },
        human: () =>
          table(
            [
              { header: 'seq', align: 'right', value: (r) => r.seq },
              { header: 'time (UTC)', value: (r) => shortTime(r.at) },
              { header: 'actor', value: (r) => r.actor },
              { header: 'operation', value: (r) => r.operation },
              { header: 'customer', value: (r) => r.customerId ?? '' },
              { header: 'key', value: (r) => r.idempotencyKey ?? '' },
              { header: 'details', value: (r) => JSON.stringify(r.details) },
            ],
            records,
          ),
      });
    });
}
