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
    .option('--limit <n>', 'only the most recent n records (still listed oldest first; default: all, up to 100000)')
    .action(async (opts: { customer?: string; limit?: string }) => {
      const input = parseInput(z.object({ customer: customerId.optional(), limit: integer('limit', 1, 100_000).optional() }), opts);
      // The ledger pages oldest-first; the most recent n are the tail (as for statement --limit).
      const records = await cli.readLedger(async (ledger) => {
        const all = await ledger.audit({ customerId: input.customer, limit: 100_000 });
        return input.limit ? all.slice(-input.limit) : all;
      });
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
