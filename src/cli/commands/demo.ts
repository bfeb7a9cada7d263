import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { CliContext } from '../context';
import { runDemo } from '../demo';

export function registerDemo(program: Command, cli: CliContext): void {
  program
    .command('demo')
    .description('a guided tour on a fresh temporary SQLite ledger (or --db): top-up, worked examples, spending until INSUFFICIENT_FUNDS')
    .action(async () => {
      // FLOWISE_BILLING_DB is deliberately ignored: the demo never writes into the operator's real ledger unless --db says so.
      const target = cli.explicitDb() ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'flowise-billing-demo-')), 'billing.sqlite');
      const report = await cli.withLedger((ledger) => runDemo(ledger), target);
      cli.print({ json: report.json, human: () => report.text });
    });
}
