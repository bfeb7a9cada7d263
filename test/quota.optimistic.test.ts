import { describe, expect, it } from 'vitest';
import type { Dialect, SqlConnection } from '../src/ledger/dialect';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { fastPathCeiling } from '../src/quota/optimistic-admission';
import { QuotaService } from '../src/quota/service';
import { BACKENDS } from './support/backends';
import { admitFromProcesses } from './support/processes';

// The admission that does not hold the subscription row across a round trip (PostgreSQL): it is taken in the
// common case, leaves every other case to the locked admission, and stays exact under real concurrency.

describe('fastPathCeiling: how far a new session may count without the locked admission', () => {
  it('stops below the lowest threshold not yet fired, and at the limit', () => {
    expect(fastPathCeiling({ sessionsIncluded: 100, alertThresholds: [75, 90, 95] }, new Set())).toBe(74);
    expect(fastPathCeiling({ sessionsIncluded: 100, alertThresholds: [75, 90, 95] }, new Set([75]))).toBe(89);
    expect(fastPathCeiling({ sessionsIncluded: 100, alertThresholds: [75, 90, 95] }, new Set([75, 90, 95]))).toBe(100);
    // 25 sessions: 18/25 = 72 %, 19/25 = 76 %
    expect(fastPathCeiling({ sessionsIncluded: 25, alertThresholds: [75] }, new Set())).toBe(18);
    expect(fastPathCeiling({ sessionsIncluded: 30, alertThresholds: [] }, new Set())).toBe(30);
    expect(fastPathCeiling({ sessionsIncluded: 0, alertThresholds: [75] }, new Set())).toBe(0);
    expect(fastPathCeiling({ sessionsIncluded: null, alertThresholds: [75] }, new Set())).toBeNull();
  });
});

const pg = BACKENDS.find((b) => b.name === 'postgres');

