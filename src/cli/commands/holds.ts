import type { Command } from 'commander';
import type { CliContext } from '../context';

export function registerHolds(program: Command, cli: CliContext): void {
  const holds = program.command('holds').description('holds (reservations placed before a step runs)');
  holds
    .command('sweep')
    .description('release every pending hold past its expiry (also happens lazily on the next operation for that customer)')
    .action(async () => {
      const r = await cli.withLedger((ledger) => ledger.sweepExpiredHolds());
      cli.print({ json: { expired: r.expired }, human: () => `Released ${r.expired} expired hold${r.expired === 1 ? '' : 's'}` });
    });
}
