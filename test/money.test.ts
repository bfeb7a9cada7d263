import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors';
import { divRound, formatScaled, formatSparks, formatUsd, NANOS_PER_USD, parseQuantity, parseSparks, parseUsd } from '../src/money';

describe('USD parsing and formatting', () => {
  it('round-trips exact decimal strings', () => {
    expect(parseUsd('12.5')).toBe(12_500_000_000n);
    expect(parseUsd('$0.000000001')).toBe(1n);
    expect(parseUsd('0')).toBe(0n);
    expect(formatUsd(80_000_000n)).toBe('0.08');
    expect(formatUsd(25_000n)).toBe('0.000025');
    expect(formatUsd(25n * NANOS_PER_USD)).toBe('25.00');
    expect(formatUsd(-195_000_000n)).toBe('-0.195');
    expect(parseUsd('-3', { allowNegative: true })).toBe(-3n * NANOS_PER_USD);
  });

  it.each(['NaN', 'Infinity', '-Infinity', '1e3', '1E-2', '0x10', '', ' 1', '1 ', '1.', '.5', '+1', '1,5', '0.0000000001', '--1'])(
    'rejects %j with VALIDATION_ERROR',
    (bad) => {
      expect(() => parseUsd(bad)).toThrow(ValidationError);
      try {
        parseUsd(bad);
      } catch (e) {
        expect((e as ValidationError).code).toBe('VALIDATION_ERROR');
      }
    },
  );

  it('rejects negative amounts unless allowed, and amounts past the limit', () => {
    expect(() => parseUsd('-1')).toThrow(/must not be negative/);
    expect(() => parseUsd('1000000001')).toThrow(/exceeds the limit/);
    expect(() => parseUsd(12 as unknown as string)).toThrow(/decimal string/);
  });

  it('names the offending decimals', () => {
    expect(() => parseUsd('0.1234567891')).toThrow(/10 decimals; at most 9/);
  });

  it('converts Sparks (1 Spark = $0.001)', () => {
    expect(parseSparks('100')).toBe(parseUsd('0.1'));
    expect(formatSparks(parseUsd('0.195'))).toBe('195');
    expect(formatSparks(1n)).toBe('0.000001');
    expect(() => parseSparks('0.0000001')).toThrow(ValidationError);
  });
});

describe('formatScaled', () => {
  // The formatter as it was first written (regex trim, power computed per call): the text must not change.
  const reference = (value: bigint, scale: number, minDecimals = 0) => {
    const abs = value < 0n ? -value : value;
    const base = 10n ** BigInt(scale);
    let frac = (abs % base).toString().padStart(scale, '0').replace(/0+$/, '');
    if (frac.length < minDecimals) frac = frac.padEnd(minDecimals, '0');
    return `${value < 0n ? '-' : ''}${abs / base}${frac ? `.${frac}` : ''}`;
  };
  it('writes the same text as before for every scale and sign', () => {
    const values = [0n, 1n, -1n, 9n, 10n, 100n, 25_000n, 80_000_000n, 1_000_000_000n, 1_000_000_001n, -195_000_000n, 10n ** 18n, 2n ** 63n - 1n, -(2n ** 63n), 10n ** 30n + 7n];
    for (const v of values) {
      for (const scale of [0, 1, 2, 6, 9, 18, 19, 25]) {
        for (const min of [0, 2, 9]) expect(formatScaled(v, scale, min)).toBe(reference(v, scale, min));
      }
    }
  });
});

describe('rounding', () => {
  it('rounds halves away from zero, once', () => {
    expect(divRound(5n, 2n)).toBe(3n);
    expect(divRound(-5n, 2n)).toBe(-3n);
    expect(divRound(4n, 3n)).toBe(1n);
    expect(divRound(5n, 3n)).toBe(2n);
    expect(divRound(5n, 3n, 'down')).toBe(1n);
    expect(divRound(4n, 3n, 'up')).toBe(2n);
    expect(divRound(6n, 3n, 'up')).toBe(2n);
    expect(() => divRound(1n, 0n)).toThrow(RangeError);
  });
});

describe('quantities', () => {
  it('parses integers, decimals and bigints exactly', () => {
    expect(parseQuantity('50')).toEqual({ units: 50n, scale: 0 });
    expect(parseQuantity(1_000_000)).toEqual({ units: 1_000_000n, scale: 0 });
    expect(parseQuantity('0.25')).toEqual({ units: 25n, scale: 2 });
    expect(parseQuantity(7n)).toEqual({ units: 7n, scale: 0 });
  });
  it('rejects fractional numbers (floats), negatives and junk', () => {
    expect(() => parseQuantity(0.1)).toThrow(ValidationError);
    expect(() => parseQuantity('-1')).toThrow(ValidationError);
    expect(() => parseQuantity(-1n)).toThrow(ValidationError);
    expect(() => parseQuantity('1e6')).toThrow(ValidationError);
  });
});
