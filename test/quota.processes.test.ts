import { describe, expect, it } from 'vitest';
import { QuotaService } from '../src/quota/service';
import { BACKENDS } from './support/backends';
import { admitFromProcesses } from './support/processes';

describe.each(BACKENDS)('session quota across OS processes on $name', (backend) => {
  const procs = backend.name === 'postgres' ? 4 : 2;

  async function setup(limit: number, preUsed: number) {
    const target = await backend.freshTarget();
    const ledger = await backend.open(target);
    const quota = new QuotaService(ledger);
    await ledger.createCustomer({ id: 'crowd' });
    await quota.updatePlan('free', { sessionsIncluded: limit });
    for (let i = 0; i < preUsed; i++) await quota.admitRun({ customerId: 'crowd', conversationId: `pre-${i}` });
    return { target, ledger, quota };
  }

  it(`at limit − 1, 100 new conversations from ${procs} processes admit exactly one`, async () => {
    const { target, ledger, quota } = await setup(30, 29);
    const out = await admitFromProcesses(target, 'crowd', Array.from({ length: procs }, (_, p) => `p${p}`), 100 / procs);
    expect(out.errors).toEqual([]);
    expect(out.admitted).toHaveLength(1);
    expect(out.refused).toBe(99);
    expect((await quota.usage('crowd')).sessionsUsed).toBe(30);
    await ledger.close();
  });

  it(`first messages of one conversation from ${procs} processes make one session`, async () => {
    const { target, ledger, quota } = await setup(25, 0);
    const { admitted } = await admitFromProcesses(target, 'crowd', Array(procs).fill('same'), 5);
    expect(admitted).toHaveLength(procs * 5);
    expect(admitted.filter((a) => a.session === 'new')).toHaveLength(1);
    expect(new Set(admitted.map((a) => a.sessionId)).size).toBe(1);
    expect((await quota.usage('crowd')).sessionsUsed).toBe(1);
    await ledger.close();
  });
});
