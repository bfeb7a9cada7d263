import type { Command } from 'commander';
import { SqlLedger } from '../../ledger/sql-ledger';
import { SCHEMA_VERSION } from '../../ledger/migrations';
import { isPostgresUrl } from '../../ledger/open';
import type { CliContext } from '../context';
import { keyValues } from '../output';

export function registerMigrate(program: Command, cli: CliContext): void {
  program
    .command('migrate')
    .description('create or upgrade the ledger tables, and report which schema steps ran (every command migrates on open)')
    .action(async () => {
      // A large SQLite ledger's upgrade can copy its journal (seconds per million entries): say so before the wait.
      if (!cli.json) {
        const slow = isPostgresUrl(cli.target()) ? '' : ' (a large SQLite ledger can take a while: README "Upgrading a SQLite ledger")';
        cli.io.err(`applying pending schema steps${slow} …\n`);
      }
      const started = Date.now();
      const json = await cli.withLedger(async (ledger) => {
        const applied = ledger instanceof SqlLedger ? ledger.schemaApplied : [];
        return {
          migrated: true,
          schemaVersion: SCHEMA_VERSION,
          backend: ledger.backend,
          location: ledger.location,
          applied: Object.fromEntries(applied.map((r) => [r.owner, r.applied])),
          durationMs: Date.now() - started,
        };
      });
      const steps = Object.entries(json.applied).filter(([, v]) => v.length > 0);
      cli.print({
        json,
        human: () =>
          keyValues([
            ['migrated', 'yes'],
            ['schema version', json.schemaVersion],
            ['steps applied', steps.length ? steps.map(([owner, v]) => `${owner} ${v.join(', ')}`).join('; ') : 'none (up to date)'],
            ['took', `${json.durationMs} ms`],
            ['backend', json.backend],
            ['location', json.location],
          ]),
      });
    });
}
