import { BillingError, ValidationError } from '../errors';
import type { SqlConnection } from '../ledger/dialect';
import { comparePlans, DEFAULT_PLANS, type Plan, parsePlan, storedPlan } from './plans';

/** billing_plans: one JSON document per plan, validated on every read. */

/** Inserts the default tiers that are missing (never overwrites an operator's edits). */
export async function seedDefaultPlans(c: SqlConnection, now: number): Promise<void> {
  for (const p of DEFAULT_PLANS) {
    const plan = parsePlan(p);
    await c.run('INSERT INTO billing_plans (id, document, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING', [plan.id, JSON.stringify(plan.document), now, now]);
  }
}

export async function allPlans(c: SqlConnection): Promise<Plan[]> {
  const rows = await c.query('SELECT document FROM billing_plans');
  return rows.map((r) => parsePlan(JSON.parse(String(r.document)), true)).sort(comparePlans);
}

export async function planIn(c: SqlConnection, id: string): Promise<Plan> {
  const [r] = await c.query('SELECT document FROM billing_plans WHERE id = ?', [id]);
  if (!r) throw new BillingError('PLAN_NOT_FOUND', `Plan "${id}" does not exist`, { planId: id });
  return storedPlan(String(r.document));
}

export async function insertPlan(c: SqlConnection, plan: Plan, now: number): Promise<void> {
  const [exists] = await c.query('SELECT id FROM billing_plans WHERE id = ?', [plan.id]);
  if (exists) throw new ValidationError(`Plan "${plan.id}" already exists; use update`, { field: 'id', planId: plan.id });
  await c.run('INSERT INTO billing_plans (id, document, created_at, updated_at) VALUES (?, ?, ?, ?)', [plan.id, JSON.stringify(plan.document), now, now]);
}

export async function replacePlan(c: SqlConnection, plan: Plan, now: number): Promise<void> {
  await c.run('UPDATE billing_plans SET document = ?, updated_at = ? WHERE id = ?', [JSON.stringify(plan.document), now, plan.id]);
}
