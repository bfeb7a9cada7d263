import type { Command } from 'commander';
import { z } from 'zod';
import { planIdSchema } from '../../quota/plans';
import type { Subscription } from '../../quota/service';
import type { CliContext } from '../context';
import { keyValues, shortTime } from '../output';
import { customerId, integer, parseInput } from '../validate';

function subscriptionHuman(s: Subscription): string {
  return keyValues([
    ['customer', s.customerId],
    ['plan', s.planId + (s.pendingPlanId ? ` (changes to ${s.pendingPlanId} at period end)` : '')],
    ['status', s.status + (s.cancelAtPeriodEnd ? ', cancels at period end' : '')],
    ['period', `${shortTime(s.periodStart)} → ${shortTime(s.periodEnd)} UTC`],
    ['sessions used', s.sessionsUsed],
  ]);
}

export function registerSubscriptions(program: Command, cli: CliContext): void {
  program
    .command('subscribe <customer> <plan>')
    .description('put a customer on a plan: upgrades now, downgrades at the next period')
    .option('--anchor-day <day>', 'day of the month periods start on (new subscriptions; default today)')
    .action(async (customer: string, plan: string, opts: { anchorDay?: string }) => {
      const input = parseInput(z.object({ customer: customerId, plan: planIdSchema, anchorDay: integer('anchor day', 1, 31).optional() }), {
        customer,
        plan,
        anchorDay: opts.anchorDay,
      });
      const r = await cli.withQuota((quota) =>
        quota.subscribe({ customerId: input.customer, planId: input.plan, anchorDay: input.anchorDay }),
      );
      const what = { new: 'Subscribed', upgrade: 'Upgraded (effective now)', downgrade: 'Downgrade scheduled for the next period', unchanged: 'Unchanged' }[r.change];
      cli.print({ json: { change: r.change, ...r.subscription }, human: () => `${what}\n${subscriptionHuman(r.subscription)}` });
    });

  program
    .command('cancel <customer>')
    .description('cancel the subscription at the end of the current period')
    .action(async (customer: string) => {
      const input = parseInput(z.object({ customer: customerId }), { customer });
      const s = await cli.withQuota((quota) => quota.cancel(input.customer));
      cli.print({ json: { ...s }, human: () => `Cancels at period end\n${subscriptionHuman(s)}` });
    });
}
