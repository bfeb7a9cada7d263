import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseInput, usdAmount } from '../src/cli/validate';
import { parseUsd } from '../src/money';
import { parsedBy } from '../src/schemas';
import { usd as apiUsd } from '../src/server/schemas';

/** parsedBy: the one way an exact parser runs inside zod, at the API, the CLI, the handler options and the nodes. */
describe('parsedBy', () => {
  const parse = (s: string) => parseUsd(s, { field: 'amount' });

  it('as a transform the parsed value is the field; as a refinement the value is kept as given', () => {
    expect(z.string().transform(parsedBy(parse)).parse('1.50')).toBe(1_500_000_000n);
    expect(z.string().superRefine(parsedBy(parse)).parse('1.50')).toBe('1.50');
  });

  it("the parser's ValidationError is an issue on the field, with its message or the one given in its place", () => {
    const r = z.object({ a: z.string().transform(parsedBy(parse)) }).safeParse({ a: '-1' });
    expect(r.success).toBe(false);
    expect(r.error!.issues).toEqual([expect.objectContaining({ path: ['a'], message: 'amount must not be negative, got "-1"' })]);
    const quiet = z.string().superRefine(parsedBy(parse, 'amount is out of range')).safeParse('2000000000');
    expect(quiet.error!.issues.map((i) => i.message)).toEqual(['amount is out of range']);
  });

  it('anything else the parser throws is a bug and is not turned into bad input', () => {
    const broken = z.string().transform(parsedBy(() => { throw new RangeError('division by zero'); }));
    expect(() => broken.safeParse('1')).toThrow(RangeError);
  });

  it('the API and the CLI keep their messages', () => {
    expect(apiUsd('amountUsd').safeParse('1e3').error!.issues[0]!.message).toBe('amountUsd "1e3" is not a plain decimal number (digits, one optional point; no exponent, sign rules apply)');
    expect(() => parseInput(z.object({ amount: usdAmount('amount', { positive: true }) }), { amount: '0' })).toThrow('Invalid input: amount must be greater than zero, got "0"');
  });
});
