import type { TableWrite } from './dialect';

/** SQL text for PostgreSQL, built and numbered once and kept: the same strings recur with every batch. */

const numbered = new Map<string, string>();
/** `?` → `$1, $2, …` (the ledger's SQL never has `?` inside literals). */
export function toPg(sql: string): string {
  let out = numbered.get(sql);
  if (out === undefined) {
    let i = 0;
    out = sql.replace(/\?/g, () => `$${++i}`);
    if (numbered.size > 2000) numbered.clear();
    numbered.set(sql, out);
  }
  return out;
}

const cteCache = new Map<string, string>();
/**
 * A batch's write statement (postgres.ts writeMany), already `$n`-numbered,
 * built once per shape: a lone operation's write is the same few shapes again
 * and again, and building, numbering and hashing a fresh text of a few
 * kilobytes for each was a visible share of a lone batch's JS (profiled).
 * No RETURNING: a data-modifying CTE runs to completion without it.
 */
export function cteSql(writes: readonly TableWrite[]): string {
  let key = '';
  for (const w of writes) key += `${w.table}\u0000${w.columns.join(',')}\u0000${w.rows.length}\u0000${w.onConflict ?? ''}\u0001`;
  let sql = cteCache.get(key);
  if (sql === undefined) {
    let n = 0;
    const tuple = (width: number) => `(${Array.from({ length: width }, () => `$${++n}`).join(', ')})`;
    const parts = writes.map(
      (w, i) => `w${i} AS (INSERT INTO ${w.table} (${w.columns.join(', ')}) VALUES ${w.rows.map(() => tuple(w.columns.length)).join(', ')} ${w.onConflict ?? ''})`,
    );
    sql = `WITH ${parts.join(',\n')} SELECT 1`;
    if (cteCache.size > 2000) cteCache.clear();
    cteCache.set(key, sql);
  }
  return sql;
}

