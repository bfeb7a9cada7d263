import type { QuotaCore } from './core';
import { type Plan, type PlanInput, parsePlan } from './plans';
import { allPlans, insertPlan, replacePlan } from './plan-rows';

/** The operator's plans: the default tiers seeded once, then created and edited with an audit record each. */

export async function listPlans(q: QuotaCore): Promise<Plan[]> {
  await q.ensurePlans();
  return q.d.read(allPlans);
}

export async function getPlan(q: QuotaCore, id: string): Promise<Plan> {
  await q.ensurePlans();
  return q.d.read((c) => q.planIn(c, id));
}

export async function createPlan(q: QuotaCore, input: PlanInput): Promise<Plan> {
  const plan = parsePlan(input);
  await q.ensurePlans();
  return q.write(async (c) => {
    await insertPlan(c, plan, q.clock());
    await q.audit(c, 'createPlan', null, { planId: plan.id });
    return plan;
  });
}

/** Replaces fields of a plan; takes effect for every subscriber from the next admission. */
export async function updatePlan(q: QuotaCore, id: string, changes: Partial<PlanInput>): Promise<Plan> {
  await q.ensurePlans();
  return q.write(async (c) => {
    const current = await q.planIn(c, id);
    // A name kept from the stored plan is not new input: an old one with a control character does not block other edits.
    const plan = parsePlan({ ...current.document, ...changes, id }, changes.name === undefined);
    await replacePlan(c, plan, q.clock());
    await q.audit(c, 'updatePlan', null, { planId: id, changes });
    return plan;
  });
}
