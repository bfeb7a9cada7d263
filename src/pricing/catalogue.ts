import { ValidationError } from '../errors';
import { parseRateCard, type RateCard, type RateCardDocument } from './ratecard';

/**
 * Model prices from a maintained catalogue (`@pydantic/genai-prices`) as a new
 * rate card. The catalogue gives USD per million tokens as JSON numbers; each
 * is turned into its decimal text (the shortest that reads back as the same
 * number, i.e. the catalogue's own decimal) and shifted to USD per 1K tokens
 * as text, so no binary arithmetic touches a price; cache read and cache
 * write prices go the same way. Whatever the card cannot hold is reported,
 * never rounded: a price past 9 decimals per 1K, a match rule that is not a
 * name or name prefix, tiers, one-hour cache writes, audio/image prices.
 */

/** The providers the default card covers, in precedence order for a name two of them list. */
export const CATALOGUE_PROVIDERS = ['openai', 'anthropic', 'google', 'mistral', 'groq'] as const;

type MatchLogic =
  | { and: MatchLogic[] }
  | { or: MatchLogic[] }
  | { equals: string }
  | { starts_with: string }
  | { contains: string }
  | { ends_with: string }
  | { regex: string };
type PriceValue = number | { base: number; tiers: Array<{ start: number; price: number }> } | undefined;
interface CatalogueModel {
  id: string;
  match: MatchLogic;
  prices: Record<string, PriceValue> | Array<{ constraint?: { type: string; start_date?: string }; prices: Record<string, PriceValue> }>;
}
interface CatalogueProvider {
  id: string;
  models: CatalogueModel[];
}
interface Catalogue {
  findProvider(o: { providerId: string }): CatalogueProvider | undefined;
}

export interface SkippedModel {
  readonly provider: string;
  readonly model: string;
  readonly reason: string;
}

export interface ModelImport {
  readonly card: RateCard;
  readonly catalogueVersion: string;
  /** Card keys written, per provider. */
  readonly imported: Record<string, number>;
  /** Models not in the card at all, and why. */
  readonly skipped: SkippedModel[];
  /** Models in the card whose catalogue entry has more than the card can say (tiers, one-hour cache writes, audio prices…). */
  readonly approximations: SkippedModel[];
  /** Keys kept from the base card because the catalogue has no such name. */
  readonly keptFromBase: string[];
}

/** A JSON number as exact decimal text ("2.5", "0.075", 1e-7 → "0.0000001"); null when not a finite non-negative number. */
export function decimalText(n: number): string | null {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) return null;
  const s = String(n);
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(s);
  if (!m) return null;
  let digits = m[1]! + (m[2] ?? '');
  let point = m[1]!.length + Number(m[3] ?? 0);
  if (point < 0) {
    digits = '0'.repeat(-point) + digits;
    point = 0;
  }
  if (point > digits.length) digits += '0'.repeat(point - digits.length);
  const int = digits.slice(0, point).replace(/^0+(?=\d)/, '') || '0';
  const frac = digits.slice(point).replace(/0+$/, '');
  return frac ? `${int}.${frac}` : int;
}

/** USD per million tokens → USD per 1K tokens, as text; null past the card's 9 decimals. */
export function perMillionToPer1k(n: number): string | null {
  const d = decimalText(n);
  if (d === null) return null;
  const [int, frac = ''] = d.split('.') as [string, string?];
  const padded = int.padStart(4, '0');
  const outInt = padded.slice(0, -3).replace(/^0+(?=\d)/, '');
  const outFrac = (padded.slice(-3) + frac).replace(/0+$/, '');
  if (outFrac.length > 9) return null;
  return outFrac ? `${outInt}.${outFrac}` : outInt;
}

/**
 * Card keys for a match rule. The card matches a model name exactly, else by
 * its longest key prefix, so `equals` and `starts_with` carry over as they are;
 * `contains x` becomes the prefix x and `ends_with x` the name x (narrower: a
 * provider-prefixed name such as "models/x" falls to the fallback), and
 * `starts_with x and <more>` the prefix x (wider); each is noted. A bare
 * `regex` cannot be said with prefixes and is left out.
 */
