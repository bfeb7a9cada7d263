import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { BillingError } from '../src/errors';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { formatUsd, parseUsd } from '../src/money';
import { defaultRateCard, parseRateCard } from '../src/pricing/ratecard';
import defaultDoc from '../ratecards/default.json';
import { BACKENDS } from './support/backends';

const usd = parseUsd;

/** Runs `fn`, expects a BillingError with `code`, returns it. */
async function rejects(fn: () => Promise<unknown>, code: string): Promise<BillingError> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BillingError);
    expect((e as BillingError).code).toBe(code);
    return e as BillingError;
  }
  throw new Error(`expected ${code}`);
}

describe.each(BACKENDS)('ledger contract on $name', (backend) => {
  let ledger: SqlLedger;
  let target: string;
  let now = Date.parse('2026-11-23T10:00:00Z');
  const opened: SqlLedger[] = [];

  beforeEach(async () => {
    now = Date.parse('2026-11-23T10:00:00Z');
    target = await backend.freshTarget();
    ledger = await backend.open(target, { clock: () => now, holdTtlMs: 60_000 });
    opened.push(ledger);
    await ledger.createCustomer({ id: 'acme', name: 'Acme Corp' });
  });
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });

  /** Everything observable about a customer, to prove a rejected call changed nothing. */
  const snapshot = async (id = 'acme') => ({
    balance: await ledger.balance(id),
    entries: await ledger.statement(id),
    audit: (await ledger.audit()).length,
  });

  describe('customers', () => {
    it('creates, finds, lists; creating again with the same name is a no-op', async () => {
      const again = await ledger.createCustomer({ id: 'acme', name: 'Acme Corp' });
      expect(again.name).toBe('Acme Corp');
      await ledger.createCustomer({ id: 'beta' });
      expect((await ledger.listCustomers()).map((c) => c.id)).toEqual(['acme', 'beta']);
      expect(await ledger.findCustomer('nobody')).toBeNull();
      await rejects(() => ledger.getCustomer('nobody'), 'CUSTOMER_NOT_FOUND');
      expect((await ledger.audit()).filter((a) => a.operation === 'createCustomer')).toHaveLength(2);
    });
    it('refuses the same id with a different name', async () => {
      await rejects(() => ledger.createCustomer({ id: 'acme', name: 'Other' }), 'CUSTOMER_EXISTS');
    });
    it('validates ids', async () => {
      const e = await rejects(() => ledger.createCustomer({ id: 'bad id!' }), 'VALIDATION_ERROR');
      expect(e.message).toMatch(/customer id/);
      expect(await ledger.findCustomer('bad id!')).toBeNull();
    });
    it('renames (and clears) a display name, audited once; the same name again changes nothing; bad input changes nothing', async () => {
      await ledger.topUp({ customerId: 'acme', amount: usd('2'), idempotencyKey: 'rn-t1' });
      const renamed = await ledger.updateCustomer({ id: 'acme', name: 'Acme Inc.', actor: 'cli' });
      expect(renamed).toMatchObject({ id: 'acme', name: 'Acme Inc.' });
      expect((await ledger.getCustomer('acme')).name).toBe('Acme Inc.');
      expect(await ledger.updateCustomer({ id: 'acme', name: 'Acme Inc.' })).toEqual(renamed);
      const renames = (await ledger.audit({ customerId: 'acme' })).filter((a) => a.operation === 'updateCustomer');
      expect(renames.map((a) => [a.actor, a.details])).toEqual([['cli', { name: 'Acme Inc.', previousName: 'Acme Corp' }]]);
      // Money is untouched by a rename, and a money write after it keeps the name.
      await ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'rn-t2' });
      expect((await ledger.balance('acme')).balance).toBe(usd('3'));
      expect((await ledger.getCustomer('acme')).name).toBe('Acme Inc.');
      // createCustomer compares with the current name.
      expect((await ledger.createCustomer({ id: 'acme', name: 'Acme Inc.' })).name).toBe('Acme Inc.');

      const before = await snapshot();
      await rejects(() => ledger.updateCustomer({ id: 'acme', name: '' }), 'VALIDATION_ERROR');
      await rejects(() => ledger.updateCustomer({ id: 'acme', name: 'x'.repeat(201) }), 'VALIDATION_ERROR');
      await rejects(() => ledger.updateCustomer({ id: 'bad id!', name: 'x' }), 'VALIDATION_ERROR');
      await rejects(() => ledger.updateCustomer({ id: 'nobody', name: 'x' }), 'CUSTOMER_NOT_FOUND');
      expect(await snapshot()).toEqual(before);
      expect((await ledger.getCustomer('acme')).name).toBe('Acme Inc.');

      expect((await ledger.updateCustomer({ id: 'acme', name: null })).name).toBeNull();
      expect((await ledger.getCustomer('acme')).name).toBeNull();
      expect((await ledger.checkInvariants()).ok).toBe(true);
    });
    it('a rename racing money writes loses neither', async () => {
      await Promise.all([
        ...Array.from({ length: 20 }, (_, i) => ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: `race-${i}` })),
        ledger.updateCustomer({ id: 'acme', name: 'Raced' }),
      ]);
      expect((await ledger.getCustomer('acme')).name).toBe('Raced');
      expect((await ledger.balance('acme')).balance).toBe(usd('20'));
    });
    it('pages customers by id with SQL LIMIT: nothing skipped or repeated while customers are created between pages', async () => {
      for (const id of ['c05', 'c10', 'c15', 'c20', 'c25', 'c30', 'c35']) await ledger.createCustomer({ id });
      expect(await ledger.countCustomers()).toBe(8);
      const seen: string[] = [];
      let after: string | undefined;
      let pages = 0;
      for (;;) {
        const page = await ledger.listCustomers({ limit: 3, ...(after ? { after } : {}) });
        if (page.length === 0) break;
        pages += 1;
        seen.push(...page.map((c) => c.id));
        after = page.at(-1)!.id;
        // Created between reads: one sorting before the cursor (shown on a new listing), one after (shown on a later page).
        if (pages === 1) {
          await ledger.createCustomer({ id: 'c01' });
          await ledger.createCustomer({ id: 'c22' });
        }
      }
      expect(pages).toBeGreaterThan(2);
      expect(seen).toEqual(['acme', 'c05', 'c10', 'c15', 'c20', 'c22', 'c25', 'c30', 'c35']);
      expect(new Set(seen).size).toBe(seen.length);
      expect((await ledger.listCustomers()).map((c) => c.id)).toEqual(['acme', 'c01', 'c05', 'c10', 'c15', 'c20', 'c22', 'c25', 'c30', 'c35']);
      expect(await ledger.listCustomers({ limit: 2, after: 'c35' })).toEqual([]);
      await rejects(() => ledger.listCustomers({ limit: 0 }), 'VALIDATION_ERROR');
      await rejects(() => ledger.listCustomers({ after: 'bad id!' }), 'VALIDATION_ERROR');
    });
  });

  describe('top-ups', () => {
    it('credits once per idempotency key', async () => {
      const t1 = await ledger.topUp({ customerId: 'acme', amount: usd('5'), idempotencyKey: 'pay-1', actor: 'cli' });
      const t2 = await ledger.topUp({ customerId: 'acme', amount: usd('5'), idempotencyKey: 'pay-1', actor: 'cli' });
      expect(t2).toEqual(t1);
      expect((await ledger.balance('acme')).balance).toBe(usd('5'));
      expect(await ledger.statement('acme')).toHaveLength(1);
    });
    it('rejects the same key with a different amount, changing nothing', async () => {
      await ledger.topUp({ customerId: 'acme', amount: usd('5'), idempotencyKey: 'pay-1' });
      const before = await snapshot();
      const e = await rejects(() => ledger.topUp({ customerId: 'acme', amount: usd('6'), idempotencyKey: 'pay-1' }), 'IDEMPOTENCY_CONFLICT');
      expect(e.details).toMatchObject({ idempotencyKey: 'pay-1' });
      expect(await snapshot()).toEqual(before);
    });
    it('rejects unknown customers and non-positive amounts', async () => {
      await rejects(() => ledger.topUp({ customerId: 'ghost', amount: usd('1'), idempotencyKey: 'k' }), 'CUSTOMER_NOT_FOUND');
      await rejects(() => ledger.topUp({ customerId: 'acme', amount: 0n, idempotencyKey: 'k' }), 'VALIDATION_ERROR');
      await rejects(() => ledger.topUp({ customerId: 'acme', amount: -1n, idempotencyKey: 'k' }), 'VALIDATION_ERROR');
      await rejects(() => ledger.topUp({ customerId: 'acme', amount: 1.5 as unknown as bigint, idempotencyKey: 'k' }), 'VALIDATION_ERROR');
      await rejects(() => ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: '' }), 'VALIDATION_ERROR');
      // A failed key is not consumed: the same key works once the input is right.
      await ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'k' });
      expect((await ledger.balance('acme')).balance).toBe(usd('1'));
    });
  });

  describe('holds', () => {
    beforeEach(async () => {
      await ledger.topUp({ customerId: 'acme', amount: usd('10'), idempotencyKey: 'seed' });
    });

    it('reserve against the available balance, not the posted one', async () => {
      const h = await ledger.hold({ customerId: 'acme', amount: usd('7'), idempotencyKey: 'h1', chargeType: 'Inference', quantity: '350', rateCardVersion: 'v1' });
      expect(h.status).toBe('pending');
      expect(h.availableAfter).toBe(usd('3'));
      expect(await ledger.balance('acme')).toMatchObject({ balance: usd('10'), held: usd('7'), available: usd('3') });
      const before = await snapshot();
      const e = await rejects(() => ledger.hold({ customerId: 'acme', amount: usd('3.01'), idempotencyKey: 'h2' }), 'INSUFFICIENT_FUNDS');
      expect(e.details).toMatchObject({ customerId: 'acme', requiredUsd: '3.01', availableUsd: '3.00' });
      expect(await snapshot()).toEqual(before);
      // Exactly the rest still fits.
      await ledger.hold({ customerId: 'acme', amount: usd('3'), idempotencyKey: 'h3' });
      expect((await ledger.balance('acme')).available).toBe(0n);
    });

    it('settle charges the actual amount and releases the rest', async () => {
      const h = await ledger.hold({ customerId: 'acme', amount: usd('2'), idempotencyKey: 'h1', chargeType: 'ObjectGenerator', rateCardVersion: 'v1' });
      const c = await ledger.settle({ holdId: h.id, amount: usd('0.5'), idempotencyKey: 's1', quantity: '20000' });
      expect(c).toMatchObject({ amount: usd('0.5'), shortfall: 0n, holdId: h.id, chargeType: 'ObjectGenerator', quantity: '20000', rateCardVersion: 'v1', balanceAfter: usd('9.5') });
      expect(await ledger.balance('acme')).toMatchObject({ balance: usd('9.5'), held: 0n, available: usd('9.5') });
      expect((await ledger.getHold(h.id)).status).toBe('settled');
      // Replay returns the same charge; a second settle with a new key is refused.
      expect(await ledger.settle({ holdId: h.id, amount: usd('0.5'), idempotencyKey: 's1', quantity: '20000' })).toEqual(c);
      await rejects(() => ledger.settle({ holdId: h.id, amount: usd('0.5'), idempotencyKey: 's2' }), 'HOLD_NOT_PENDING');
      await rejects(() => ledger.settle({ holdId: h.id, amount: usd('0.6'), idempotencyKey: 's1', quantity: '20000' }), 'IDEMPOTENCY_CONFLICT');
      expect((await ledger.balance('acme')).balance).toBe(usd('9.5'));
    });

    it('settle above the hold takes the excess from what is available, and records any shortfall', async () => {
      const h1 = await ledger.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h1' });
      const over = await ledger.settle({ holdId: h1.id, amount: usd('1.5'), idempotencyKey: 's1' });
      expect(over).toMatchObject({ amount: usd('1.5'), shortfall: 0n });
      // 8.5 left; hold 8, then settle for 9: only 8.5 can be collected.
      const h2 = await ledger.hold({ customerId: 'acme', amount: usd('8'), idempotencyKey: 'h2' });
      const capped = await ledger.settle({ holdId: h2.id, amount: usd('9'), idempotencyKey: 's2' });
      expect(capped).toMatchObject({ amount: usd('8.5'), shortfall: usd('0.5') });
      expect(await ledger.balance('acme')).toMatchObject({ balance: 0n, available: 0n });
      expect((await ledger.checkInvariants()).ok).toBe(true);
    });

    it('settle never takes funds reserved by other holds', async () => {
      const h1 = await ledger.hold({ customerId: 'acme', amount: usd('2'), idempotencyKey: 'h1' });
      await ledger.hold({ customerId: 'acme', amount: usd('7'), idempotencyKey: 'h2' });
      const c = await ledger.settle({ holdId: h1.id, amount: usd('5'), idempotencyKey: 's1' });
      expect(c).toMatchObject({ amount: usd('3'), shortfall: usd('2') });
      expect(await ledger.balance('acme')).toMatchObject({ balance: usd('7'), held: usd('7'), available: 0n });
    });

    it('release gives everything back, once', async () => {
      const h = await ledger.hold({ customerId: 'acme', amount: usd('4'), idempotencyKey: 'h1' });
      const r = await ledger.release({ holdId: h.id, idempotencyKey: 'r1' });
      expect(r.status).toBe('released');
      expect(await ledger.release({ holdId: h.id, idempotencyKey: 'r1' })).toEqual(r);
      await rejects(() => ledger.release({ holdId: h.id, idempotencyKey: 'r2' }), 'HOLD_NOT_PENDING');
      await rejects(() => ledger.settle({ holdId: h.id, amount: 1n, idempotencyKey: 's1' }), 'HOLD_NOT_PENDING');
      expect(await ledger.balance('acme')).toMatchObject({ balance: usd('10'), held: 0n, available: usd('10') });
      await rejects(() => ledger.release({ holdId: 'hold_nope', idempotencyKey: 'r3' }), 'HOLD_NOT_FOUND');
    });

    it('hold replays return the same hold and reserve once', async () => {
      const a = await ledger.hold({ customerId: 'acme', amount: usd('4'), idempotencyKey: 'run-1:llm-1' });
      const b = await ledger.hold({ customerId: 'acme', amount: usd('4'), idempotencyKey: 'run-1:llm-1' });
      expect(b).toEqual(a);
      expect((await ledger.balance('acme')).held).toBe(usd('4'));
      await rejects(() => ledger.hold({ customerId: 'acme', amount: usd('5'), idempotencyKey: 'run-1:llm-1' }), 'IDEMPOTENCY_CONFLICT');
    });

    it('expire: overdue holds stop counting at once and are swept into the journal', async () => {
      const h = await ledger.hold({ customerId: 'acme', amount: usd('9'), idempotencyKey: 'h1', ttlMs: 1_000 });
      expect((await ledger.balance('acme')).available).toBe(usd('1'));
      now += 1_001;
      // Not yet swept, but no longer reserving anything.
      expect((await ledger.balance('acme')).available).toBe(usd('10'));
      expect(await ledger.sweepExpiredHolds()).toEqual({ expired: 1 });
      expect(await ledger.sweepExpiredHolds()).toEqual({ expired: 0 });
      expect((await ledger.getHold(h.id)).status).toBe('expired');
      await rejects(() => ledger.settle({ holdId: h.id, amount: 1n, idempotencyKey: 's1' }), 'HOLD_EXPIRED');
      // Releasing an expired hold is harmless.
      expect((await ledger.release({ holdId: h.id, idempotencyKey: 'r1' })).status).toBe('expired');
      const types = (await ledger.statement('acme')).map((e) => e.type);
      expect(types).toEqual(['topup', 'hold', 'expire']);
      expect((await ledger.checkInvariants()).ok).toBe(true);
    });

    it('a new hold expires overdue ones first, without a sweep', async () => {
      await ledger.hold({ customerId: 'acme', amount: usd('10'), idempotencyKey: 'h1', ttlMs: 1_000 });
      await rejects(() => ledger.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h2' }), 'INSUFFICIENT_FUNDS');
      now += 2_000;
      await ledger.hold({ customerId: 'acme', amount: usd('10'), idempotencyKey: 'h2' });
      expect(await ledger.balance('acme')).toMatchObject({ held: usd('10'), available: 0n });
      expect((await ledger.checkInvariants()).ok).toBe(true);
    });
  });

  describe('charges and refunds', () => {
    beforeEach(async () => {
      await ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'seed' });
    });

    it('charge is hold + settle in one, refused when it does not fit', async () => {
      const c = await ledger.charge({ customerId: 'acme', amount: usd('0.08'), idempotencyKey: 'c1', chargeType: 'Inference', quantity: '4', rateCardVersion: 'v1', metadata: { flow: 'f1' } });
      expect(c).toMatchObject({ amount: usd('0.08'), balanceAfter: usd('0.92'), chargeType: 'Inference', quantity: '4', rateCardVersion: 'v1', metadata: { flow: 'f1' } });
      expect(await ledger.getCharge(c.id)).toEqual(c);
      expect(await ledger.charge({ customerId: 'acme', amount: usd('0.08'), idempotencyKey: 'c1', chargeType: 'Inference', quantity: '4', rateCardVersion: 'v1' })).toEqual(c);
      const before = await snapshot();
      const e = await rejects(() => ledger.charge({ customerId: 'acme', amount: usd('0.93'), idempotencyKey: 'c2' }), 'INSUFFICIENT_FUNDS');
      expect(e.details).toMatchObject({ requiredUsd: '0.93', availableUsd: '0.92' });
      expect(await snapshot()).toEqual(before);
      // A zero charge records usage without moving money.
      const free = await ledger.charge({ customerId: 'acme', amount: 0n, idempotencyKey: 'c3', chargeType: 'PrivateFlowRun', quantity: '1' });
      expect(free.amount).toBe(0n);
    });

    it('refunds part, then the rest, never more than charged', async () => {
      const c = await ledger.charge({ customerId: 'acme', amount: usd('0.5'), idempotencyKey: 'c1' });
      const r1 = await ledger.refund({ chargeId: c.id, amount: usd('0.2'), idempotencyKey: 'r1', reason: 'bad answer' });
      expect(r1).toMatchObject({ amount: usd('0.2'), balanceAfter: usd('0.7'), chargeId: c.id });
      expect(await ledger.refund({ chargeId: c.id, amount: usd('0.2'), idempotencyKey: 'r1' })).toEqual(r1);
      await rejects(() => ledger.refund({ chargeId: c.id, amount: usd('0.3'), idempotencyKey: 'r1' }), 'IDEMPOTENCY_CONFLICT');
      const before = await snapshot();
      const e = await rejects(() => ledger.refund({ chargeId: c.id, amount: usd('0.31'), idempotencyKey: 'r2' }), 'REFUND_EXCEEDS_CHARGE');
      expect(e.details).toMatchObject({ refundableUsd: '0.30' });
      expect(await snapshot()).toEqual(before);
      const r3 = await ledger.refund({ chargeId: c.id, idempotencyKey: 'r3' });
      expect(r3.amount).toBe(usd('0.3'));
      await rejects(() => ledger.refund({ chargeId: c.id, idempotencyKey: 'r4' }), 'REFUND_EXCEEDS_CHARGE');
      expect((await ledger.getCharge(c.id)).refunded).toBe(usd('0.5'));
      expect((await ledger.balance('acme')).balance).toBe(usd('1'));
      await rejects(() => ledger.refund({ chargeId: 'chg_nope', idempotencyKey: 'r5' }), 'CHARGE_NOT_FOUND');
    });

    it('refunds a settled hold charge', async () => {
      const h = await ledger.hold({ customerId: 'acme', amount: usd('0.5'), idempotencyKey: 'h1' });
      const c = await ledger.settle({ holdId: h.id, amount: usd('0.4'), idempotencyKey: 's1' });
      await ledger.refund({ chargeId: c.id, idempotencyKey: 'r1' });
      expect((await ledger.balance('acme')).balance).toBe(usd('1'));
    });

    it('keys are global: a key used by one operation cannot be reused by another', async () => {
      await ledger.charge({ customerId: 'acme', amount: usd('0.1'), idempotencyKey: 'shared' });
      await rejects(() => ledger.topUp({ customerId: 'acme', amount: usd('0.1'), idempotencyKey: 'shared' }), 'IDEMPOTENCY_CONFLICT');
    });
  });

  describe('statement and audit', () => {
    it('journal sums to the balance; every mutation is audited with who, key and rate-card version', async () => {
      await ledger.topUp({ customerId: 'acme', amount: usd('3'), idempotencyKey: 't1', actor: 'cli' });
      const h = await ledger.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h1', actor: 'handler', rateCardVersion: 'v7' });
      await ledger.settle({ holdId: h.id, amount: usd('0.25'), idempotencyKey: 's1', actor: 'handler' });
      const c = await ledger.charge({ customerId: 'acme', amount: usd('0.01'), idempotencyKey: 'c1', actor: 'node:quotaGuard', rateCardVersion: 'v7' });
      await ledger.refund({ chargeId: c.id, idempotencyKey: 'r1', actor: 'cli' });

      const entries = await ledger.statement('acme');
      expect(entries.map((e) => e.type)).toEqual(['topup', 'hold', 'settle', 'charge', 'refund']);
      expect(entries.reduce((s, e) => s + e.amount, 0n)).toBe((await ledger.balance('acme')).balance);
      expect(entries.at(-1)!.balanceAfter).toBe(usd('2.75'));
      expect(entries.map((e) => e.seq)).toEqual([...entries.map((e) => e.seq)].sort((a, b) => a - b));
      expect(await ledger.statement('acme', { afterSeq: entries[2]!.seq })).toHaveLength(2);

      const audit = await ledger.audit({ customerId: 'acme' });
      expect(audit.map((a) => [a.operation, a.actor, a.idempotencyKey, a.rateCardVersion])).toEqual([
        ['createCustomer', 'library', 'customer:acme', null],
        ['topUp', 'cli', 't1', null],
        ['hold', 'handler', 'h1', 'v7'],
        ['settle', 'handler', 's1', 'v7'],
        ['charge', 'node:quotaGuard', 'c1', 'v7'],
        ['refund', 'cli', 'r1', 'v7'],
      ]);
      expect(audit.every((a) => !Number.isNaN(Date.parse(a.at)))).toBe(true);
      await rejects(() => ledger.statement('ghost'), 'CUSTOMER_NOT_FOUND');
      expect((await ledger.checkInvariants()).ok).toBe(true);
    });
    it('pages the statement by seq: entries written between page reads are neither skipped nor repeated', async () => {
      for (let i = 0; i < 7; i++) await ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: `p-${i}` });
      const seen: string[] = [];
      let afterSeq = 0;
      let pages = 0;
      for (;;) {
        const page = await ledger.statement('acme', { limit: 3, afterSeq });
        if (page.length === 0) break;
        pages += 1;
        seen.push(...page.map((e) => e.idempotencyKey!));
        afterSeq = page.at(-1)!.seq;
        // Another customer's and this customer's writes land between reads (concurrently, as in a running server).
        if (pages <= 2) {
          await Promise.all([
            ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: `late-${pages}` }),
            ledger.createCustomer({ id: `other${pages}` }).then(() => ledger.topUp({ customerId: `other${pages}`, amount: usd('1'), idempotencyKey: `o-${pages}` })),
          ]);
        }
      }
      expect(pages).toBeGreaterThan(2);
      expect(seen).toEqual(['p-0', 'p-1', 'p-2', 'p-3', 'p-4', 'p-5', 'p-6', 'late-1', 'late-2']);
      expect(seen).toHaveLength((await ledger.statement('acme')).length);
    });
  });

  describe('rate cards', () => {
    it('the packaged default becomes active on first use', async () => {
      expect((await ledger.activeRateCard()).version).toBe(defaultRateCard().version);
      expect(await ledger.listRateCards()).toEqual([expect.objectContaining({ version: defaultRateCard().version, active: true })]);
    });

    it('activating a new version never changes past charges', async () => {
      await ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: 't' });
      const v1 = await ledger.activeRateCard();
      const c1 = await ledger.charge({ customerId: 'acme', amount: v1.chargeTypes.Inference.nanos * 4n, idempotencyKey: 'c1', chargeType: 'Inference', quantity: '4', rateCardVersion: v1.version });
      const v2doc = { ...defaultDoc, version: 'v2', chargeTypes: { ...defaultDoc.chargeTypes, Inference: { unit: 'image', usd: '0.03' } } };
      const rec = await ledger.importRateCard(parseRateCard(v2doc), { actor: 'cli' });
      expect(rec).toMatchObject({ version: 'v2', active: true });
      const v2 = await ledger.activeRateCard();
      expect(v2.version).toBe('v2');
      expect(formatUsd(v2.chargeTypes.Inference.nanos)).toBe('0.03');
      expect(await ledger.getCharge(c1.id)).toEqual(c1);
      expect((await ledger.getRateCard(v1.version)).version).toBe(v1.version);
      // Versions are immutable; re-importing identical content is fine.
      await ledger.importRateCard(parseRateCard(v2doc));
      await rejects(() => ledger.importRateCard(parseRateCard({ ...v2doc, description: 'changed' })), 'VALIDATION_ERROR');
      await ledger.activateRateCard(v1.version);
      expect((await ledger.activeRateCard()).version).toBe(v1.version);
      await rejects(() => ledger.activateRateCard('nope'), 'RATE_CARD_NOT_FOUND');
      expect((await ledger.audit()).filter((a) => a.operation === 'activateRateCard').map((a) => a.rateCardVersion)).toEqual([v1.version, 'v2', v1.version]);
    });
  });

  it('reopening migrates nothing twice and keeps the data', async () => {
    await ledger.topUp({ customerId: 'acme', amount: usd('2'), idempotencyKey: 't' });
    const again = await backend.open(target);
    expect((await again.balance('acme')).balance).toBe(usd('2'));
    expect((await again.listRateCards()).length).toBeLessThanOrEqual(1);
    await again.close();
  });
});
