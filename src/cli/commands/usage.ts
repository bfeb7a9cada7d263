import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import type { Alert, MetricLine, UsageReport } from '../../quota/service';
import { type CliContext, keyOrNew } from '../context';
import { keyValues, shortTime, table, usd } from '../output';
import { customerId, idempotencyKey, isoTime, parseInput, periodAt, quantity, text } from '../validate';
import { formatQuantity } from '../../money';

function usageJson(r: UsageReport): Record<string, unknown> {
  return {
    customerId: r.customerId,
    tier: r.tier,
    status: r.status,
    periodStart: r.periodStart,
    periodEnd: r.periodEnd,
    sessionsUsed: r.sessionsUsed,
    sessionsLimit: r.sessionsLimit,
    sessionsRemaining: r.sessionsRemaining,
    usagePercentage: r.usagePercentage,
    isNearLimit: r.isNearLimit,
    nearLimitThreshold: r.nearLimitThreshold,
    canMakeRequests: r.canMakeRequests,
    basePriceUsd: formatUsd(r.base),
    overageUsd: formatUsd(r.overage),
    usageChargesUsd: formatUsd(r.usageCharges),
    currentChargesUsd: formatUsd(r.currentCharges),
    creditBalanceUsd: formatUsd(r.balance),
    availableUsd: formatUsd(r.available),
    budgetUsd: r.budget === null ? null : formatUsd(r.budget),
    budgetUsedUsd: formatUsd(r.budgetUsed),
    managedModels: r.managedModels,
    metrics: r.metrics.map(metricJson),
    alerts: r.alerts,
  };
}

export function metricJson(m: MetricLine): Record<string, unknown> {
  return { metric: m.metric, unit: m.unit, used: m.used, included: m.included, overage: m.overage, overagePriceUsd: formatUsd(m.overagePrice), amountUsd: formatUsd(m.amount) };
}

/** `[██████████████░░░░░░]  76.00 %` */
export function usageBar(percent: number, width = 30): string {
  const filled = Math.min(width, Math.round((Math.min(percent, 100) / 100) * width));
  return `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}] ${percent.toFixed(2).padStart(6)} %`;
}

export function alertsTable(alerts: readonly Alert[]): string {
  return table(
    [
      { header: 'fired', value: (a: Alert) => shortTime(a.firedAt) },
      { header: 'kind', value: (a) => a.kind },
      { header: 'threshold', align: 'right', value: (a) => `${a.threshold} %` },
      { header: 'at', align: 'right', value: (a) => `${a.value} %` },
    ],
    alerts,
  );
}

function usageHuman(r: UsageReport): string {
  const sessions =
    r.sessionsLimit === null ? `${r.sessionsUsed} (unlimited)` : `${r.sessionsUsed} of ${r.sessionsLimit.toLocaleString('en-US')}, ${r.sessionsRemaining} left`;
  const lines = [
    keyValues([
      ['customer', r.customerId],
      ['plan', `${r.tier} (${r.status})`],
      ['period', `${shortTime(r.periodStart)} → ${shortTime(r.periodEnd)} UTC`],
      ['sessions', sessions],
      ['usage', r.sessionsLimit === null ? 'no session limit' : usageBar(r.usagePercentage)],
      ['near limit', `${r.isNearLimit ? 'yes' : 'no'}${r.nearLimitThreshold === null ? ' (the plan sets no alert threshold)' : ` (from ${r.nearLimitThreshold} %, the plan's first alert threshold)`}`],
      ['can make requests', r.canMakeRequests ? 'yes' : 'no'],
      ['charges so far', `${usd(r.currentCharges)}  (base ${usd(r.base)} + overage ${usd(r.overage)} + usage ${usd(r.usageCharges)})`],
      ['credit balance', `${usd(r.balance)} (available ${usd(r.available)})`],
      ['budget', r.budget === null ? 'none' : `${usd(r.budgetUsed)} of ${usd(r.budget)}`],
    ]),
  ];
  if (r.metrics.length) {
    lines.push(
      '',
      table(
        [
          { header: 'metric', value: (m: MetricLine) => m.metric },
          { header: 'used', align: 'right', value: (m) => m.used },
          { header: 'included', align: 'right', value: (m) => m.included },
          { header: 'overage', align: 'right', value: (m) => m.overage },
          { header: 'amount', align: 'right', value: (m) => usd(m.amount) },
        ],
        r.metrics,
      ),
    );
  }
  if (r.alerts.length) lines.push('', 'Alerts this period:', alertsTable(r.alerts));
  return lines.join('\n');
}

export function registerUsage(program: Command, cli: CliContext): void {
  const usage = program
    .command('usage')
    .description('the usage report of a customer, or `usage record` to add units of a metric')
    .argument('[customer]', 'customer id')
    .option('--period <when>', 'report the billing period containing this date: YYYY-MM (its first day), YYYY-MM-DD or an ISO time (default: now)')
    .action(async (customer: string | undefined, opts: { period?: string }) => {
      const input = parseInput(z.object({ customer: customerId, period: periodAt('period').optional() }), { customer, period: opts.period });
      const r = await cli.withQuota((quota) => quota.usage(input.customer, { at: input.period }), { read: true });
      cli.print({ json: usageJson(r), human: () => usageHuman(r) });
    });

  usage
    .command('record <customer> <metric> <quantity>')
    .description('record units of a metric (e.g. api_calls) for overage billing; idempotent by --key')
    .option('--key <idempotency key>', 'replaying the same key records nothing new')
    .option('--at <ISO time>', 'when the usage happened (default now)')
    .action(async (customer: string, metric: string, qty: string, opts: { key?: string; at?: string }) => {
      const input = parseInput(
        z.object({ customer: customerId, metric: text('metric', 64), quantity: quantity(), key: idempotencyKey.optional(), at: isoTime('at').optional() }),
        { customer, metric, quantity: qty, key: opts.key, at: opts.at },
      );
      const key = keyOrNew(input.key, 'usage');
      const r = await cli.withQuota((quota) =>
        quota.recordUsage({
          customerId: input.customer,
          metric: input.metric,
          quantity: formatQuantity(input.quantity),
          idempotencyKey: key,
          at: input.at,
        }),
      );
      cli.print({
        json: { customerId: input.customer, metric: input.metric, quantity: formatQuantity(input.quantity), idempotencyKey: key, recorded: r.recorded },
        human: () => `${r.recorded ? 'Recorded' : 'Already recorded (same key)'} ${formatQuantity(input.quantity)} ${input.metric} for ${input.customer} (key ${key})`,
      });
    });
}
