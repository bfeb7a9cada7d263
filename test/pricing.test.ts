import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors';
import { formatUsd, parseUsd } from '../src/money';
import { paidPublicFlowSplit, priceChargeType, priceComputeMs, priceResource, priceTokens, modelPrice } from '../src/pricing/price';
import { CHARGE_TYPES, defaultRateCard, parseRateCard } from '../src/pricing/ratecard';
import defaultDoc from '../ratecards/default.json';

const card = defaultRateCard();
const usd = (t: string, q: string | number) => formatUsd(priceChargeType(card, t as never, q).amount);

describe('ChargeType formulas (DESIGN.md worked examples)', () => {
  it('4 images → $0.08', () => expect(usd('Inference', 4)).toBe('0.08'));
  it('1 transform → $0.01', () => expect(usd('ObjectTransformer', 1)).toBe('0.01'));
  it('120 training minutes → $7.20', () => expect(usd('Training', 120)).toBe('7.20'));
  it('a $12 paid public run → fee $3.15, creator nets $8.85', () => {
    const split = paidPublicFlowSplit(card, parseUsd('12'));
    expect(formatUsd(split.fee)).toBe('3.15');
    expect(formatUsd(split.creatorNet)).toBe('8.85');
    expect(usd('PaidPublicFlowRun', '12')).toBe('3.15');
  });
  it('50 MB zip follows the formula 0.0035·MB + 0.01 = $0.185', () => {
    // DESIGN.md also states "$0.195" for this case, which its own formula contradicts; the formula wins.
    expect(usd('Zipper', 50)).toBe('0.185');
    expect(usd('Zipper', '0.5')).toBe('0.01175');
  });
  it('the remaining types', () => {
    expect(usd('ObjectGenerator', 1000)).toBe('0.025');
    expect(usd('PrivateFlowRun', 3)).toBe('0.03');
    expect(usd('FreePublicFlowRun', 2)).toBe('0.56');
  });
  it('every ChargeType is priced and records the card version', () => {
    for (const t of CHARGE_TYPES) {
      const q = priceChargeType(card, t, 1);
      expect(q.amount).toBeGreaterThan(0n);
      expect(q.rateCardVersion).toBe(card.version);
    }
  });
  it('rejects unknown ChargeTypes and bad quantities', () => {
    expect(() => priceChargeType(card, 'Teleport' as never, 1)).toThrow(/Unknown ChargeType/);
    expect(() => priceChargeType(card, 'Inference', '-1')).toThrow(ValidationError);
    expect(() => priceChargeType(card, 'Inference', 0.5)).toThrow(ValidationError);
  });
});

describe('exactness', () => {
  it('1,000,000 ObjectGenerator tokens cost exactly $25', () => {
    expect(formatUsd(priceChargeType(card, 'ObjectGenerator', 1_000_000).amount)).toBe('25.00');
  });
  it('1,000 one-token charges total exactly $0.025, and 1,000,000 of them $25', () => {
    const one = priceChargeType(card, 'ObjectGenerator', 1).amount;
    let sum = 0n;
    for (let i = 0; i < 1000; i++) sum += one;
    expect(formatUsd(sum)).toBe('0.025');
    let big = 0n;
    for (let i = 0; i < 1_000_000; i++) big += one;
    expect(formatUsd(big)).toBe('25.00');
  });
});

describe('resource rates', () => {
  it('AI tokens 100 Sparks / 1K, compute 50 Sparks / minute, storage 500 Sparks / GB-month', () => {
    expect(formatUsd(priceResource(card, 'tokens', 1000).amount)).toBe('0.10');
    expect(formatUsd(priceResource(card, 'compute', 1).amount)).toBe('0.05');
    expect(formatUsd(priceResource(card, 'storage', 1).amount)).toBe('0.50');
    expect(formatUsd(priceResource(card, 'storage', '0.001').amount)).toBe('0.0005');
  });
  it('compute is priced per millisecond and rounded once, half up', () => {
    expect(formatUsd(priceComputeMs(card, 60_000).amount)).toBe('0.05');
    // 1 ms = 0.05/60000 USD = 833.33… nanos → 833
    expect(priceComputeMs(card, 1).amount).toBe(833n);
    // 3 ms = 2500 nanos exactly; 9 ms = 7500
    expect(priceComputeMs(card, 3).amount).toBe(2500n);
    expect(priceComputeMs(card, 9).amount).toBe(7500n);
    // 2 ms = 1666.67 → 1667
    expect(priceComputeMs(card, 2).amount).toBe(1667n);
  });
});

