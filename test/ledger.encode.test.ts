import { describe, expect, it } from 'vitest';
import { decodeResult, encodeResult } from '../src/ledger/rows';

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
