import type { Command } from 'commander';
import { z } from 'zod';
import { ValidationError } from '../../errors';
import { type Plan, type PlanInput, planIdSchema } from '../../quota/plans';
import type { CliContext } from '../context';
import { keyValues, table, usd } from '../output';
import { integer, parseInput, text } from '../validate';

function planJson(p: Plan): Record<string, unknown> {
  return { ...p.document };
}

const sessionsLimit = (p: Plan) => (p.sessionsIncluded === null ? 'unlimited' : p.sessionsIncluded.toLocaleString('en-US'));

function planDetail(p: Plan): string {
  const metrics = [...p.metrics.entries()];
  return (
    keyValues([
      ['plan', `${p.id} (${p.name})`],
      ['base price', `${usd(p.basePrice)} / period`],
      ['sessions', sessionsLimit(p)],
      ['session timeout', `${p.sessionTimeoutMs / 60_000} minutes`],
      ['models', p.managedModels ? 'managed or bring your own key' : 'bring your own key only'],
      ['alerts at', p.alertThresholds.map((t) => `${t} %`).join(', ')],
    ]) +
    (metrics.length
      ? `\n\n${table(
          [
            { header: 'metric', value: (m: (typeof metrics)[number]) => m[0] },
            { header: 'included', align: 'right', value: (m) => p.document.metrics[m[0]]!.included },
            { header: 'overage per unit', align: 'right', value: (m) => usd(m[1].overage) },
            { header: 'unit', value: (m) => m[1].unit },
          ],
          metrics,
        )}`
      : '')
  );
}

/** `--metric name=included:overageUsd[:unit]`, repeatable. */
function collectMetric(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

const metricSpec = z.string().transform((s, ctx) => {
  const m = /^([A-Za-z][A-Za-z0-9_.:-]{0,63})=(\d+(?:\.\d+)?):(\d+(?:\.\d{1,9})?)(?::(.{1,40}))?$/.exec(s);
  if (!m) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `metric "${s}" must look like name=included:overageUsd[:unit], e.g. api_calls=10000:0.01:call` });
    return z.NEVER;
  }
  return [m[1]!, { included: m[2]!, overageUsd: m[3]!, unit: m[4] ?? 'unit' }] as const;
});

interface PlanFlags {
  name?: string;
  baseUsd?: string;
  sessions?: string;
  timeoutMinutes?: string;
  byok?: boolean;
  managed?: boolean;
  metric?: string[];
  alerts?: string;
}

function planChanges(flags: PlanFlags): Partial<PlanInput> {
  // Each flag sets one field; two answers to one question are a mistake, not "the last one wins".
  if (flags.byok && flags.managed) throw new ValidationError('give either --byok or --managed, not both', { field: 'managedModels' });
  const f = parseInput(
    z.object({
      name: text('name', 100).optional(),
      baseUsd: z.string().optional(),
      sessions: z.union([z.literal('unlimited'), integer('sessions', 0, 1_000_000_000)]).optional(),
      timeoutMinutes: integer('timeout minutes', 1, 1440).optional(),
      metric: z.array(metricSpec).optional(),
      alerts: z
        .string()
        .regex(/^\d{1,3}(,\d{1,3})*$/, 'alerts must be comma-separated percentages, e.g. 75,90,95')
        .optional(),
    }),
    { ...flags },
  );
  const changes: Partial<PlanInput> = {};
  if (f.name !== undefined) changes.name = f.name;
  if (f.baseUsd !== undefined) changes.basePriceUsd = f.baseUsd.replace(/^\$/, '');
  if (f.sessions !== undefined) changes.sessionsIncluded = f.sessions === 'unlimited' ? null : f.sessions;
  if (f.timeoutMinutes !== undefined) changes.sessionTimeoutMinutes = f.timeoutMinutes;
  if (flags.byok) changes.managedModels = false;
  if (flags.managed) changes.managedModels = true;
  if (f.metric) {
    // Object.fromEntries would keep the last of two --metric flags for one name and drop the other unseen.
    const names = f.metric.map(([name]) => name);
    const repeated = names.filter((n, i) => names.indexOf(n) !== i);
    if (repeated.length) throw new ValidationError(`--metric ${repeated[0]} is given more than once; give each metric once`, { field: 'metrics', value: repeated[0] });
    changes.metrics = Object.fromEntries(f.metric);
  }
  if (f.alerts) changes.alertThresholds = f.alerts.split(',').map(Number);
  return changes;
}

