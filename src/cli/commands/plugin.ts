import type { Command } from 'commander';
import { z } from 'zod';
import { doctor, install, uninstall } from '../../installer';
import { BillingError } from '../../errors';
import type { CliContext } from '../context';
import { checkEnvironment } from '../doctor';
import { keyValues } from '../output';
import { text } from '../validate';

const flowisePath = z.object({ flowise: text('--flowise', 4096).optional(), node: text('--node', 4096).optional() });

export function registerPlugin(program: Command, cli: CliContext): void {
  program
    .command('install')
    .description('install the Billing nodes and credentials into Flowise (safe to re-run after a Flowise upgrade)')
    .option('--flowise <path>', 'a Flowise install, monorepo or flowise-components directory (default: look around, then the global npm root)')
    .action(async (opts: { flowise?: string }) => {
      const f = flowisePath.parse(opts);
      const r = install({ flowise: f.flowise });
      cli.print({
        json: { ...r },
        human: () =>
          [
            `${r.action === 'installed' ? 'Installed' : 'Reinstalled'} flowise-billing ${r.packageVersion} into flowise-components ${r.componentsVersion ?? '?'}`,
            keyValues([
              ['components', r.componentsDir],
              ['nodes', r.nodes.join(', ')],
              ['credentials', r.credentials.join(', ')],
              ['files', r.files],
              ['manifest', r.manifest],
            ], '  '),
            ...r.warnings.map((w) => `warning: ${w}`),
            'Restart Flowise (and every queue-mode worker) to load the nodes.',
          ].join('\n'),
      });
    });

  program
    .command('uninstall')
    .description('remove exactly what install added')
    .option('--flowise <path>', 'as for install')
    .action(async (opts: { flowise?: string }) => {
      const f = flowisePath.parse(opts);
      const r = uninstall({ flowise: f.flowise });
      cli.print({ json: { ...r }, human: () => (r.wasInstalled ? `Removed ${r.removed} file(s) from ${r.componentsDir}` : `Nothing installed in ${r.componentsDir}`) });
    });

  program
    .command('doctor')
    .description('check the Flowise install, the ledger, the token secret and the Stripe key; exit 1 with a fix for each problem (changes nothing)')
    .option('--flowise <path>', 'as for install')
    .option('--node <binary>', "load the installed files with this Node (the one Flowise runs on) to prove they load")
    .option('--online', 'also ask Stripe whether STRIPE_SECRET_KEY is accepted (one read-only request)')
    .action(async (opts: { flowise?: string; node?: string; online?: boolean }) => {
      const f = flowisePath.parse(opts);
      const r = doctor({ flowise: f.flowise, node: f.node });
      const envReport = await checkEnvironment({ db: cli.target(), env: cli.io.env, stripeOnline: opts.online === true });
      const problems = [...r.problems, ...envReport.problems];
      const report = { ...r, ok: problems.length === 0, checks: envReport.checks, problems };
      const human = () =>
        [
          keyValues([
            ['flowise-components', r.componentsDir ? `${r.componentsDir} (${r.componentsVersion ?? '?'})` : 'not found'],
            ['installed', r.installed ? `${r.installed.version}, ${r.installed.files} files, ${r.installed.installedAt}` : 'no'],
            ['@langchain/core (Flowise)', r.langchainCore.flowise ? `${r.langchainCore.flowise.version} at ${r.langchainCore.flowise.dir}` : '—'],
            ['@langchain/core (billing)', r.langchainCore.billing ? `${r.langchainCore.billing.version} at ${r.langchainCore.billing.dir}` : '—'],
            ...envReport.checks.map((c): [string, string] => [c.name, `${c.status}: ${c.detail}`]),
          ]),
          problems.length ? problems.map((p) => `problem ${p.code}: ${p.message}\n  fix: ${p.fix}`).join('\n') : 'No problems found.',
        ].join('\n');
      if (report.ok) {
        cli.print({ json: report, human });
        return;
      }
      // Problems are a failure (exit 1): the report is printed, then one error names how many; with --json the report is the error's details.
      if (!cli.json) cli.io.out(`${human()}\n`);
      throw new BillingError('PROBLEMS_FOUND', `doctor found ${problems.length} problem(s): ${problems.map((p) => p.code).join(', ')}`, cli.json ? report : { codes: problems.map((p) => p.code) });
    });
}
