import { describe, expect, it } from 'vitest';
import { decodeResult, encodeResult } from '../src/ledger/rows';
import { readAuditDetails, readStoredResult, sameFingerprint, storedAuditDetails, storedFingerprint, storeResult } from '../src/ledger/stored-results';

// Stored idempotent results and fingerprints are compared and decoded after a restart, so the fast
// encoder must write exactly what JSON.stringify with the bigint replacer always wrote.
const reference = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? { $big: x.toString() } : x));

describe('encodeResult', () => {
  const values: unknown[] = [
    { id: 'hold_1', amount: 1_000_000n, status: 'pending', chargeType: null, availableAfter: -5n, when: '2026-11-30T00:00:00.000Z' },
    ['cust', 25_000n, null, undefined, 'Inference', () => 1],
    { nested: { list: [1, 2.5, -0, NaN, Infinity, true, false, 'a"b\\c\u0001\u2028'], skip: undefined, fn: () => 1 }, big: [0n, -1n] },
    { date: new Date(0), big: 1n },
    { __proto__: null, a: 1n } as unknown,
    { toJSON: () => ({ x: 1n }) },
    'text',
    42,
    null,
    123456789012345678901234567890n,
    [],
    {},
    { 'key with "quotes"': [{ $big: 'not a bigint' }] },
    // Copies made around bigints keep key order, own __proto__ keys, holes and everything else as they were.
    JSON.parse('{"a":1,"__proto__":{"x":2},"b":"y"}') as unknown,
    Object.assign(JSON.parse('{"__proto__":[1],"n":null}') as object, { big: 5n }),
    { 2: 'two', b: 1n, 1: 'one', a: [NaN, undefined, 'k', 3n] },
    // eslint-disable-next-line no-sparse-arrays
    [1, , 2n, undefined, () => 1, Symbol('s')],
    { a: { b: { c: [null, { d: -7n, e: undefined, f: () => 1 }] } }, g: 'after' },
    [new Date(0), 1n],
  ];
  it.each(values.map((v, i) => [i, v]))('value %i is encoded byte for byte as before', (_i, v) => {
    expect(encodeResult(v)).toBe(reference(v));
  });
  it('round-trips bigints', () => {
    const v = { a: 1n, b: [2n, { c: -3n }], d: 'x' };
    expect(decodeResult(encodeResult(v))).toEqual(v);
  });
});

describe('stored results', () => {
  const hold = {
    id: 'hold_1', customerId: 'acme', amount: 1_000_000n, status: 'pending', expiresAt: '2026-11-30T17:32:00.922Z', createdAt: '2026-11-30T17:17:00.922Z',
    chargeType: 'Inference', quantity: '2', rateCardVersion: null, chargeId: null, availableAfter: -5n,
  };
  const charge = {
    id: 'chg_1', customerId: 'acme', holdId: null, amount: 25_000n, shortfall: 0n, refunded: 0n, chargeType: null, quantity: null,
    rateCardVersion: 'v1', createdAt: '2026-11-30T17:17:00.922Z', balanceAfter: 123456789012345678901234567890n, metadata: { flow: 'f', nested: [1, { a: null }] },
  };
  it('keeps a hold and a charge positionally, a third of the JSON, and gives them back exactly', () => {
    for (const v of [hold, charge]) {
      const text = storeResult(v);
      expect(text[0]).toMatch(/[HC]/);
      expect(text.length).toBeLessThan(encodeResult(v).length / 1.5);
      const back = readStoredResult<Record<string, unknown>>(text);
      expect(back).toEqual(v);
      expect(Object.keys(back)).toEqual(Object.keys(v));
      expect(encodeResult(back)).toBe(encodeResult(v));
    }
  });
  it('stores as JSON whatever the positional form would not give back exactly', () => {
    const cases: unknown[] = [
      { ...charge, metadata: { tokens: 5n } },
      { ...hold, expiresAt: '2026-11-30T17:32:00Z' },
      { ...hold, amount: 5 },
      { ...hold, extra: 1 },
      { ...charge, metadata: null },
      Object.fromEntries(Object.entries(hold).reverse()),
      { a: 1n },
      [hold],
    ];
    for (const v of cases) {
      expect(storeResult(v)).toBe(encodeResult(v));
      expect(encodeResult(readStoredResult(storeResult(v)))).toBe(encodeResult(v));
    }
  });
  it('reads results stored as JSON before', () => {
    expect(readStoredResult(encodeResult(hold))).toEqual(hold);
    expect(readStoredResult(encodeResult(charge))).toEqual(charge);
  });
});

describe('stored fingerprints and audit details', () => {
  it('a fingerprint matches its own stored form and the boxing JSON of rows written before, nothing else', () => {
    const parts = ['hold_1', 25_000n, null, 'q', null, null];
    const fp = storedFingerprint(parts);
    expect(fp).toBe('~["hold_1","25000",null,"q"]');
    expect(sameFingerprint(fp, fp, parts)).toBe(true);
    expect(sameFingerprint(encodeResult(parts), fp, parts)).toBe(true);
    const other = ['hold_1', 25_001n, null, 'q', null, null];
    expect(sameFingerprint(fp, storedFingerprint(other), other)).toBe(false);
    expect(sameFingerprint(encodeResult(parts), storedFingerprint(other), other)).toBe(false);
    // A trailing part that is there is not the same as one left out.
    expect(storedFingerprint(['c', 1n, null, null, null, 'hold_2'])).not.toBe(storedFingerprint(['c', 1n, null, null, null]));
  });
  it("audit details leave out the entry's own hold and charge ids, and get them back in their place", () => {
    const cases: Array<[Record<string, unknown>, string | null, string | null, string]> = [
      [{ holdId: 'h1', chargeId: 'c1', heldUsd: '1', amountUsd: '0.5' }, 'h1', 'c1', 'hc'],
      [{ holdId: 'h1', amountUsd: '1', expiresAt: 'x' }, 'h1', null, 'h'],
      [{ chargeId: 'c1', amountUsd: '1', reason: null }, null, 'c1', 'c'],
      [{ holdId: 'other', amountUsd: '1' }, 'h1', null, '{'],
      [{ amountUsd: '1', holdId: 'h1' }, 'h1', null, '{'],
      [{ amountUsd: '1', memo: null }, null, null, '{'],
    ];
    for (const [details, holdId, chargeId, mark] of cases) {
      const text = storedAuditDetails(details, holdId, chargeId);
      expect(text.startsWith(mark)).toBe(true);
      const back = readAuditDetails(text, holdId, chargeId);
      expect(back).toEqual(details);
      expect(Object.keys(back)).toEqual(Object.keys(details));
    }
  });
});