function planOptions(cmd: Command): Command {
  return cmd
    .option('--name <name>', 'display name')
    .option('--base-usd <usd>', 'base price per period')
    .option('--sessions <n|unlimited>', 'sessions included per period')
    .option('--timeout-minutes <n>', 'inactivity that ends a session (default 30)')
    .option('--byok', 'customers must bring their own model key')
    .option('--managed', 'customers may use operator-paid models')
    .option('--metric <name=included:overageUsd[:unit]>', 'a metric with included units and an overage price (repeatable)', collectMetric)
    .option('--alerts <percentages>', 'alert thresholds, e.g. 75,90,95');
}

export function registerPlans(program: Command, cli: CliContext): void {
  const plans = program.command('plans').description('list, show, create and update plans');

  plans
    .command('list')
    .description('every plan, cheapest first')
    .action(async () => {
      const list = await cli.withQuota((quota) => quota.listPlans(), { read: true });
      cli.print({
        json: { plans: list.map(planJson) },
        human: () =>
          table(
            [
              { header: 'plan', value: (p: Plan) => p.id },
              { header: 'name', value: (p) => p.name },
              { header: 'base', align: 'right', value: (p) => usd(p.basePrice) },
              { header: 'sessions', align: 'right', value: sessionsLimit },
              { header: 'models', value: (p) => (p.managedModels ? 'managed' : 'BYOK only') },
              { header: 'metrics', value: (p) => [...p.metrics.keys()].join(', ') },
            ],
            list,
          ),
      });
    });

  plans
    .command('show <plan>')
    .description('one plan in full')
    .action(async (id: string) => {
      const input = parseInput(z.object({ id: planIdSchema }), { id });
      const p = await cli.withQuota((quota) => quota.getPlan(input.id), { read: true });
      cli.print({ json: planJson(p), human: () => planDetail(p) });
    });

  planOptions(plans.command('create <plan>').description('add a plan (required: --name, --base-usd, --sessions, and --byok or --managed)')).action(
    async (id: string, flags: PlanFlags) => {
      const missing = [
        flags.name === undefined && '--name',
        flags.baseUsd === undefined && '--base-usd',
        flags.sessions === undefined && '--sessions',
        !flags.byok && !flags.managed && '--byok or --managed',
      ].filter(Boolean);
      if (missing.length) throw new ValidationError(`plans create needs ${missing.join(', ')}`, { missing });
      const changes = planChanges(flags);
      const p = await cli.withQuota((quota) =>
        quota.createPlan({ ...changes, id } as PlanInput),
      );
      cli.print({ json: planJson(p), human: () => `Created plan ${p.id}\n${planDetail(p)}` });
    },
  );

  planOptions(plans.command('update <plan>').description('change fields of a plan; subscribers see it from their next run')).action(
    async (id: string, flags: PlanFlags) => {
      const input = parseInput(z.object({ id: planIdSchema }), { id });
      const changes = planChanges(flags);
      // Without a flag nothing would change, yet it printed "Updated plan" (and audited an update).
      if (Object.keys(changes).length === 0) {
        throw new ValidationError('plans update needs at least one of --name, --base-usd, --sessions, --timeout-minutes, --byok, --managed, --metric, --alerts', { field: 'changes' });
      }
      const p = await cli.withQuota((quota) => quota.updatePlan(input.id, changes));
      cli.print({ json: planJson(p), human: () => `Updated plan ${p.id}\n${planDetail(p)}` });
    },
  );
}