function keysOf(m: MatchLogic): { keys: string[]; narrowed: string[]; unsupported: string[] } {
  if ('or' in m) {
    const parts = m.or.map(keysOf);
    return { keys: parts.flatMap((p) => p.keys), narrowed: parts.flatMap((p) => p.narrowed), unsupported: parts.flatMap((p) => p.unsupported) };
  }
  if ('equals' in m) return { keys: [m.equals], narrowed: [], unsupported: [] };
  if ('starts_with' in m) return { keys: [m.starts_with], narrowed: [], unsupported: [] };
  if ('contains' in m) return { keys: [m.contains], narrowed: [`contains "${m.contains}" matched as a prefix`], unsupported: [] };
  if ('ends_with' in m) return { keys: [m.ends_with], narrowed: [`ends_with "${m.ends_with}" matched as the exact name`], unsupported: [] };
  if ('and' in m) {
    // "starts with x, and not …": the prefix x, wider than the rule (the exceptions usually have names of their own).
    const prefixes = m.and.flatMap((p) => ('starts_with' in p ? [p.starts_with] : 'equals' in p ? [p.equals] : []));
    if (prefixes.length === 1) return { keys: prefixes, narrowed: [`"${prefixes[0]}…" used without the rule's other conditions (${JSON.stringify(m.and.filter((p) => !('starts_with' in p || 'equals' in p)))})`], unsupported: [] };
  }
  const [kind, value] = Object.entries(m)[0] as [string, unknown];
  return { keys: [], narrowed: [], unsupported: [`${kind} ${JSON.stringify(value)}`] };
}

type CardModelPrice = { inputUsdPer1k: string; outputUsdPer1k: string; cachedInputUsdPer1k?: string; cacheWriteUsdPer1k?: string };

/** Catalogue prices the card holds, and the card field of each optional one. */
const TOKEN_PRICES = new Set(['input_mtok', 'output_mtok']);
const CACHE_PRICES = [
  ['cache_read_mtok', 'cachedInputUsdPer1k', 'cache read'],
  ['cache_write_mtok', 'cacheWriteUsdPer1k', 'cache write'],
] as const;

/** The price set in force at `asOf` (the catalogue lists dated changes). */
function pricesAt(model: CatalogueModel, asOf: Date): { prices: Record<string, PriceValue>; notes: string[] } {
  if (!Array.isArray(model.prices)) return { prices: model.prices, notes: [] };
  const notes: string[] = [];
  let current = model.prices[0]!.prices;
  const day = asOf.toISOString().slice(0, 10);
  for (const c of model.prices) {
    if (!c.constraint) current = c.prices;
    else if (c.constraint.type === 'start_date' && c.constraint.start_date) {
      if (c.constraint.start_date <= day) current = c.prices;
      else notes.push(`prices change on ${c.constraint.start_date}`);
    } else notes.push(`a ${c.constraint.type} price is not represented`);
  }
  return { prices: current, notes };
}

function tokenPrice(v: PriceValue, what: string, notes: string[]): number | null {
  if (typeof v === 'number') return v;
  if (v && typeof v === 'object' && typeof v.base === 'number') {
    notes.push(`${what} is tiered (${v.tiers.map((t) => `$${t.price}/M above ${t.start} tokens`).join(', ')}); the base price $${v.base}/M is used`);
    return v.base;
  }
  return null;
}

/**
 * A new rate card: the base card's ChargeTypes, resources and fallback, with
 * model prices from the catalogue for `providers` (catalogue names override
 * base keys of the same name; other base keys are kept).
 */