describe('model token prices', () => {
  it('prices input and output separately and rounds the call once', () => {
    const q = priceTokens(card, 'gpt-4o-mini', 1000, 1000);
    expect(formatUsd(q.amount)).toBe('0.00075');
    expect(formatUsd(q.inputAmount)).toBe('0.00015');
    expect(formatUsd(q.outputAmount)).toBe('0.0006');
    expect(priceTokens(card, 'gpt-4o-mini', 3, 1).amount).toBe(3n * 150n + 600n);
    // At $0.0000015 / 1K a token costs 1.5 nanos: the call total is rounded once, not each token.
    const fine = parseRateCard({ ...defaultDoc, version: 'fine', models: { m: { inputUsdPer1k: '0.0000015', outputUsdPer1k: '0.0000015' } } });
    expect(priceTokens(fine, 'm', 1, 0).amount).toBe(2n);
    expect(priceTokens(fine, 'm', 1, 1).amount).toBe(3n);
    expect(priceTokens(fine, 'm', 3, 0).amount).toBe(5n);
  });
  it('matches dated model names by longest prefix and falls back to "*"', () => {
    expect(modelPrice(card, 'gpt-4o-mini-2024-07-18').model).toBe('gpt-4o-mini');
    expect(modelPrice(card, 'gpt-4o-2024-08-06').model).toBe('gpt-4o');
    expect(modelPrice(card, 'some-local-model').model).toBe('*');
    expect(formatUsd(priceTokens(card, 'some-local-model', 600, 400).amount)).toBe('0.10');
  });
  it('without a "*" entry an unknown model is UNKNOWN_MODEL', () => {
    const { '*': _, ...models } = defaultDoc.models;
    const strict = parseRateCard({ ...defaultDoc, version: 'strict', models });
    expect(() => modelPrice(strict, 'mystery')).toThrow(expect.objectContaining({ code: 'UNKNOWN_MODEL' }));
  });
  it('rejects fractional or negative token counts', () => {
    expect(() => priceTokens(card, 'gpt-4o', 1.5, 0)).toThrow(ValidationError);
    expect(() => priceTokens(card, 'gpt-4o', 0, -1)).toThrow(ValidationError);
  });
});