describe.skipIf(!pg)('optimistic admission on PostgreSQL', () => {
  const backend = pg!;

  /** The ledger with a dialect that records the statements of its write transactions. */
  function recorded(ledger: SqlLedger): { ledger: SqlLedger; statements: string[] } {
    const statements: string[] = [];
    const d = ledger.dialect;
    const wrap = (c: SqlConnection): SqlConnection => ({
      query: (sql, params, opts) => (statements.push(sql), c.query(sql, params, opts)),
      run: (sql, params) => (statements.push(sql), c.run(sql, params)),
    });
    const dialect: Dialect = { ...d, writeTransaction: (fn) => d.writeTransaction((c) => fn(wrap(c))) };
    return { ledger: Object.create(ledger, { dialect: { value: dialect } }) as SqlLedger, statements };
  }
  const locks = (statements: string[]) => statements.filter((s) => /FROM billing_subscriptions WHERE customer_id = \? FOR UPDATE/.test(s)).length;

  async function setup(plan: { sessionsIncluded: number | null; alertThresholds?: number[] }) {
    const target = await backend.freshTarget();
    const ledger = await backend.open(target);
    await ledger.createCustomer({ id: 'opt' });
    await new QuotaService(ledger).updatePlan('free', plan);
    return { target, ledger };
  }

  it('new and continuing sessions take no subscription lock; first admission, alerts and refusals go the locked way', async () => {
    const { ledger } = await setup({ sessionsIncluded: 8, alertThresholds: [50] });
    const r = recorded(ledger);
    const quota = new QuotaService(r.ledger);
    const at = Date.now();
    const step = async (conversationId: string, minutes = 0) => {
      const before = r.statements.length;
      const a = await quota.admitRun({ customerId: 'opt', conversationId, at: new Date(at + minutes * 60_000) });
      return { a, locked: locks(r.statements.slice(before)) };
    };
    // The first run subscribes the customer: locked.
    const first = await step('c1');
    expect(first.a).toMatchObject({ session: 'new', sessionsUsed: 1 });
    expect(first.locked).toBeGreaterThan(0);
    // A second message of c1 and a new conversation: no lock.
    expect(await step('c1', 1)).toMatchObject({ a: { session: 'existing', sessionsUsed: 1 }, locked: 0 });
    expect(await step('c2', 2)).toMatchObject({ a: { session: 'new', sessionsUsed: 2, sessionsRemaining: 6 }, locked: 0 });
    expect(await step('c3', 3)).toMatchObject({ a: { session: 'new', sessionsUsed: 3 }, locked: 0 });
    // The 4th of 8 reaches 50 %: the alert is fired by the locked admission, once.
    const alerting = await step('c4', 4);
    expect(alerting.a).toMatchObject({ session: 'new', sessionsUsed: 4 });
    expect(alerting.locked).toBeGreaterThan(0);
    expect(await step('c5', 5)).toMatchObject({ a: { session: 'new', sessionsUsed: 5 }, locked: 0 });
    // c1's session expired after 30 idle minutes: a new session, without a lock.
    expect(await step('c1', 40)).toMatchObject({ a: { session: 'new', sessionsUsed: 6 }, locked: 0 });
    await step('c6', 41);
    await step('c7', 42);
    expect((await quota.usage('opt')).sessionsUsed).toBe(8);
    // The quota is used up: the refusal is the locked admission's, recorded as before.
    const before = r.statements.length;
    await expect(quota.admitRun({ customerId: 'opt', conversationId: 'c9', at: new Date(at + 43 * 60_000) })).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect(locks(r.statements.slice(before))).toBeGreaterThan(0);
    // A continuing session still runs at the limit, without a lock.
    expect(await step('c7', 44)).toMatchObject({ a: { session: 'existing', sessionsUsed: 8, sessionsRemaining: 0 }, locked: 0 });
    const alerts = await quota.alerts('opt');
    expect(alerts.map((x) => x.threshold)).toEqual([50]);
    await ledger.close();
  });

  it('a continuing session is admitted while another transaction holds the subscription row', async () => {
    const { ledger } = await setup({ sessionsIncluded: 100, alertThresholds: [] });
    const quota = new QuotaService(ledger);
    await quota.admitRun({ customerId: 'opt', conversationId: 'held' });
    // Lock the row from a connection of the ledger's own pool, in a transaction left open.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holding = ledger.dialect.writeTransaction(async (c) => {
      await c.query("SELECT * FROM billing_subscriptions WHERE customer_id = 'opt' FOR UPDATE");
      locked();
      await released;
    });
    await isLocked;
    const t0 = Date.now();
    const a = await quota.admitRun({ customerId: 'opt', conversationId: 'held' });
    expect(a.session).toBe('existing');
    expect(Date.now() - t0).toBeLessThan(2000);
    // A new session needs the row: it waits for the holder, then counts.
    let newDone = false;
    const fresh = quota.admitRun({ customerId: 'opt', conversationId: 'other' }).then((x) => ((newDone = true), x));
    await new Promise((r) => setTimeout(r, 300));
    expect(newDone).toBe(false);
    release();
    await holding;
    expect(await fresh).toMatchObject({ session: 'new', sessionsUsed: 2 });
    await ledger.close();
  });

  it('concurrent admissions in one process share a transaction whose commit waits for no log flush, and count exactly', async () => {
    const { ledger } = await setup({ sessionsIncluded: 40, alertThresholds: [] });
    const d = ledger.dialect;
    const transactions: (string | undefined)[] = [];
    const dialect: Dialect = { ...d, writeTransaction: (fn, opts) => (transactions.push(opts?.durability), d.writeTransaction(fn, opts)) };
    const quota = new QuotaService(Object.create(ledger, { dialect: { value: dialect } }) as SqlLedger);
    await quota.admitRun({ customerId: 'opt', conversationId: 'first' });
    transactions.length = 0;
    const out = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => quota.admitRun({ customerId: 'opt', conversationId: `burst-${i}` })));
    const admitted = out.filter((o) => o.status === 'fulfilled').map((o) => o.value);
    expect(admitted).toHaveLength(39);
    expect(admitted.every((a) => a.session === 'new')).toBe(true);
    expect(new Set(admitted.map((a) => a.sessionsUsed))).toEqual(new Set(Array.from({ length: 39 }, (_, i) => i + 2)));
    expect(out.filter((o) => o.status === 'rejected').map((o) => (o.reason as { code?: string }).code)).toEqual(Array(21).fill('QUOTA_EXCEEDED'));
    expect((await quota.usage('opt')).sessionsUsed).toBe(40);
    // The 39 went in shared transactions (one each before grouping); the 21 refusals are the locked admission's, one each.
    const deferred = transactions.filter((t) => t === 'deferred').length;
    expect(deferred).toBeGreaterThan(0);
    expect(deferred).toBeLessThan(10);
    // Deferred durability is the admission's transaction's own: the next transaction on the pool waits for its flush again.
    const setting = (opts?: { durability: 'deferred' }) => d.writeTransaction((c) => c.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s"), opts);
    expect(await setting({ durability: 'deferred' })).toEqual([{ s: 'off' }]);
    for (let i = 0; i < 4; i++) expect(await setting()).toEqual([{ s: 'on' }]);
    await ledger.close();
  });

  it('two first messages of one conversation in one group make one session', async () => {
    const { ledger } = await setup({ sessionsIncluded: 100, alertThresholds: [] });
    const quota = new QuotaService(ledger);
    await quota.admitRun({ customerId: 'opt', conversationId: 'warm' });
    const both = await Promise.all([0, 1, 2].map(() => quota.admitRun({ customerId: 'opt', conversationId: 'twice' })));
    expect(both.filter((a) => a.session === 'new')).toHaveLength(1);
    expect(new Set(both.map((a) => a.sessionId)).size).toBe(1);
    expect((await quota.usage('opt')).sessionsUsed).toBe(2);
    await ledger.close();
  });

  it('at limit − 1 with no alert due, 100 new conversations from 4 processes admit exactly one', async () => {
    const { target, ledger } = await setup({ sessionsIncluded: 30, alertThresholds: [] });
    const quota = new QuotaService(ledger);
    for (let i = 0; i < 29; i++) await quota.admitRun({ customerId: 'opt', conversationId: `pre-${i}` });
    const out = await admitFromProcesses(target, 'opt', ['p0', 'p1', 'p2', 'p3'], 25);
    expect(out.errors).toEqual([]);
    expect(out.admitted).toHaveLength(1);
    expect(out.refused).toBe(99);
    expect((await quota.usage('opt')).sessionsUsed).toBe(30);
    await ledger.close();
  });

  it('first messages of one conversation from 4 processes, far from the limit, make one session', async () => {
    const { target, ledger } = await setup({ sessionsIncluded: 1000, alertThresholds: [] });
    const quota = new QuotaService(ledger);
    await quota.admitRun({ customerId: 'opt', conversationId: 'warm' });
    const { admitted, errors } = await admitFromProcesses(target, 'opt', Array(4).fill('same'), 10);
    expect(errors).toEqual([]);
    expect(admitted).toHaveLength(40);
    expect(admitted.filter((a) => a.session === 'new')).toHaveLength(1);
    expect(new Set(admitted.map((a) => a.sessionId)).size).toBe(1);
    expect((await quota.usage('opt')).sessionsUsed).toBe(2);
    await ledger.close();
  });
});
