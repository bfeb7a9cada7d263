import { describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { BACKENDS } from './support/backends';
import { spawnWorker } from './support/processes';

describe.each(BACKENDS)('crash safety on $name', (backend) => {
  it('SIGKILL mid-stream of holds and settles leaves a consistent ledger; sweeping frees every orphaned hold', async () => {
    const target = await backend.freshTarget();
    const setup = await backend.open(target);
    await setup.createCustomer({ id: 'crashy' });
    await setup.topUp({ customerId: 'crashy', amount: parseUsd('100'), idempotencyKey: 'seed' });
    await setup.close();

    for (let round = 0; round < 3; round++) {
      const w = spawnWorker('crash-worker.cjs', [target, 'crashy', String(round)]);
      await w.ready;
      // Kill only once work is flowing (the worker says so), a little later each round.
      for (let i = 0; i < 600 && !w.output().includes('flowing'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(w.output()).toContain('flowing');
      await new Promise((r) => setTimeout(r, 100 + round * 150));
      w.child.kill('SIGKILL');
      await w.result.catch(() => undefined);
      expect(w.child.signalCode).toBe('SIGKILL');
    }

    // After restart: the journal and the materialised balances agree, whatever was in flight.
    let now = Date.now();
    const ledger = await backend.open(target, { clock: () => now });
    const check = await ledger.checkInvariants();
    expect(check).toEqual({ ok: true, violations: [] });
    // The kills landed mid-stream: holds were left open by the dead processes.
    expect((await ledger.balance('crashy')).held).toBeGreaterThan(0n);
    const entries = await ledger.statement('crashy');
    expect(entries.filter((e) => e.type === 'settle').length).toBeGreaterThan(10);

    // Orphaned holds stop counting once past their expiry, and a sweep journals their release.
    now += 120_000;
    const bal = await ledger.balance('crashy');
    expect(bal.available).toBe(bal.balance);
    await ledger.sweepExpiredHolds();
    const after = await ledger.balance('crashy');
    expect(after).toMatchObject({ held: 0n, available: after.balance });
    // The whole journal, page by page: a fast worker can write more entries than one statement page holds.
    const journal: { amount: bigint; seq: number }[] = [];
    for (let page = await ledger.statement('crashy'); page.length > 0; page = await ledger.statement('crashy', { afterSeq: page[page.length - 1]!.seq })) journal.push(...page);
    expect(after.balance).toBe(journal.reduce((s, e) => s + e.amount, 0n));
    expect((await ledger.checkInvariants()).ok).toBe(true);
    // Every settled charge is whole: hold, settle and charge row were committed together or not at all.
    for (const e of (await ledger.statement('crashy')).filter((x) => x.type === 'settle').slice(0, 20)) {
      const ch = await ledger.getCharge(e.chargeId!);
      expect(ch.amount).toBe(-e.amount);
      expect((await ledger.getHold(ch.holdId!)).status).toBe('settled');
    }
    await ledger.close();
  });
});
