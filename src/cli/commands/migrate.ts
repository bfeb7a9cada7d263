import type { Command } from 'commander';
import { SCHEMA_VERSION } from '../../ledger/migrations';
import type { CliContext } from '../context';
import { keyValues } from '../output';

export function registerMigrate(program: Command, cli: CliContext): void {
  program
    .command('migrate')
    .description('create or upgrade the ledger tables (every command does this on open; this one only reports)')
    .action(async () => {
      const json = await cli.withLedger(async (ledger) => ({
        migrated: true,
        schemaVersion: SCHEMA_VERSION,
        backend: ledger.backend,
        location: ledger.location,
      }));
      cli.print({
        json,
        human: () =>
          keyValues([
            ['migrated', 'yes'],
            ['schema version', json.schemaVersion],
            ['backend', json.backend],
            ['location', json.location],
          ]),
      });
    });
}
