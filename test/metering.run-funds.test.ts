import { describe, expect, it, vi } from 'vitest';
import { CustomerFunds } from '../src/metering/run-funds';

/** The waiting rule of one customer's runs in one process (run-funds.ts), without a ledger. */
describe('CustomerFunds: who waits for money, and when waiting ends', () => {
  it('a refusal with nobody in flight is final at once', async () => {
    const f = new CustomerFunds();
    expect(await f.wait({}, false, 1000, f.generation)).toBe('refuse');
  });

  it('a refusal that crossed a run ending (money back, nobody left in flight) retries instead of refusing', async () => {
    const f = new CustomerFunds();
    const a = {};
    f.enter(a);
    const since = f.generation; // taken as the refused write starts
    f.leave(a); // a ends while the refusal is on its way back
    expect(await f.wait({}, false, 1000, since)).toBe('retry');
    // Seen after that return, the same refusal is final.
    expect(await f.wait({}, false, 1000, f.generation)).toBe('refuse');
  });

  it('a refusal whose last run in flight ends right after it started waiting (the same batch) retries once the admissions’ deferral is up', async () => {
    const f = new CustomerFunds();
    const a = {};
    f.enter(a);
    const waiting = f.wait({}, false, 1000, f.generation);
    f.leave(a); // its release committed in the refused hold's batch: both promises settle in the same turn
    expect(await waiting).toBe('retry');
  });

  it('a waiting admission is woken when a run in flight ends; a step of an admitted run goes first', async () => {
    const f = new CustomerFunds();
    const a = {};
    const b = {};
    f.enter(a);
    f.enter(b);
    const order: string[] = [];
    const admission = f.wait({}, false, 5000, f.generation).then((o) => order.push(`admission:${o}`));
    const step = f.wait(b, true, 5000, f.generation).then((o) => order.push(`step:${o}`));
    await new Promise((r) => setImmediate(r));
    expect(f.waiting).toBe(true);
    f.leave(a);
    await Promise.all([admission, step]);
    expect(order).toEqual(['step:retry', 'admission:retry']);
  });

  it('every run in flight waiting for money: the most recently admitted is refused, the others keep waiting', async () => {
    const f = new CustomerFunds();
    const a = {};
    const b = {};
    f.enter(a);
    f.enter(b);
    const outcomes: Record<string, string> = {};
    const wa = f.wait(a, true, 5000, f.generation).then((o) => (outcomes.a = o));
    const wb = f.wait(b, true, 5000, f.generation).then((o) => (outcomes.b = o));
    await wb;
    expect(outcomes).toEqual({ b: 'refuse' });
    f.leave(b); // b's refusal ends it: its reservation comes back
    await wa;
    expect(outcomes).toEqual({ a: 'retry', b: 'refuse' });
  });

  it('waiting ends at the deadline with a refusal', async () => {
    const f = new CustomerFunds();
    const a = {};
    f.enter(a);
    const t = Date.now();
    expect(await f.wait({}, false, 60, f.generation)).toBe('refuse');
    expect(Date.now() - t).toBeGreaterThanOrEqual(50);
  });
});

describe('CustomerFunds: forgetting a quiet customer', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('runs one after another keep one timer, not one per run', () => {
    const f = new CustomerFunds(() => undefined, 60_000);
    const made = vi.spyOn(globalThis, 'setTimeout');
    try {
      for (let i = 0; i < 1000; i++) {
        const run = {};
        f.enter(run);
        f.leave(run);
      }
      expect(made).toHaveBeenCalledTimes(1);
    } finally {
      made.mockRestore();
    }
  });

  it('is forgotten once quiet for the whole period, counted from the last run that left', async () => {
    let forgotten = 0;
    const f = new CustomerFunds(() => forgotten++, 80);
    const a = {};
    f.enter(a);
    f.leave(a); // quiet from here: the timer is armed
    await sleep(50);
    const b = {};
    f.enter(b);
    f.leave(b); // quiet again: 80 ms from now, not from a's leaving
    await sleep(50); // a's timer has fired, b's quiet is 50 ms old
    expect(forgotten).toBe(0);
    await sleep(60);
    expect(forgotten).toBe(1);
  });

  it('a run in flight when the timer fires keeps the customer; its leaving starts the period again', async () => {
    let forgotten = 0;
    const f = new CustomerFunds(() => forgotten++, 40);
    const a = {};
    f.enter(a);
    f.leave(a);
    const b = {};
    f.enter(b);
    await sleep(70);
    expect(forgotten).toBe(0);
    f.leave(b);
    await sleep(20);
    expect(forgotten).toBe(0);
    await sleep(50);
    expect(forgotten).toBe(1);
  });
});
