import { createHash } from 'node:crypto';
import { BillingError, IdempotencyConflictError } from '../errors';
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
 * HTTP idempotency over the Idempotency-Key header. The first attempt claims
 * the key before it runs (a row with status 0), so a concurrent attempt with
 * the same key is 409 IDEMPOTENCY_IN_PROGRESS instead of running the request
 * a second time (two plans, a second "already exists"); a finished attempt's
 * response is stored under the key and the same request again gets it back
 * unchanged; a different request with that key gets IDEMPOTENCY_CONFLICT.
 * Failures are not stored (as in the ledger): the claim is dropped, so a
 * refused request may be retried once fixed. A claim older than
 * STALE_CLAIM_MS (a serve that died mid-request) is taken over. Money
 * operations do not come here: their ledger idempotency key is derived from
 * this header, so even two concurrent first attempts move money once (see
 * mutate's `ledger` option).
 */
export class IdempotencyStore {
  constructor(
    private readonly d: Dialect,
    private readonly clock: () => number = Date.now,
  ) {}

  /** null: the key is this attempt's to run (then `finish` or `abandon`); otherwise the stored response to replay. */
  async begin(key: string, fp: string): Promise<StoredResponse | null> {
    const now = this.clock();
    return this.d.writeTransaction(async (c) => {
      const claimed = await c.run('INSERT INTO billing_api_idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, 0, ?, ?) ON CONFLICT (key) DO NOTHING', [key, fp, '', now]);
      if (claimed > 0) return null;
      const [r] = await c.query('SELECT fingerprint, status, body, created_at FROM billing_api_idempotency WHERE key = ?', [key]);
      // No row: the attempt holding the key failed and freed it a moment ago; the caller's retry claims it.
      if (r) {
        if (String(r.fingerprint) !== fp) throw new IdempotencyConflictError(key, 'HTTP');
        if (Number(r.status) > 0) return { status: Number(r.status), body: String(r.body) };
        const since = Number(r.created_at);
        if (now - since > STALE_CLAIM_MS) {
          const taken = await c.run('UPDATE billing_api_idempotency SET created_at = ? WHERE key = ? AND status = 0 AND created_at = ?', [now, key, since]);
          if (taken > 0) return null;
        }
      }
      throw new BillingError('IDEMPOTENCY_IN_PROGRESS', `A request with Idempotency-Key "${key}" is still being answered; retry it shortly`, { idempotencyKey: key });
    });
  }

  async finish(key: string, res: StoredResponse): Promise<void> {
    await this.d.writeTransaction((c) => c.run('UPDATE billing_api_idempotency SET status = ?, body = ? WHERE key = ?', [res.status, res.body, key]));
  }

  /** The attempt failed: nothing is stored, and the key is free for a retry. */
  async abandon(key: string): Promise<void> {
    await this.d.writeTransaction((c) => c.run('DELETE FROM billing_api_idempotency WHERE key = ? AND status = 0', [key]));
  }
}

/**
 * Said in place of a secret in a stored replay. The idempotency table is kept
 * for ever (and in every backup of the database): a signing secret stored
 * there outlived its rotation or its endpoint's deletion, and any admin key
 * holder knowing the Idempotency-Key could read it back, though the API
 * otherwise never shows a secret twice.
 */
export const SECRET_NOT_REPLAYED =
  'The signing secret is shown once, in the first answer to this request, and is not kept for replays. If it was lost, rotate it: POST /v1/webhooks/endpoints/{id}/rotate-secret with overlapSeconds 0 (CLI: endpoints rotate-secret <id> --overlap 0).';

/** The replay of an answer that carries a secret: the same answer with `secret: null` and a note saying why. */
export function withoutSecret<T extends { secret: string }>(answer: T): Omit<T, 'secret'> & { secret: null; secretNote: string } {
  return { ...answer, secret: null, secretNote: SECRET_NOT_REPLAYED };
}

/** How long a claimed key stays claimed before another attempt may take it over (its serve died mid-request). */
const STALE_CLAIM_MS = 5 * 60_000;

/** The ledger idempotency key for the ledger operation a request performs. */
export function ledgerKey(httpKey: string): string {
  return `api:${httpKey}`;
}
