import type { Command } from 'commander';
import { z } from 'zod';
import { doctor, install, uninstall } from '../../installer';
import type { CliContext } from '../context';
import { keyValues, table } from '../output';
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
    .description('report what is installed, versions and problems (changes nothing)')
    .option('--flowise <path>', 'as for install')
    .option('--node <binary>', "load the installed files with this Node (the one Flowise runs on) to prove they load")
    .action(async (opts: { flowise?: string; node?: string }) => {
      const f = flowisePath.parse(opts);
      const r = doctor({ flowise: f.flowise, node: f.node });
      cli.print({
        json: { ...r },
        human: () =>
          [
            keyValues([
              ['flowise-components', r.componentsDir ? `${r.componentsDir} (${r.componentsVersion ?? '?'})` : 'not found'],
              ['installed', r.installed ? `${r.installed.version}, ${r.installed.files} files, ${r.installed.installedAt}` : 'no'],
              ['@langchain/core (Flowise)', r.langchainCore.flowise ? `${r.langchainCore.flowise.version} at ${r.langchainCore.flowise.dir}` : '—'],
              ['@langchain/core (billing)', r.langchainCore.billing ? `${r.langchainCore.billing.version} at ${r.langchainCore.billing.dir}` : '—'],
            ]),
            r.problems.length
              ? table(
                  [
                    { header: 'problem', value: (p: (typeof r.problems)[number]) => p.code },
                    { header: 'what to do', value: (p) => p.message },
                  ],
                  r.problems,
                )
              : 'No problems found.',
          ].join('\n'),
      });
      cli.verdict(r.ok);
    });
}
