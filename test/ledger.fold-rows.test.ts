import { afterAll, describe, expect, it } from 'vitest';
import type { Dialect } from '../src/ledger/dialect';
import { postgresDialect } from '../src/ledger/postgres';
import { encodeResult, iso } from '../src/ledger/rows';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { sqliteDialect } from '../src/ledger/sqlite';
import { parseUsd } from '../src/money';
import { parseRateCard } from '../src/pricing/ratecard';
import defaultDoc from '../ratecards/default.json';
import { BACKENDS, type Backend } from './support/backends';
import { migrate as legacyMigrate } from './support/legacy/ledger-migrations-v4';

/**
 * Schema step 6 (src/ledger/fold-rows.ts): an operation's idempotency result
 * and audit line kept in its journal entry. What callers see must not change:
 * audit lines keep one numbering in write order wherever they are kept, and
 * replays return the stored result byte for byte.
 */

const T0 = Date.parse('2026-11-23T10:00:00Z');
const usd = parseUsd;

async function count(l: SqlLedger, sql: string): Promise<number> {
  const [r] = await l.dialect.read((c) => c.query(sql));
  return Number(r!.n);
}

describe.each(BACKENDS)('journal entries carry their idempotency result and audit line ($name)', (backend: Backend) => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });

  it('audit lines in entries and in the audit table share one numbering, in write order; replays answer byte for byte, also after a restart', async () => {
    let now = T0;
    const target = await backend.freshTarget();
    const l = await backend.open(target, { clock: () => now });
    opened.push(l);

    // One batch holding a new customer (a line of its own) and its top-up: every line of that batch goes to the audit table.
    const [, top] = await Promise.all([l.createCustomer({ id: 'acme' }), l.topUp({ customerId: 'acme', amount: usd('10'), idempotencyKey: 'top' })]);
    const h1 = await l.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h1', rateCardVersion: 'v1', chargeType: 'Inference', quantity: '2' });
    const s1 = await l.settle({ holdId: h1.id, amount: usd('0.04'), idempotencyKey: 's1', metadata: { flow: 'f' } });
    await l.importRateCard(parseRateCard({ ...defaultDoc, version: 'v2' }), { actor: 'cli' });
    // A budget and a hold in one batch, then a hold added to under another rate card (its line differs from its entry's).
    const [, h2] = await Promise.all([l.setBudget({ customerId: 'acme', limit: usd('100') }), l.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h2', rateCardVersion: 'v1' })]);
    const grown = await l.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h2+', addTo: h2.id, rateCardVersion: 'v2' });
    const c1 = await l.charge({ customerId: 'acme', amount: usd('0.5'), idempotencyKey: 'c1', chargeType: 'Inference', quantity: '25', rateCardVersion: 'v2' });
    const r1 = await l.refund({ chargeId: c1.id, amount: usd('0.1'), idempotencyKey: 'r1' });
    const short = await l.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h3', ttlMs: 1_000 });
    now += 2_000;
    // The next operation journals the expiry first; releasing the expired hold writes no entry (its result has a row of its own).
    const h4 = await l.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h4' });
    const late = await l.release({ holdId: short.id, idempotencyKey: 'rel3' });
    expect(late.status).toBe('expired');
    await l.release({ holdId: h4.id, idempotencyKey: 'rel4' });

    const audit = await l.audit();
    expect(audit.map((a) => [a.operation, a.idempotencyKey, a.rateCardVersion])).toEqual([
      ['createCustomer', 'customer:acme', null],
      ['topUp', 'top', null],
      ['hold', 'h1', 'v1'],
      ['settle', 's1', 'v1'],
      ['importRateCard', 'ratecard:importRateCard:v2', 'v2'],
      ['activateRateCard', 'ratecard:activateRateCard:v2', 'v2'],
      ['setBudget', null, null],
      ['hold', 'h2', 'v1'],
      ['hold', 'h2+', 'v1'],
      ['charge', 'c1', 'v2'],
      ['refund', 'r1', 'v2'],
      ['hold', 'h3', null],
      ['expire', null, null],
      ['hold', 'h4', null],
      ['release', 'rel4', null],
    ]);
    const seqs = audit.map((a) => a.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(audit.find((a) => a.operation === 'settle')!.details).toEqual({ holdId: h1.id, chargeId: s1.id, heldUsd: '1.00', amountUsd: '0.04', shortfallUsd: '0.00' });
    expect(audit.find((a) => a.idempotencyKey === 'h2+')!.details).toMatchObject({ holdId: h2.id, addedUsd: '1.00', amountUsd: '2.00' });
    expect(audit.every((a) => a.at === iso(a.operation === 'expire' || a.operation === 'release' || a.idempotencyKey === 'h4' ? T0 + 2_000 : T0))).toBe(true);
    expect(await l.audit({ customerId: 'acme' })).toEqual(audit.filter((a) => a.customerId === 'acme'));
    expect(await l.audit({ limit: 3 })).toEqual(audit.slice(0, 3));
    // Both places are in use: the folded lines, and the batches that could not fold.
    expect(await count(l, 'SELECT COUNT(*) AS n FROM billing_entries WHERE audit_details IS NOT NULL')).toBe(8);
    expect(await count(l, 'SELECT COUNT(*) AS n FROM billing_audit')).toBe(7);
    expect(await count(l, 'SELECT COUNT(*) AS n FROM billing_idempotency')).toBe(1);
    expect(await l.toppedUpCustomer('top')).toBe('acme');
    expect(await l.toppedUpCustomer('h1')).toBeNull();
    expect(await l.checkInvariants()).toEqual({ ok: true, violations: [] });
    await l.close();
    opened.pop();

    const again = await backend.open(target, { clock: () => now });
    opened.push(again);
    const replays: Array<[unknown, () => Promise<unknown>]> = [
      [top, () => again.topUp({ customerId: 'acme', amount: usd('10'), idempotencyKey: 'top' })],
      [h1, () => again.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h1', rateCardVersion: 'v1', chargeType: 'Inference', quantity: '2' })],
      [s1, () => again.settle({ holdId: h1.id, amount: usd('0.04'), idempotencyKey: 's1', metadata: { flow: 'f' } })],
      [grown, () => again.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h2+', addTo: h2.id, rateCardVersion: 'v2' })],
      [r1, () => again.refund({ chargeId: c1.id, amount: usd('0.1'), idempotencyKey: 'r1' })],
      [late, () => again.release({ holdId: short.id, idempotencyKey: 'rel3' })],
    ];
    for (const [first, replay] of replays) expect(encodeResult(await replay())).toBe(encodeResult(first));
    // A key is one operation wherever its result is kept.
    await expect(again.charge({ customerId: 'acme', amount: 1n, idempotencyKey: 's1' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    await expect(again.hold({ customerId: 'acme', amount: 1n, idempotencyKey: 'rel3' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    await expect(again.topUp({ customerId: 'acme', amount: usd('11'), idempotencyKey: 'top' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    expect(await again.audit()).toEqual(audit);
  });

  it('a database written before the step keeps its results and audit lines where they are, and numbers on after both tables', async () => {
    const target = await backend.freshTarget();
    const old: Dialect = backend.name === 'postgres' ? postgresDialect({ url: target }) : sqliteDialect({ path: target });
    await legacyMigrate(old, () => T0);
    const amount = usd('5');
    const stored = encodeResult({ id: 'ent_legacy', customerId: 'acme', amount, balanceAfter: amount, createdAt: iso(T0) });
    await old.writeTransaction(async (c) => {
      await c.run('INSERT INTO billing_customers (id, name, balance, held, created_at, updated_at, budget_spent) VALUES (?, NULL, ?, 0, ?, ?, 0)', ['acme', amount, T0, T0]);
      await c.run(
        "INSERT INTO billing_entries (id, customer_id, type, amount, held_delta, balance_after, idempotency_key, actor, created_at) VALUES ('ent_legacy', 'acme', 'topup', ?, 0, ?, 'legacy-topup', 'legacy', ?)",
        [amount, amount, T0],
      );
      await c.run("INSERT INTO billing_idempotency (key, operation, fingerprint, customer_id, result, created_at) VALUES ('legacy-topup', 'topUp', ?, 'acme', ?, ?)", [
        encodeResult(['acme', amount]),
        stored,
        T0,
      ]);
      for (const op of ['createCustomer', 'topUp', 'subscribe']) {
        await c.run("INSERT INTO billing_audit (at, actor, operation, customer_id, details) VALUES (?, 'legacy', ?, 'acme', '{}')", [T0, op]);
      }
    });
    await old.close();

    const l = await backend.open(target, { clock: () => T0 + 1 });
    opened.push(l);
    const before = await l.audit();
    expect(before.map((a) => [a.seq, a.operation])).toEqual([
      [1, 'createCustomer'],
      [2, 'topUp'],
      [3, 'subscribe'],
    ]);
    expect(encodeResult(await l.topUp({ customerId: 'acme', amount, idempotencyKey: 'legacy-topup' }))).toBe(stored);
    await expect(l.topUp({ customerId: 'acme', amount: usd('6'), idempotencyKey: 'legacy-topup' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    expect(await l.toppedUpCustomer('legacy-topup')).toBe('acme');

    const fresh = await l.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'after' });
    await l.updateCustomer({ id: 'acme', name: 'Acme' });
    const audit = await l.audit();
    expect(audit.slice(0, 3)).toEqual(before);
    expect(audit.slice(3).map((a) => a.operation)).toEqual(['topUp', 'updateCustomer']);
    const [entry] = (await l.statement('acme')).filter((e) => e.id === fresh.id);
    // Past every number the old lines (3) and entries (1) used; the folded line is numbered by its entry.
    expect(audit[3]!.seq).toBe(entry!.seq);
    expect(audit[3]!.seq).toBeGreaterThan(3);
    expect(audit[4]!.seq).toBeGreaterThan(audit[3]!.seq);
    expect(await l.checkInvariants()).toEqual({ ok: true, violations: [] });
  });
});