export function rateCardFromCatalogue(
  catalogue: Catalogue,
  base: RateCard,
  opts: { version: string; providers?: readonly string[]; asOf?: Date; catalogueVersion: string },
): ModelImport {
  const asOf = opts.asOf ?? new Date();
  const models: Record<string, CardModelPrice> = {};
  const owner = new Map<string, string>();
  const modelOf = new Map<string, string>();
  const imported: Record<string, number> = {};
  const skipped: SkippedModel[] = [];
  const approximations: SkippedModel[] = [];
  for (const providerId of opts.providers ?? CATALOGUE_PROVIDERS) {
    const provider = catalogue.findProvider({ providerId });
    if (!provider) throw new ValidationError(`The price catalogue has no provider "${providerId}"`, { provider: providerId });
    imported[providerId] = 0;
    for (const model of provider.models) {
      const skip = (reason: string) => skipped.push({ provider: providerId, model: model.id, reason });
      const { prices, notes } = pricesAt(model, asOf);
      const input = tokenPrice(prices.input_mtok, 'input', notes);
      const output = tokenPrice(prices.output_mtok, 'output', notes);
      if (input === null || output === null) {
        skip(`no ${input === null ? 'input' : 'output'} token price (not a chat model: ${Object.keys(prices).join(', ') || 'no prices'})`);
        continue;
      }
      const inputUsdPer1k = perMillionToPer1k(input);
      const outputUsdPer1k = perMillionToPer1k(output);
      if (inputUsdPer1k === null || outputUsdPer1k === null) {
        skip(`a price ($${input}/M in, $${output}/M out) needs more than 9 decimals per 1K tokens`);
        continue;
      }
      const { keys, narrowed, unsupported } = keysOf(model.match);
      notes.push(...narrowed);
      if (unsupported.length) notes.push(`match rules not representable as a name or prefix: ${unsupported.join('; ')}`);
      if (keys.length === 0) {
        skip(`no exact name or prefix to match on (${unsupported.join('; ')})`);
        continue;
      }
      const price: CardModelPrice = { inputUsdPer1k, outputUsdPer1k };
      const represented = new Set<string>(TOKEN_PRICES);
      for (const [key, field, what] of CACHE_PRICES) {
        if (prices[key] === undefined) continue;
        const perM = tokenPrice(prices[key], what, notes);
        if (perM === null) continue;
        represented.add(key);
        const text = perMillionToPer1k(perM);
        // Left out, a cache price is the input price: what every cached token cost before cache prices existed.
        if (text === null) notes.push(`${key} ($${perM}/M) needs more than 9 decimals per 1K tokens; charged at the input price`);
        else price[field] = text;
      }
      const extra = Object.keys(prices).filter((k) => !represented.has(k) && prices[k] !== undefined);
      if (extra.length) notes.push(`not represented: ${extra.join(', ')}`);
      let wrote = 0;
      for (const key of keys) {
        if (key.length > 200) continue;
        const first = owner.get(key);
        if (first !== undefined && first !== providerId) {
          notes.push(`"${key}" is also listed by ${first}, whose price is kept`);
          continue;
        }
        if (first === providerId && models[key]) continue;
        owner.set(key, providerId);
        modelOf.set(key, `${providerId}/${model.id}`);
        models[key] = price;
        wrote++;
      }
      imported[providerId] += wrote;
      if (notes.length) approximations.push({ provider: providerId, model: model.id, reason: notes.join('; ') });
    }
  }
  dropRedundantAliases(models, modelOf);
  const keptFromBase: string[] = [];
  for (const [key, p] of Object.entries(base.document.models)) {
    if (models[key]) continue;
    models[key] = p;
    keptFromBase.push(key);
  }
  const doc: RateCardDocument = {
    ...base.document,
    version: opts.version,
    description: `${base.document.description ? `${base.document.description} ` : ''}Model prices from @pydantic/genai-prices ${opts.catalogueVersion} (${asOf.toISOString().slice(0, 10)}).`.slice(0, 500),
    models: Object.fromEntries(Object.entries(models).sort(([a], [b]) => (a === '*' ? 1 : b === '*' ? -1 : a.localeCompare(b)))),
  };
  return { card: parseRateCard(doc), catalogueVersion: opts.catalogueVersion, imported, skipped, approximations, keptFromBase: keptFromBase.sort() };
}

/**
 * Drops a key that prefix matching already finds: a dated alias such as
 * "gpt-4o-mini-2024-07-18" whose longest other prefix key is "gpt-4o-mini" of
 * the same catalogue model at the same price. Charges then name the model, not
 * the alias; a name's price never changes (checked against the remaining keys).
 */
function dropRedundantAliases(models: Record<string, CardModelPrice>, modelOf: Map<string, string>): void {
  const keys = Object.keys(models).sort((a, b) => b.length - a.length);
  for (const key of keys) {
    let best: string | undefined;
    for (const other of Object.keys(models)) {
      if (other !== key && key.startsWith(other) && (!best || other.length > best.length)) best = other;
    }
    if (!best || modelOf.get(best) !== modelOf.get(key)) continue;
    const a = models[key]!;
    const b = models[best]!;
    if (a.inputUsdPer1k === b.inputUsdPer1k && a.outputUsdPer1k === b.outputUsdPer1k && a.cachedInputUsdPer1k === b.cachedInputUsdPer1k && a.cacheWriteUsdPer1k === b.cacheWriteUsdPer1k) {
      delete models[key];
    }
  }
}

/** The installed catalogue and its version (loaded only when asked for: it is half a megabyte). */
export function loadCatalogue(): { catalogue: Catalogue; version: string } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const catalogue = require('@pydantic/genai-prices') as Catalogue;
  let version = 'unknown';
  try {
    // The package's exports map hides package.json; find it next to the resolved entry.
    const path = require('node:path') as typeof import('node:path');
    const fs = require('node:fs') as typeof import('node:fs');
    let dir = path.dirname(require.resolve('@pydantic/genai-prices'));
    while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
    version = (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // version is informational
  }
  return { catalogue, version };
}
