import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import { collectInvoices } from '../../quota/collect';
import type { Invoice, MetricLine } from '../../quota/service';
import { CLI_ACTOR, type CliContext } from '../context';
import { keyValues, shortTime, table, usd } from '../output';
import { customerId, parseInput } from '../validate';
import { metricJson } from './usage';

function invoiceJson(inv: Invoice): Record<string, unknown> {
  return {
    invoiceId: inv.id,
    customerId: inv.customerId,
    planId: inv.planId,
    periodStart: inv.periodStart,
    periodEnd: inv.periodEnd,
    basePriceUsd: formatUsd(inv.base),
    lines: inv.lines.map(metricJson),
    overageUsd: formatUsd(inv.overage),
    totalUsd: formatUsd(inv.total),
    prepaidUsageUsd: formatUsd(inv.prepaidUsage),
    closedAt: inv.closedAt,
  };
}

function invoiceHuman(inv: Invoice): string {
  return [
    keyValues([
      ['invoice', inv.id ?? 'preview (not closed)'],
      ['customer', inv.customerId],
      ['plan', inv.planId],
      ['period', `${shortTime(inv.periodStart)} → ${shortTime(inv.periodEnd)} UTC`],
    ]),
    '',
    table(
      [
        { header: 'line', value: (l: { label: string; amount: string }) => l.label },
        { header: 'amount', align: 'right', value: (l) => l.amount },
      ],
      [
        { label: 'base price', amount: usd(inv.base) },
        ...inv.lines.map((m: MetricLine) => ({ label: `${m.metric}: ${m.overage} over ${m.included} included × ${usd(m.overagePrice)}`, amount: usd(m.amount) })),
        { label: 'TOTAL', amount: usd(inv.total) },
      ],
    ),
    '',
    `Metered usage paid from credits in this period: ${usd(inv.prepaidUsage)} (not in the total)`,
  ].join('\n');
}

export function registerInvoice(program: Command, cli: CliContext): void {
  const invoice = program.command('invoice').description('invoice preview for the current period, or close ended periods');
  invoice
    .command('preview <customer>')
    .description('the current period so far: base price + overage per metric (records nothing)')
    .action(async (customer: string) => {
      const input = parseInput(z.object({ customer: customerId }), { customer });
      const inv = await cli.withQuota((quota) => quota.previewInvoice(input.customer), { read: true });
      cli.print({ json: invoiceJson(inv), human: () => invoiceHuman(inv) });
    });
  invoice
    .command('close <customer>')
    .description('close every ended period as an immutable invoice, collect each from the credits once, and show the latest')
    .action(async (customer: string) => {
      const input = parseInput(z.object({ customer: customerId }), { customer });
      const { inv, collections } = await cli.withQuota(async (quota) => {
        const closed = await quota.closeInvoice(input.customer);
        return { inv: closed, collections: await collectInvoices(quota, input.customer, CLI_ACTOR) };
      });
      const unpaid = collections.filter((c) => c.status === 'unpaid');
      cli.print({
        json: { ...invoiceJson(inv), collections },
        human: () => `${invoiceHuman(inv)}\n${unpaid.length ? `Unpaid (credits too low, collected on a later close): ${unpaid.map((c) => c.periodStart.slice(0, 10)).join(', ')}` : 'Collected from credits.'}`,
      });
    });
}
