import { afterAll, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { BACKENDS } from './support/backends';
import { spawnWorker, startTogether } from './support/processes';

const CENT = parseUsd('0.01');

describe.each(BACKENDS)('no overdraft under concurrency on $name', (backend) => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });

  async function fresh(fitting: number) {
    const target = await backend.freshTarget();
    const ledger = await backend.open(target);
    opened.push(ledger);
    await ledger.createCustomer({ id: 'racer' });
    await ledger.topUp({ customerId: 'racer', amount: CENT * BigInt(fitting), idempotencyKey: 'seed' });
    return { target, ledger };
  }

  async function expectExactlyFitted(ledger: SqlLedger, fitting: number) {
    const bal = await ledger.balance('racer');
    expect(bal.balance).toBeGreaterThanOrEqual(0n);
    expect(bal.available).toBeGreaterThanOrEqual(0n);
    const entries = await ledger.statement('racer');
    expect(entries.reduce((s, e) => s + e.amount, 0n)).toBe(bal.balance);
    expect(entries.filter((e) => e.type === 'hold')).toHaveLength(fitting);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
  }

  it('1,000 concurrent holds from one process: exactly N succeed', async () => {
    const N = 600;
    const { ledger } = await fresh(N);
    const results = await Promise.allSettled(
      Array.from({ length: 1000 }, (_, i) => ledger.hold({ customerId: 'racer', amount: CENT, idempotencyKey: `h${i}` })),
    );
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.filter((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'INSUFFICIENT_FUNDS').length;
    expect([ok, refused]).toEqual([N, 1000 - N]);
    expect((await ledger.balance('racer')).available).toBe(0n);
    await expectExactlyFitted(ledger, N);
  });

  it('1,000 concurrent hold+settle pairs with replays: the journal sums to the balance', async () => {
    const N = 400;
    const { ledger } = await fresh(N);
    const pairs = await Promise.allSettled(
      Array.from({ length: 1000 }, async (_, i) => {
        const key = `h${i % 800}`; // 200 replays of earlier keys race their originals
        const h = await ledger.hold({ customerId: 'racer', amount: CENT, idempotencyKey: key });
        return ledger.settle({ holdId: h.id, amount: CENT / 2n, idempotencyKey: `${key}:s` });
      }),
    );
    const settledIds = new Set(pairs.flatMap((p) => (p.status === 'fulfilled' ? [p.value.id] : [])));
    const charges = (await ledger.statement('racer')).filter((e) => e.type === 'settle');
    expect(charges).toHaveLength(settledIds.size);
    expect((await ledger.balance('racer')).balance).toBe(CENT * BigInt(N) - (CENT / 2n) * BigInt(settledIds.size));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  const procs = backend.name === 'postgres' ? 4 : 2;
  it(`the same race from ${procs} OS processes: exactly N succeed`, async () => {
    const N = 500;
    const perProcess = 300;
    const { target, ledger } = await fresh(N);
    const workers = Array.from({ length: procs }, (_, p) =>
      spawnWorker('ledger-worker.cjs', [target, 'racer', String(perProcess), String(CENT), `p${p}`, 'settle']),
    );
    await startTogether(workers);
    const counts = (await Promise.all(workers.map((w) => w.result))).map((line) => JSON.parse(line));
    const ok = counts.reduce((s, c) => s + c.ok, 0);
    const refused = counts.reduce((s, c) => s + c.insufficient, 0);
    expect(counts.flatMap((c) => c.errors)).toEqual([]);
    // Settles free part of each hold, so later holds may fit too: at least N succeed, and never more than the money allows.
    expect(ok + refused).toBe(procs * perProcess);
    const entries = await ledger.statement('racer');
    const spent = -entries.filter((e) => e.type === 'settle').reduce((s, e) => s + e.amount, 0n);
    expect(spent).toBeLessThanOrEqual(CENT * BigInt(N));
    expect(entries.filter((e) => e.type === 'hold')).toHaveLength(ok);
    await expectExactlyFitted(ledger, ok);
  });

  it(`holds only (no settles) from ${procs} OS processes: exactly N of ${procs * 300}`, async () => {
    const N = 350;
    const { target, ledger } = await fresh(N);
    const workers = Array.from({ length: procs }, (_, p) => spawnWorker('ledger-worker.cjs', [target, 'racer', '300', String(CENT), `q${p}`]));
    await startTogether(workers);
    const counts = (await Promise.all(workers.map((w) => w.result))).map((line) => JSON.parse(line));
    expect(counts.reduce((s, c) => s + c.ok, 0)).toBe(N);
    expect(counts.reduce((s, c) => s + c.insufficient, 0)).toBe(procs * 300 - N);
    await expectExactlyFitted(ledger, N);
  });
});
