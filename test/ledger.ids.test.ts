import { describe, expect, it } from 'vitest';
import { newId } from '../src/ledger/batch-apply';
import { iso } from '../src/ledger/rows';

describe('newId', () => {
  it('is the prefix and 32 hex digits: milliseconds, a counter, randomness; growing within a process and unique', () => {
    const before = Date.now();
    const ids = Array.from({ length: 5000 }, () => newId('hold'));
    const after = Date.now();
    for (const id of ids) expect(id).toMatch(/^hold_[0-9a-f]{32}$/);
    const ms = parseInt(ids[0]!.slice(5, 17), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
    expect(new Set(ids).size).toBe(ids.length);
    // The counter wraps after 65,536 ids; within 5,000 the ids sort in creation order unless it wrapped.
    const sorted = [...ids].sort();
    const wraps = ids.filter((id, i) => i > 0 && id.slice(17, 21) < ids[i - 1]!.slice(17, 21) && id.slice(5, 17) === ids[i - 1]!.slice(5, 17)).length;
    if (wraps === 0) expect(sorted).toEqual(ids);
    // The random tails differ (not one slice of the pool repeated).
    expect(new Set(ids.map((id) => id.slice(21))).size).toBe(ids.length);
  });
});

describe('iso', () => {
  it('converts whatever order times come in, as Date does', () => {
    const times = [0, 1_700_000_000_000, 0, 1_700_000_000_000, 1_700_000_000_001, 0, 1_700_000_000_001, 1_700_000_000_001, 86_400_000];
    for (const t of times) expect(iso(t)).toBe(new Date(t).toISOString());
  });
});
