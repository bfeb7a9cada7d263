import { createHash } from 'node:crypto';
import { IdempotencyConflictError } from '../errors';
import type { Dialect } from '../ledger/dialect';

export interface StoredResponse {
  readonly status: number;
  readonly body: string;
}

/** What makes two requests "the same": method, path and the parsed body (amounts already exact bigints, so "1.5" and "1.50" agree). */
export function fingerprint(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method} ${path}\n${JSON.stringify(body ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))}`).digest('hex');
}

/**
 * HTTP idempotency over the Idempotency-Key header. A successful response is
 * stored under the key; the same request again gets it back unchanged, a
 * different request with that key gets IDEMPOTENCY_CONFLICT. Failures are not
 * stored (as in the ledger), so a refused top-up may be retried once fixed.
 * Money operations are additionally protected by the ledger itself: their
 * ledger idempotency key is derived from this header, so even two concurrent
 * first attempts move money once (see mutate's `ledger` option).
 */
export class IdempotencyStore {
  constructor(
    private readonly d: Dialect,
    private readonly clock: () => number = Date.now,
  ) {}

  async lookup(key: string, fp: string): Promise<StoredResponse | null> {
    const [r] = await this.d.read((c) => c.query('SELECT fingerprint, status, body FROM billing_api_idempotency WHERE key = ?', [key]));
    if (!r) return null;
    if (String(r.fingerprint) !== fp) throw new IdempotencyConflictError(key, 'HTTP');
    return { status: Number(r.status), body: String(r.body) };
  }

  async save(key: string, fp: string, res: StoredResponse): Promise<void> {
    await this.d.writeTransaction((c) =>
      c.run('INSERT INTO billing_api_idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING', [
        key, fp, res.status, res.body, this.clock(),
      ]),
    );
  }
}

/** The ledger idempotency key for the ledger operation a request performs. */
export function ledgerKey(httpKey: string): string {
  return `api:${httpKey}`;
}
