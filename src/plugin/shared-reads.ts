/**
 * Reads the billing nodes of this process share for a moment. The installer
 * bundles each node file on its own, so a cache kept in nodes/shared would
 * exist once per node type (a Quota Guard and its Metered Chat Model would
 * each read); kept here, in the plugin module every node loads, it is one.
 */
const scopes = new Map<string, Map<string, { until: number; value: Promise<unknown> }>>();

/**
 * `read()` once per `scope` and `key` for `ttlMs`; concurrent callers share
 * the read in flight, and a failed read is not kept (the next caller tries
 * again).
 */
export function sharedRead<T>(scope: string, key: string, ttlMs: number, read: () => Promise<T>): Promise<T> {
  let entries = scopes.get(scope);
  if (!entries) scopes.set(scope, (entries = new Map()));
  const now = Date.now();
  if (entries.size > 256) for (const [k, e] of entries) if (e.until <= now) entries.delete(k);
  const hit = entries.get(key);
  if (hit && hit.until > now) return hit.value as Promise<T>;
  const value = read();
  const entry = { until: now + ttlMs, value };
  entries.set(key, entry);
  value.catch(() => entries.get(key) === entry && entries.delete(key));
  return value;
}
