import { formatUsd } from '../money';

/**
 * Ledger values as API JSON: every bigint field `x` (nano-USD) becomes
 * `xUsd`, an exact decimal string, like the CLI's --json. No number ever
 * carries money.
 */
/**
 * Nano-USD fields that are null when unset (a customer without a budget). They are renamed like the
 * bigint ones, so a client reads `budgetUsd` whether or not a budget is set (not `budget: null`).
 */
const NULLABLE_NANOS: ReadonlySet<string> = new Set(['budget']);

export function apiJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(apiJson);
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (typeof v === 'bigint') out[`${k}Usd`] = formatUsd(v);
      else if (v === null && NULLABLE_NANOS.has(k)) out[`${k}Usd`] = null;
      else out[k] = apiJson(v);
    }
    return out;
  }
  if (typeof value === 'bigint') return formatUsd(value);
  return value;
}
