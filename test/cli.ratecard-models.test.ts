import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { decimalText, loadCatalogue, perMillionToPer1k, rateCardFromCatalogue } from '../src/pricing/catalogue';
import { modelPrice, priceTokens } from '../src/pricing/price';
import { defaultRateCard } from '../src/pricing/ratecard';
import { runJson } from './support/cli-run';

/** Model prices from the @pydantic/genai-prices catalogue: exact conversion, honest about what a card cannot hold. */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-models-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** USD for a million tokens of input (or output) at the card's price, exactly. */
const perMillion = (model: string, side: 'input' | 'output') => {
  const q = priceTokens(defaultRateCard(), model, side === 'input' ? 1_000_000 : 0, side === 'output' ? 1_000_000 : 0);
  return q.amount;
};

describe('catalogue prices', () => {
  it('convert decimal text, never binary arithmetic', () => {
    expect(decimalText(2.5)).toBe('2.5');
    expect(decimalText(0.075)).toBe('0.075');
    expect(decimalText(1e-7)).toBe('0.0000001');
    expect(decimalText(1.5e21)).toBe('1500000000000000000000');
    expect(decimalText(-1)).toBeNull();
    expect(decimalText(Number.NaN)).toBeNull();
    expect(perMillionToPer1k(2.5)).toBe('0.0025');
    expect(perMillionToPer1k(0.075)).toBe('0.000075');
    expect(perMillionToPer1k(0.01875)).toBe('0.00001875');
    expect(perMillionToPer1k(120)).toBe('0.12');
    expect(perMillionToPer1k(1500)).toBe('1.5');
    expect(perMillionToPer1k(0.000001)).toBe('0.000000001');
    // $0.0000001 per million is 1e-10 per 1K: finer than the card holds, so refused rather than rounded.
    expect(perMillionToPer1k(0.0000001)).toBeNull();
    // 0.1 + 0.2 is the float trap; the text path never adds.
    expect(perMillionToPer1k(0.3)).toBe('0.0003');
  });

  it('the default card has the well-known prices exactly, and dated names find their model by prefix', () => {
    const usd = (s: string) => parseUsd(s);
    // OpenAI: gpt-4o $2.50 / $10 per M; gpt-4o-mini $0.15 / $0.60; gpt-4.1 $2 / $8.
    expect(perMillion('gpt-4o', 'input')).toBe(usd('2.50'));
    expect(perMillion('gpt-4o-2024-08-06', 'output')).toBe(usd('10'));
    expect(perMillion('gpt-4o-mini-2024-07-18', 'input')).toBe(usd('0.15'));
    expect(perMillion('gpt-4o-mini', 'output')).toBe(usd('0.60'));
    expect(perMillion('gpt-4.1', 'output')).toBe(usd('8'));
    // The older dated gpt-4o has its own, higher price: the exact name wins over the prefix.
    expect(perMillion('gpt-4o-2024-05-13', 'input')).toBe(usd('5'));
    // Anthropic: Claude 3.5 Haiku $0.80 / $4; Claude Sonnet 4 $3 / $15, by dated name.
    expect(perMillion('claude-3-5-haiku-20241022', 'input')).toBe(usd('0.80'));
    expect(perMillion('claude-3-5-haiku-20241022', 'output')).toBe(usd('4'));
    expect(perMillion('claude-sonnet-4-20250514', 'output')).toBe(usd('15'));
    // Google: Gemini 1.5 Flash $0.075 / $0.30 (base tier), Gemini 2.0 Flash $0.10 / $0.40.
    expect(perMillion('gemini-1.5-flash-002', 'input')).toBe(usd('0.075'));
    expect(perMillion('gemini-2.0-flash', 'output')).toBe(usd('0.40'));
    // Mistral Large $2 / $6; Groq Llama 3.3 70B $0.59 / $0.79.
    expect(perMillion('mistral-large-latest', 'input')).toBe(usd('2'));
    expect(perMillion('llama-3.3-70b-versatile', 'input')).toBe(usd('0.59'));
    expect(perMillion('llama-3.3-70b-versatile', 'output')).toBe(usd('0.79'));
    // Cache prices: gpt-4o-mini cached input $0.075/M, gpt-4o $1.25/M; Claude 3.5 Haiku reads $0.08/M, writes $1/M;
    // Claude Sonnet 4 reads $0.30/M, writes $3.75/M.
    const cachedPerMillion = (model: string, part: 'cacheReadTokens' | 'cacheWriteTokens') =>
      priceTokens(defaultRateCard(), model, 1_000_000, 0, { [part]: 1_000_000 }).amount;
    expect(cachedPerMillion('gpt-4o-mini-2024-07-18', 'cacheReadTokens')).toBe(usd('0.075'));
    expect(cachedPerMillion('gpt-4o', 'cacheReadTokens')).toBe(usd('1.25'));
    expect(cachedPerMillion('claude-3-5-haiku-20241022', 'cacheReadTokens')).toBe(usd('0.08'));
    expect(cachedPerMillion('claude-3-5-haiku-20241022', 'cacheWriteTokens')).toBe(usd('1'));
    expect(cachedPerMillion('claude-sonnet-4-20250514', 'cacheReadTokens')).toBe(usd('0.30'));
    expect(cachedPerMillion('claude-sonnet-4-20250514', 'cacheWriteTokens')).toBe(usd('3.75'));
    // OpenAI has no cache-write price: writes cost the input price.
    expect(cachedPerMillion('gpt-4o-mini', 'cacheWriteTokens')).toBe(usd('0.15'));
    // An unknown model still falls back to "*".
    expect(modelPrice(defaultRateCard(), 'my-own-model').model).toBe('*');
    // 1,000,000 calls of one gpt-4o-mini input token sum to exactly $0.15.
    const one = priceTokens(defaultRateCard(), 'gpt-4o-mini', 1, 0).amount;
    expect(one * 1_000_000n).toBe(usd('0.15'));
  });

  it('says what it cannot represent: tiers, one-hour cache writes, regex rules, sub-nano prices, non-chat models', () => {
    const catalogue = {
      findProvider: ({ providerId }: { providerId: string }) =>
        providerId === 'acme'
          ? {
              id: 'acme',
              models: [
                { id: 'plain', match: { or: [{ equals: 'plain' }, { starts_with: 'plain-2025' }] }, prices: { input_mtok: 1.25, output_mtok: 10, cache_read_mtok: 0.125 } },
                { id: 'cachy', match: { equals: 'cachy' }, prices: { input_mtok: 3, output_mtok: 15, cache_read_mtok: 0.3, cache_write_mtok: 3.75, cache_write_1h_mtok: 6 } },
                { id: 'cache-tiered', match: { equals: 'cache-tiered' }, prices: { input_mtok: 1.25, output_mtok: 10, cache_read_mtok: { base: 0.31, tiers: [{ start: 200000, price: 0.625 }] } } },
                { id: 'cache-tiny', match: { equals: 'cache-tiny' }, prices: { input_mtok: 1, output_mtok: 2, cache_read_mtok: 0.0000001 } },
                { id: 'tiered', match: { equals: 'tiered' }, prices: { input_mtok: { base: 3, tiers: [{ start: 200000, price: 6 }] }, output_mtok: 15 } },
                { id: 'tiny', match: { equals: 'tiny' }, prices: { input_mtok: 0.0000001, output_mtok: 1 } },
                { id: 'regexy', match: { regex: '^r.*' }, prices: { input_mtok: 1, output_mtok: 1 } },
                { id: 'embed', match: { equals: 'embed' }, prices: { input_mtok: 0.02 } },
                {
                  id: 'dated',
                  match: { equals: 'dated' },
                  prices: [
                    { prices: { input_mtok: 1, output_mtok: 2 } },
                    { constraint: { type: 'start_date', start_date: '2020-01-01' }, prices: { input_mtok: 3, output_mtok: 4 } },
                    { constraint: { type: 'start_date', start_date: '2999-01-01' }, prices: { input_mtok: 5, output_mtok: 6 } },
                  ],
                },
              ],
            }
          : undefined,
    };
    const r = rateCardFromCatalogue(catalogue, defaultRateCard(), { version: 'acme-test', providers: ['acme'], catalogueVersion: 'test' });
    const doc = r.card.document.models;
    expect(doc.plain).toStrictEqual({ inputUsdPer1k: '0.00125', outputUsdPer1k: '0.01', cachedInputUsdPer1k: '0.000125' });
    // Anthropic-style: cache reads and (5-minute) cache writes have prices of their own.
    expect(doc.cachy).toStrictEqual({ inputUsdPer1k: '0.003', outputUsdPer1k: '0.015', cachedInputUsdPer1k: '0.0003', cacheWriteUsdPer1k: '0.00375' });
    expect(doc['cache-tiered']).toStrictEqual({ inputUsdPer1k: '0.00125', outputUsdPer1k: '0.01', cachedInputUsdPer1k: '0.00031' });
    // A cache price finer than the card holds is left out (reads then cost the input price), never rounded.
    expect(doc['cache-tiny']).toStrictEqual({ inputUsdPer1k: '0.001', outputUsdPer1k: '0.002' });
    // The alias prefix adds nothing the model's own name does not match, so it is not a key of its own.
    expect(doc['plain-2025']).toBeUndefined();
    expect(modelPrice(r.card, 'plain-2025-06-01').model).toBe('plain');
    expect(doc.tiered).toEqual({ inputUsdPer1k: '0.003', outputUsdPer1k: '0.015' });
    expect(doc.dated).toEqual({ inputUsdPer1k: '0.003', outputUsdPer1k: '0.004' });
    expect(doc.tiny).toBeUndefined();
    expect(doc['*']).toEqual(defaultRateCard().document.models['*']);
    expect(Object.fromEntries(r.skipped.map((s) => [s.model, s.reason]))).toEqual({
      tiny: expect.stringContaining('more than 9 decimals'),
      regexy: expect.stringContaining('no exact name or prefix'),
      embed: expect.stringContaining('no output token price'),
    });
    const approx = Object.fromEntries(r.approximations.map((s) => [s.model, s.reason]));
    // Represented now, so not an approximation.
    expect(approx.plain).toBeUndefined();
    expect(approx.cachy).toBe('not represented: cache_write_1h_mtok');
    expect(approx['cache-tiered']).toContain('cache read is tiered');
    expect(approx['cache-tiny']).toContain('cache_read_mtok');
    expect(approx.tiered).toContain('tiered');
    expect(approx.dated).toContain('prices change on 2999-01-01');
    expect(r.keptFromBase).toContain('*');
  });

  it('CLI: import-models makes a new active rate card version from the installed catalogue and prices with it', async () => {
    const db = path.join(tmp, 'models.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const r = await runJson(['--db', db, 'ratecard', 'import-models', '--version', 'models-test']);
    expect(r.code).toBe(0);
    expect(r.value).toMatchObject({ version: 'models-test', record: { version: 'models-test', active: true }, catalogue: `@pydantic/genai-prices ${loadCatalogue().version}` });
    expect(r.value.models).toBeGreaterThan(200);
    for (const p of ['openai', 'anthropic', 'google', 'mistral', 'groq']) expect(r.value.imported[p], p).toBeGreaterThan(10);
    expect(r.value.skipped.map((s: any) => s.model)).toContain('text-embedding-3-small');
    const q = await runJson(['--db', db, 'price', 'tokens', '1000000', '--model', 'claude-3-5-haiku-20241022', '--output-tokens', '1000000']);
    expect(q.value).toMatchObject({ usd: '4.80', rateCardVersion: 'models-test' });
    // The ChargeTypes and resources come from the card that was active.
    expect((await runJson(['--db', db, 'price', 'Training', '120'])).value).toMatchObject({ usd: '7.20', rateCardVersion: 'models-test' });
    const out = path.join(tmp, 'card.json');
    const none = path.join(tmp, 'none.sqlite');
    const w = await runJson(['--db', none, 'ratecard', 'import-models', '--version', 'file-test', '--out', out]);
    expect(w.value.written).toBe(out);
    expect(JSON.parse(fs.readFileSync(out, 'utf8')).version).toBe('file-test');
    expect(fs.existsSync(none)).toBe(false);
    for (const bad of [path.join(tmp, 'no-folder', 'card.json'), tmp]) {
      const failed = await runJson(['--db', none, 'ratecard', 'import-models', '--out', bad]);
      expect(failed.code, bad).toBe(1);
      expect(failed.value.error, bad).toMatchObject({ code: 'VALIDATION_ERROR', details: { file: bad } });
    }
  });

  it('CLI: import-models --out builds on the active card, as an import would', async () => {
    const db = path.join(tmp, 'out-base.sqlite');
    const own = structuredClone(defaultRateCard().document);
    own.version = 'own-prices';
    own.chargeTypes.Training = { ...own.chargeTypes.Training, usd: '1' };
    const file = path.join(tmp, 'own.json');
    fs.writeFileSync(file, JSON.stringify(own));
    expect((await runJson(['--db', db, 'ratecard', 'import', file])).code).toBe(0);
    const out = path.join(tmp, 'own-models.json');
    expect((await runJson(['--db', db, 'ratecard', 'import-models', '--version', 'own-models', '--out', out])).code).toBe(0);
    expect(JSON.parse(fs.readFileSync(out, 'utf8')).chargeTypes.Training.usd).toBe('1');
  });
});
