import { describe, expect, it } from 'vitest';
import { MAX_AMOUNT } from '../src/money';
import { quickHold, quickSettle } from '../src/ledger/quick-input';
import { jsonProblem, schemas } from '../src/ledger/inputs';

const inputRules = { schemas, jsonProblem };

// quick-input.ts may only accept what the schema accepts, and must then give what the schema gives.
const defined = (o: object) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
const circular: Record<string, unknown> = { a: 1 };
circular.self = circular;

const holdBase = { customerId: 'cust-1', amount: 1_000n, idempotencyKey: 'run:1:node:2' };
const settleBase = { holdId: 'hold_0001', amount: 10n, idempotencyKey: 'run:1:node:2:s' };
const variants: Array<Record<string, unknown>> = [
  {},
  { actor: 'metering' }, { actor: '' }, { actor: 'x'.repeat(101) }, { actor: 7 }, { actor: 'a\nb' }, { actor: 'esc\u001b[31m' }, { actor: 'x'.repeat(100) },
  { idempotencyKey: '' }, { idempotencyKey: 'k'.repeat(255) }, { idempotencyKey: 'k'.repeat(256) }, { idempotencyKey: 'a\nb' }, { idempotencyKey: 'del\u007f' }, { idempotencyKey: 'ünïcødé ✓' },
  { amount: 0n }, { amount: -1n }, { amount: MAX_AMOUNT }, { amount: MAX_AMOUNT + 1n }, { amount: 5 }, { amount: '5' },
  { chargeType: 'Inference', quantity: '2', rateCardVersion: 'v1' }, { chargeType: '' }, { quantity: 'q'.repeat(101) }, { rateCardVersion: 'r'.repeat(65) },
  { metadata: { flow: 'f', node: { id: 1 }, gone: undefined } }, { metadata: {} }, { metadata: [] }, { metadata: null }, { metadata: new Date(0) },
  { metadata: circular }, { metadata: { big: 1n } }, { metadata: { s: 'x'.repeat(20_000) } }, { metadata: JSON.parse('{"__proto__":{"x":1},"y":2}') },
  { ttlMs: 1 }, { ttlMs: 0 }, { ttlMs: 1.5 }, { ttlMs: 7 * 24 * 3600_000 }, { ttlMs: 7 * 24 * 3600_000 + 1 }, { ttlMs: NaN }, { ttlMs: '5' },
  { addTo: 'hold_1' }, { addTo: '' }, { final: false }, { final: 'no' }, { extra: 'ignored' },
  { customerId: 'bad id' }, { customerId: 5 }, { holdId: '' }, { holdId: 'h'.repeat(101) }, { holdId: 5 },
];

describe('quick hold/settle input checks agree with the schemas', () => {
  it.each(variants.map((v, i) => [i, v]))('variant %i', (_i, v) => {
    for (const [base, quick, schema] of [
      [holdBase, quickHold, inputRules.schemas.hold],
      [settleBase, quickSettle, inputRules.schemas.settle],
    ] as const) {
      const input = { ...base, ...v };
      const q = quick(input, inputRules.jsonProblem);
      const z = schema.safeParse(input);
      if (q === null) continue; // the schema decides, as before
      expect(z.success).toBe(true);
      expect(defined(q)).toEqual(defined(z.data!));
    }
  });
  it('takes the usual metered calls without the schema', () => {
    expect(quickHold({ ...holdBase, chargeType: 'tokens:gpt-4o', metadata: { flowId: 'f' } }, inputRules.jsonProblem)).not.toBeNull();
    expect(quickSettle({ ...settleBase, final: false, metadata: { flowId: 'f' } }, inputRules.jsonProblem)).not.toBeNull();
  });
});
