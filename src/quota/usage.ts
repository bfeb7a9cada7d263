import { BillingError, ValidationError } from '../errors';
import { formatQuantity, type Nanos, parseQuantity } from '../money';
import { type Period, periodContaining } from '../period';
import { listAlerts } from './alerts';
import type { QuotaCore } from './core';
import { invoiceFor } from './invoices';
import { sessionsInPeriod } from './session-rows';
import { subFromRow } from './subscription-rows';
import { getSubscription } from './subscriptions';
import type { Alert, UsageReport } from './types';
import { usageReport } from './usage-report';

/** Usage: operator-defined metrics recorded per period, the usage report, its alerts, and the customer's budget. */

/** Records units of an operator-defined metric (e.g. api_calls) in the period containing `at`; idempotent by key. */
export async function recordUsage(
  q: QuotaCore,
  input: { customerId: string; metric: string; quantity: string | number; idempotencyKey: string; at?: Date },
): Promise<{ recorded: boolean }> {
  const quantity = parseQuantity(input.quantity);
  if (!/^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/.test(input.metric)) throw new ValidationError(`metric "${input.metric}" must be letters, digits and _ . : -`, { field: 'metric' });
  if (!input.idempotencyKey) throw new ValidationError('idempotency key is required', { field: 'idempotencyKey' });
  const at = input.at?.getTime() ?? q.clock();
  await q.ensurePlans();
  return q.write(async (c) => {
    await q.requireCustomer(c, input.customerId);
    const sub = await q.lockSub(c, input.customerId);
    const anchor = sub?.anchorDay ?? 1;
    const period = periodContaining(at, anchor);
    const [prior] = await c.query('SELECT customer_id, metric, quantity FROM billing_usage WHERE idempotency_key = ?', [input.idempotencyKey]);
    if (prior) {
      if (String(prior.customer_id) !== input.customerId || String(prior.metric) !== input.metric || String(prior.quantity) !== formatQuantity(quantity)) {
        throw new BillingError('IDEMPOTENCY_CONFLICT', `Idempotency key "${input.idempotencyKey}" was already used for different usage`, { idempotencyKey: input.idempotencyKey });
      }
      return { recorded: false };
    }
    await c.run('INSERT INTO billing_usage (customer_id, metric, quantity, period_start, idempotency_key, recorded_at) VALUES (?, ?, ?, ?, ?, ?)', [
      input.customerId,
      input.metric,
      formatQuantity(quantity),
      period.start,
      input.idempotencyKey,
      at,
    ]);
    await q.audit(c, 'recordUsage', input.customerId, { metric: input.metric, quantity: formatQuantity(quantity), idempotencyKey: input.idempotencyKey });
    return { recorded: true };
  });
}

export async function alerts(q: QuotaCore, customerId: string, period?: Period): Promise<Alert[]> {
  return q.d.read(async (c) => {
    // An unknown customer is not one without alerts: a typo must not read as "nothing fired".
    await q.requireCustomer(c, customerId);
    return listAlerts(c, customerId, period);
  });
}

/** The usage report for the current period, or for the period containing `at`. */
export async function usage(q: QuotaCore, customerId: string, opts: { at?: Date } = {}): Promise<UsageReport> {
  await q.ensurePlans();
  const now = q.clock();
  const at = opts.at?.getTime() ?? now;
  const bal = await q.ledger.balance(customerId);
  const budget = await q.ledger.budget(customerId);
  const view = await q.d.read(async (c) => {
    await q.requireCustomer(c, customerId);
    const [r] = await c.query('SELECT * FROM billing_subscriptions WHERE customer_id = ?', [customerId]);
    // No subscription yet: report what the first run will get (the default plan).
    const sub = r ? subFromRow(r) : q.newSub(customerId, q.defaultPlanId, new Date(now).getUTCDate(), now);
    // Read-only view of a period that has ended but not yet rolled.
    let planId = sub.planId;
    let status = sub.status;
    if (now >= sub.periodEnd) {
      if (sub.pendingPlanId) planId = sub.pendingPlanId;
      if (sub.cancelAtPeriodEnd) status = 'canceled';
    }
    const period = periodContaining(at, sub.anchorDay);
    const isCurrent = period.start === periodContaining(now, sub.anchorDay).start;
    const plan = await q.planIn(c, isCurrent ? planId : sub.planId);
    const sessionsUsed = await sessionsInPeriod(c, customerId, period.start);
    const inv = await invoiceFor(c, q.ledger.view(c), customerId, plan, period);
    return { ...usageReport({ customerId, plan, status, period, sessionsUsed, invoice: inv, balance: bal, budget }), period };
  });
  const { period, ...report } = view;
  return { ...report, alerts: await alerts(q, customerId, period) };
}

/** Sets (or clears with null) the customer's monthly budget, anchored like its subscription. */
export async function setBudget(q: QuotaCore, customerId: string, limit: Nanos | null): Promise<void> {
  const sub = await getSubscription(q, customerId);
  await q.ledger.setBudget({ customerId, limit, anchorDay: sub?.anchorDay ?? 1, actor: q.actor });
}
