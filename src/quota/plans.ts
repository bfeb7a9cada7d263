import { z } from 'zod';
import { ValidationError } from '../errors';
import { type Nanos, parseScaled, parseUsd, USD_DECIMALS } from '../money';
import { decimalSchema, NO_CONTROL_CHARACTERS } from '../schemas';

const decimal = (what: string) => decimalSchema(what);

export const planIdSchema = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'plan id must be 1–64 lower-case letters, digits, "_" or "-"');

/**
 * A metric with included units and an overage price per unit. Metric names:
 * a ChargeType ("Inference"…), "tokens", "compute_minutes",
 * "storage_gb_months", or any operator-defined name recorded with `usage record`.
 */
const metricSchema = z
  .object({
    included: decimal('included'),
    overageUsd: decimal('overageUsd'),
    unit: z.string().min(1).max(40).default('unit'),
  })
  .strict();

/** Alert thresholds (% of sessions or budget) of a plan that names none. */
export const DEFAULT_ALERT_THRESHOLDS: readonly number[] = [75, 90, 95];

const planName = z.string().min(1).max(100);

export const planSchema = z
  .object({
    id: planIdSchema,
    // Shown in tables, CSV rows, invoices and Stripe: a newline or an escape would break or forge them.
    name: planName.regex(NO_CONTROL_CHARACTERS, 'plan name must not contain control characters (newlines, tabs, escapes)'),
    basePriceUsd: decimal('basePriceUsd'),
    /** Sessions per period; null means unlimited. */
    sessionsIncluded: z.number().int().min(0).max(1_000_000_000).nullable(),
    sessionTimeoutMinutes: z.number().int().min(1).max(24 * 60).default(30),
    /** true: operator-paid models allowed; false: bring your own key only. */
    managedModels: z.boolean(),
    metrics: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/, 'metric names are letters, digits and _ . : -'), metricSchema).default({}),
    alertThresholds: z
      .array(z.number().int().min(1).max(100))
      .max(10)
      .default([...DEFAULT_ALERT_THRESHOLDS])
      .refine((a) => new Set(a).size === a.length, 'thresholds must be distinct'),
  })
  .strict();

/** A plan as stored: one written before names refused control characters stays readable (and editable). */
const storedPlanSchema = planSchema.extend({ name: planName });

export type PlanDocument = z.output<typeof planSchema>;
export type PlanInput = z.input<typeof planSchema>;

export interface Plan {
  readonly id: string;
  readonly name: string;
  readonly basePrice: Nanos;
  readonly sessionsIncluded: number | null;
  readonly sessionTimeoutMs: number;
  readonly managedModels: boolean;
  readonly metrics: ReadonlyMap<string, { included: { units: bigint; scale: number }; overage: Nanos; unit: string }>;
  readonly alertThresholds: readonly number[];
  readonly document: PlanDocument;
}

/** `stored`: a document read back from the database (or kept from it), not new input. */
export function parsePlan(input: unknown, stored = false): Plan {
  const r = (stored ? storedPlanSchema : planSchema).safeParse(input);
  if (!r.success) throw ValidationError.fromZod('plan', r.error);
  const d = r.data;
  const metrics = new Map<string, { included: { units: bigint; scale: number }; overage: Nanos; unit: string }>();
  for (const [name, m] of Object.entries(d.metrics)) {
    metrics.set(name, { included: { units: parseScaled(m.included, { scale: USD_DECIMALS }), scale: USD_DECIMALS }, overage: parseUsd(m.overageUsd), unit: m.unit });
  }
  return {
    id: d.id,
    name: d.name,
    basePrice: parseUsd(d.basePriceUsd),
    sessionsIncluded: d.sessionsIncluded,
    sessionTimeoutMs: d.sessionTimeoutMinutes * 60_000,
    managedModels: d.managedModels,
    metrics,
    alertThresholds: [...d.alertThresholds].sort((a, b) => a - b),
    document: d,
  };
}

const storedPlans = new Map<string, Plan>();
/**
 * A plan from its stored JSON document, parsed once per distinct document:
 * every admission reads its plan, and validating it each time was a
 * noticeable share of an admission's CPU. Plans are treated as immutable.
 */
export function storedPlan(document: string): Plan {
  let plan = storedPlans.get(document);
  if (!plan) {
    plan = parsePlan(JSON.parse(document), true);
    if (storedPlans.size >= 256) storedPlans.clear();
    storedPlans.set(document, plan);
  }
  return plan;
}

/** The four tiers every ledger starts with; operators edit them or add their own. */
export const DEFAULT_PLANS: readonly PlanInput[] = [
  { id: 'free', name: 'Free', basePriceUsd: '0', sessionsIncluded: 25, managedModels: false },
  { id: 'starter', name: 'Starter', basePriceUsd: '29', sessionsIncluded: 1_000, managedModels: true },
  { id: 'professional', name: 'Professional', basePriceUsd: '99', sessionsIncluded: 10_000, managedModels: true },
  { id: 'enterprise', name: 'Enterprise', basePriceUsd: '499', sessionsIncluded: 100_000, managedModels: true },
];

/** Orders plans for upgrade/downgrade: higher base price is higher; on a tie, more sessions. */
export function comparePlans(a: Plan, b: Plan): number {
  if (a.basePrice !== b.basePrice) return a.basePrice < b.basePrice ? -1 : 1;
  const sa = a.sessionsIncluded ?? Number.POSITIVE_INFINITY;
  const sb = b.sessionsIncluded ?? Number.POSITIVE_INFINITY;
  return sa === sb ? 0 : sa < sb ? -1 : 1;
}
