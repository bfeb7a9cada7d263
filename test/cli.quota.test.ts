import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BACKENDS } from './support/backends';

/** The plan, session, usage, budget and invoice commands as a real subprocess (npm test builds first). */
const ROOT = path.resolve(__dirname, '..');
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-cli-quota-'));

function cli(db: string, args: string[]): Promise<{ code: number | null; out: Record<string, any>; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.FLOWISE_BILLING_DB;
    const child = spawn(process.execPath, [MAIN, '--db', db, ...args, '--json'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      expect(stdout.trimEnd().split('\n'), `${args.join(' ')}: ${stdout}${stderr}`).toHaveLength(1);
      resolve({ code, out: JSON.parse(stdout), stderr });
    });
  });
}

describe.each(BACKENDS)('quota CLI on $name', (backend) => {
  it('plans, subscribe, sessions touch, usage, quota refusal, upgrade', async () => {
    const db = backend.name === 'sqlite' ? path.join(tmp, `q-${Date.now()}.sqlite`) : await backend.freshTarget();
    expect((await cli(db, ['customers', 'create', 'acme'])).code).toBe(0);
    const plans = await cli(db, ['plans', 'list']);
    expect(plans.out.plans.map((p: any) => [p.id, p.sessionsIncluded, p.basePriceUsd])).toEqual([
      ['free', 25, '0'],
      ['starter', 1000, '29'],
      ['professional', 10000, '99'],
      ['enterprise', 100000, '499'],
    ]);
    expect((await cli(db, ['plans', 'update', 'free', '--sessions', '2'])).out).toMatchObject({ id: 'free', sessionsIncluded: 2 });
    expect((await cli(db, ['subscribe', 'acme', 'free'])).out).toMatchObject({ change: 'new', planId: 'free' });

    const first = await cli(db, ['sessions', 'touch', 'acme', 'chat-1']);
    expect(first.out).toMatchObject({ session: 'new', sessionsUsed: 1, sessionsLimit: 2, sessionsRemaining: 1 });
    expect((await cli(db, ['sessions', 'touch', 'acme', 'chat-1'])).out).toMatchObject({ session: 'existing', sessionId: first.out.sessionId });
    expect((await cli(db, ['sessions', 'touch', 'acme', 'chat-2'])).out).toMatchObject({ session: 'new', sessionsRemaining: 0 });
    const refused = await cli(db, ['sessions', 'touch', 'acme', 'chat-3']);
    expect(refused.code).toBe(1);
    expect(refused.out.error).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { sessionsUsed: 2, sessionsLimit: 2 } });
    expect(refused.out.error.details.periodEnd).toMatch(/^\d{4}-\d{2}-\d{2}T/);

    const usage = (await cli(db, ['usage', 'acme'])).out;
    expect(usage).toMatchObject({
      tier: 'free', sessionsUsed: 2, sessionsLimit: 2, sessionsRemaining: 0, usagePercentage: 100, isNearLimit: true, canMakeRequests: false, currentChargesUsd: '0.00',
    });
    expect(usage.alerts.map((a: any) => a.threshold)).toEqual([75, 90, 95]);

    expect((await cli(db, ['subscribe', 'acme', 'starter'])).out).toMatchObject({ change: 'upgrade', planId: 'starter' });
    expect((await cli(db, ['sessions', 'touch', 'acme', 'chat-3'])).out).toMatchObject({ session: 'new', tier: 'starter', sessionsUsed: 3 });
    expect((await cli(db, ['subscribe', 'acme', 'free'])).out).toMatchObject({ change: 'downgrade', planId: 'starter', pendingPlanId: 'free' });
    expect((await cli(db, ['alerts', 'acme'])).out.alerts).toHaveLength(3);
  });

  it('the $120 reference invoice, metric usage and budgets', async () => {
    const db = backend.name === 'sqlite' ? path.join(tmp, `i-${Date.now()}.sqlite`) : await backend.freshTarget();
    await cli(db, ['customers', 'create', 'api']);
    const plan = await cli(db, ['plans', 'create', 'api-pro', '--name', 'API Pro', '--base-usd', '100', '--sessions', 'unlimited', '--managed', '--metric', 'api_calls=10000:0.01:call']);
    expect(plan.out).toMatchObject({ id: 'api-pro', basePriceUsd: '100', metrics: { api_calls: { included: '10000', overageUsd: '0.01' } } });
    await cli(db, ['subscribe', 'api', 'api-pro']);
    expect((await cli(db, ['usage', 'record', 'api', 'api_calls', '12000', '--key', 'day-1'])).out).toMatchObject({ recorded: true });
    expect((await cli(db, ['usage', 'record', 'api', 'api_calls', '12000', '--key', 'day-1'])).out).toMatchObject({ recorded: false });
    const inv = (await cli(db, ['invoice', 'preview', 'api'])).out;
    expect(inv).toMatchObject({ basePriceUsd: '100.00', overageUsd: '20.00', totalUsd: '120.00', invoiceId: null });
    expect(inv.lines).toEqual([expect.objectContaining({ metric: 'api_calls', used: '12000', included: '10000', overage: '2000', amountUsd: '20.00' })]);
    const notYet = await cli(db, ['invoice', 'close', 'api']);
    expect(notYet.code).toBe(1);
    expect(notYet.out.error.code).toBe('VALIDATION_ERROR');

    await cli(db, ['topup', 'api', '10']);
    expect((await cli(db, ['budget', 'set', 'api', '1'])).out).toMatchObject({ budgetUsd: '1.00', spentUsd: '0.00' });
    expect((await cli(db, ['charge', 'api', 'Inference', '40'])).out).toMatchObject({ usd: '0.80' });
    const over = await cli(db, ['charge', 'api', 'Inference', '11']);
    expect(over.out.error).toMatchObject({ code: 'BUDGET_EXCEEDED', details: { budgetUsd: '1.00', spentUsd: '0.80', requiredUsd: '0.22' } });
    expect((await cli(db, ['balance', 'api'])).out.balanceUsd).toBe('9.20');
    expect((await cli(db, ['budget', 'set', 'api', 'none'])).out.budgetUsd).toBeNull();
    expect((await cli(db, ['charge', 'api', 'Inference', '11'])).code).toBe(0);

    const bad = await cli(db, ['budget', 'set', 'api', '-5']);
    expect(bad.out.error.code).toBe('VALIDATION_ERROR');
    expect((await cli(db, ['subscribe', 'api', 'gold'])).out.error.code).toBe('PLAN_NOT_FOUND');
  });

  it('plans update refuses --byok with --managed, or no change at all, changing nothing', async () => {
    const db = backend.name === 'sqlite' ? path.join(tmp, `u-${Date.now()}.sqlite`) : await backend.freshTarget();
    await cli(db, ['migrate']);
    const both = await cli(db, ['plans', 'update', 'free', '--byok', '--managed']);
    expect(both.code).toBe(1);
    expect(both.out.error).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'managedModels' } });
    expect((await cli(db, ['plans', 'show', 'free'])).out.managedModels).toBe(false);
    const nothing = await cli(db, ['plans', 'update', 'free']);
    expect(nothing.code).toBe(1);
    expect(nothing.out.error).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'changes' } });
  });

  it('a metric given twice is refused, not the last one kept', async () => {
    const db = backend.name === 'sqlite' ? path.join(tmp, `m-${Date.now()}.sqlite`) : await backend.freshTarget();
    const twice = await cli(db, ['plans', 'create', 'dup', '--name', 'Dup', '--base-usd', '1', '--sessions', '1', '--managed', '--metric', 'tokens=100:0.001', '--metric', 'tokens=200:0.002']);
    expect(twice.code).toBe(1);
    expect(twice.out.error).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'metrics', value: 'tokens' } });
  });

  it('--period and --at refuse a day the calendar does not have instead of reporting the next month', async () => {
    const db = backend.name === 'sqlite' ? path.join(tmp, `p-${Date.now()}.sqlite`) : await backend.freshTarget();
    await cli(db, ['customers', 'create', 'acme']);
    // Periods start on the first: without a subscription they would start on today's day of the month.
    await cli(db, ['subscribe', 'acme', 'free', '--anchor-day', '1']);
    for (const period of ['2026-02-30', '2026-04-31', '2026-02-29T10:00:00Z', '2026-13', '2026-00']) {
      const r = await cli(db, ['usage', 'acme', '--period', period]);
      expect(r.code, period).toBe(1);
      expect(r.out.error.code, period).toBe('VALIDATION_ERROR');
    }
    // Date.UTC reads the years 0–99 as 1900–1999: such a period was reported as 1999-02, now it is refused.
    expect((await cli(db, ['usage', 'acme', '--period', '0099-03'])).out.error.message).toMatch(/1970-01-01 or later/);
    expect((await cli(db, ['usage', 'acme', '--period', '2028-02-29'])).out.periodStart).toBe('2028-02-01T00:00:00.000Z');
    const at = await cli(db, ['usage', 'record', 'acme', 'api_calls', '1', '--key', 'u-1', '--at', '2026-02-30T10:00:00Z']);
    expect(at.out.error.code).toBe('VALIDATION_ERROR');
    expect((await cli(db, ['usage', 'record', 'acme', 'api_calls', '1', '--key', 'u-1', '--at', '2026-02-28T10:00:00Z'])).out).toMatchObject({ recorded: true });
  });
});
