import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import type { CliContext } from '../context';
import { keyValues, usd } from '../output';
import { customerId, parseInput, usdAmount } from '../validate';
import { alertsTable } from './usage';

export function registerBudget(program: Command, cli: CliContext): void {
  const budget = program.command('budget').description('monthly spending caps');
  budget
    .command('set <customer> <usd>')
    .description('set the monthly budget ("none" removes it); steps past it are refused with BUDGET_EXCEEDED')
    .action(async (customer: string, amount: string) => {
      const input = parseInput(z.object({ customer: customerId, amount: z.union([z.literal('none'), usdAmount('budget')]) }), { customer, amount });
      const b = await cli.withServices(async ({ ledger, quota }) => {
        await quota.setBudget(input.customer, input.amount === 'none' ? null : input.amount);
        return ledger.budget(input.customer);
      });
      const json = {
        customerId: b.customerId,
        budgetUsd: b.budget === null ? null : formatUsd(b.budget),
        spentUsd: formatUsd(b.spent),
        heldUsd: formatUsd(b.held),
        periodStart: b.periodStart,
        periodEnd: b.periodEnd,
      };
      cli.print({
        json,
        human: () =>
          keyValues([
            ['customer', b.customerId],
            ['budget', b.budget === null ? 'none' : usd(b.budget)],
            ['spent this period', usd(b.spent)],
            ['held', usd(b.held)],
          ]),
      });
    });

  program
    .command('alerts <customer>')
    .description('usage and budget alerts fired (each threshold once per period)')
    .action(async (customer: string) => {
      const input = parseInput(z.object({ customer: customerId }), { customer });
      const alerts = await cli.withQuota((quota) => quota.alerts(input.customer), { read: true });
      cli.print({ json: { customerId: input.customer, alerts }, human: () => alertsTable(alerts) });
    });
}