describe('cached input tokens', () => {
  // Claude-like prices: cache reads 0.1×, cache writes 1.25× the input price.
  const cached = parseRateCard({
    ...defaultDoc,
    version: 'cached',
    models: {
      claude: { inputUsdPer1k: '0.003', outputUsdPer1k: '0.015', cachedInputUsdPer1k: '0.0003', cacheWriteUsdPer1k: '0.00375' },
      mini: { inputUsdPer1k: '0.00015', outputUsdPer1k: '0.0006', cachedInputUsdPer1k: '0.000075' },
      plain: { inputUsdPer1k: '0.003', outputUsdPer1k: '0.015' },
      fine: { inputUsdPer1k: '0.0000015', outputUsdPer1k: '0.0000015', cachedInputUsdPer1k: '0.0000015', cacheWriteUsdPer1k: '0.0000015' },
    },
  });

  it('prices each part of the input at its own rate, exactly', () => {
    // 1,000 uncached × $0.003/1K + 8,000 read × $0.0003/1K + 1,000 written × $0.00375/1K + 500 out × $0.015/1K
    // = 0.003 + 0.0024 + 0.00375 + 0.0075 = $0.01665 (at the input price it was $0.0375).
    const q = priceTokens(cached, 'claude', 10_000, 500, { cacheReadTokens: 8_000, cacheWriteTokens: 1_000 });
    expect(formatUsd(q.amount)).toBe('0.01665');
    expect(q).toMatchObject({ inputTokens: 10_000, outputTokens: 500, cacheReadTokens: 8_000, cacheWriteTokens: 1_000, quantity: '10500' });
    expect([q.inputAmount, q.cacheReadAmount, q.cacheWriteAmount, q.outputAmount].map(formatUsd)).toEqual(['0.003', '0.0024', '0.00375', '0.0075']);
    // OpenAI-like: only reads. 1,200 prompt tokens of which 1,024 cached, 100 out:
    // 176 × 150 + 1,024 × 75 + 100 × 600 nanos = 26,400 + 76,800 + 60,000 = 163,200 nanos.
    expect(priceTokens(cached, 'mini', 1_200, 100, { cacheReadTokens: 1_024 }).amount).toBe(163_200n);
    // A card without a cache write price charges writes as input.
    expect(priceTokens(cached, 'mini', 1_000, 0, { cacheWriteTokens: 1_000 }).amount).toBe(150_000n);
  });

  it('without cache prices on the card, cached tokens cost what input tokens cost', () => {
    const withParts = priceTokens(cached, 'plain', 10_000, 500, { cacheReadTokens: 8_000, cacheWriteTokens: 1_000 });
    expect(withParts.amount).toBe(priceTokens(cached, 'plain', 10_000, 500).amount);
    expect(formatUsd(withParts.amount)).toBe('0.0375');
    // The old call (no parts) is unchanged.
    expect(priceTokens(cached, 'claude', 10_000, 500).amount).toBe(parseUsd('0.0375'));
  });

  it('rounds the whole call once', () => {
    // 1.5 nanos per token on every side: 1 uncached + 1 read + 1 written + 1 out = 6 nanos, not 4 × round(1.5) = 8.
    expect(priceTokens(cached, 'fine', 3, 1, { cacheReadTokens: 1, cacheWriteTokens: 1 }).amount).toBe(6n);
    expect(priceTokens(cached, 'fine', 2, 1, { cacheReadTokens: 1 }).amount).toBe(5n);
  });

  it('refuses cached parts that are not part of the input', () => {
    expect(() => priceTokens(cached, 'claude', 10, 0, { cacheReadTokens: 8, cacheWriteTokens: 3 })).toThrow(expect.objectContaining({ code: 'VALIDATION_ERROR' }));
    expect(() => priceTokens(cached, 'claude', 10, 0, { cacheReadTokens: -1 })).toThrow(ValidationError);
    expect(() => priceTokens(cached, 'claude', 10, 0, { cacheWriteTokens: 1.5 })).toThrow(ValidationError);
    expect(() => priceTokens(cached, 'claude', 10, 0, { cacheReadTokens: Number.NaN })).toThrow(ValidationError);
  });

  it('validates the cache prices at the boundary, naming the field', () => {
    const bad = (price: Record<string, unknown>) => {
      try {
        parseRateCard({ ...defaultDoc, version: 'bad', models: { m: { inputUsdPer1k: '0.001', outputUsdPer1k: '0.002', ...price } } });
      } catch (e) {
        return e as ValidationError;
      }
      throw new Error('expected the rate card to be rejected');
    };
    for (const field of ['cachedInputUsdPer1k', 'cacheWriteUsdPer1k']) {
      for (const v of ['-1', 0.0003, '1e-4', '0.0000000001', '']) {
        const e = bad({ [field]: v });
        expect(e.code, `${field}=${v}`).toBe('VALIDATION_ERROR');
        expect(e.message, `${field}=${v}`).toContain(`models.m.${field}`);
      }
    }
  });

  it('a card without cache prices keeps its exact document (nothing is filled in)', () => {
    // The stored JSON is what a re-import of the same version is compared with.
    expect(JSON.stringify(cached.document.models.plain)).toBe('{"inputUsdPer1k":"0.003","outputUsdPer1k":"0.015"}');
    expect(JSON.stringify(cached.document.models.mini)).toBe('{"inputUsdPer1k":"0.00015","outputUsdPer1k":"0.0006","cachedInputUsdPer1k":"0.000075"}');
  });
});

describe('rate card validation', () => {
  const bad = (mutate: (d: any) => void) => {
    const d = JSON.parse(JSON.stringify(defaultDoc));
    mutate(d);
    try {
      parseRateCard(d);
    } catch (e) {
      return e as ValidationError;
    }
    throw new Error('expected the rate card to be rejected');
  };

  it('accepts the packaged default', () => {
    expect(card.version).toBe(defaultDoc.version);
  });
  it('names the bad field', () => {
    expect(bad((d) => (d.chargeTypes.Zipper.usd = 0.0035)).message).toMatch(/chargeTypes\.Zipper\.usd/);
    expect(bad((d) => (d.chargeTypes.Zipper.usd = '1e-3')).message).toMatch(/chargeTypes\.Zipper\.usd: usd must be a non-negative decimal/);
    expect(bad((d) => delete d.chargeTypes.Training).message).toMatch(/chargeTypes\.Training/);
    expect(bad((d) => (d.models['gpt-4o'].inputUsdPer1k = '-1')).message).toMatch(/models\.gpt-4o\.inputUsdPer1k/);
    expect(bad((d) => (d.version = 'has space')).message).toMatch(/version/);
    expect(bad((d) => (d.currency = 'EUR')).message).toMatch(/currency/);
    expect(bad((d) => (d.chargeTypes.Inference.sparks = '20')).message).toMatch(/exactly one of "usd" or "sparks"/);
    expect(bad((d) => (d.extra = 1)).message).toMatch(/extra/);
  });
  it('rejects non-JSON text clearly', () => {
    expect(() => parseRateCard('{not json')).toThrow(/not JSON/);
  });
  it('rejects more decimals than a nano', () => {
    expect(bad((d) => (d.chargeTypes.Inference.usd = '0.0000000001')).code).toBe('VALIDATION_ERROR');
  });
});
