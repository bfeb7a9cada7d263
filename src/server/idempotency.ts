import { createHash, randomUUID } from 'node:crypto';
import { BillingError, IdempotencyConflictError, isBillingError } from '../errors';
import type { Dialect, SqlConnection } from '../ledger/dialect';
import { asBillingError, throwAsBillingError } from '../ledger/sql-ledger';

export interface StoredResponse {
  readonly status: number;
  readonly body: string;
}

/** What makes two requests "the same": method, path and the parsed body (amounts already exact bigints, so "1.5" and "1.50" agree). */
export function fingerprint(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method} ${path}\n${JSON.stringify(body ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))}`).digest('hex');
}

/** This process's claim on a key: its token is written in the claim row, so only this attempt ever records or drops it. */
export interface Claim {
  readonly key: string;
  readonly token: string;
}

/** What `begin` decides: replay a stored answer, or run the request under a claim (then `finish` or `abandon`). */
export type Begun = { readonly replay: StoredResponse } | { readonly claim: Claim };

export type IdempotencyLog = (level: 'warn' | 'info' | 'error', msg: string, fields: Record<string, unknown>) => void;

/** A claim's outcome this process could not write (the database failed): its answer to record, or null to drop it. */
interface Unsettled extends Claim {
  readonly outcome: StoredResponse | null;
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
 *
 * The database can fail between the request and its record (PostgreSQL
 * restarted after the mutation committed, before its answer was stored): the
 * claim row would then stay at status 0 and every retry would be 409 for
 * STALE_CLAIM_MS, then run the mutation again. The process that owns the claim
 * is alive and knows the outcome, so it keeps it and writes it as soon as the
 * database answers: in the background with backoff, and first thing when the
 * same key comes back to it. While the claim row has status 0 its `body`
 * holds the owner's claim token, so a late write never touches a claim another
 * attempt has since taken over.
 */
export class IdempotencyStore {
  private readonly clock: () => number;
  private readonly log: IdempotencyLog;
  /** By claim token. */
  private readonly unsettled = new Map<string, Unsettled>();
  private timer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;

  constructor(
    private readonly d: Dialect,
    opts: { readonly clock?: () => number; readonly log?: IdempotencyLog } = {},
  ) {
    this.clock = opts.clock ?? Date.now;
    this.log = opts.log ?? (() => undefined);
  }

  /** Replay a stored answer, or a claim on the key for this attempt to run under. */
  async begin(key: string, fp: string): Promise<Begun> {
    // An earlier attempt at this key in this process whose outcome is not written yet: written first, so this
    // request sees it (the stored answer, or a free key). If the database still fails, nothing was claimed.
    for (const u of this.unsettled.values()) if (u.key === key) await this.settle(u);
    const now = this.clock();
    const claim: Claim = { key, token: randomUUID() };
    try {
      return await this.write(async (c): Promise<Begun> => {
        const claimed = await c.run('INSERT INTO billing_api_idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, 0, ?, ?) ON CONFLICT (key) DO NOTHING', [key, fp, claim.token, now]);
        if (claimed > 0) return { claim };
        const [r] = await c.query('SELECT fingerprint, status, body, created_at FROM billing_api_idempotency WHERE key = ?', [key]);
        // No row: the attempt holding the key failed and freed it a moment ago; the caller's retry claims it.
        if (r) {
          if (String(r.fingerprint) !== fp) throw new IdempotencyConflictError(key, 'HTTP');
          if (Number(r.status) > 0) return { replay: { status: Number(r.status), body: String(r.body) } };
          const since = Number(r.created_at);
          if (now - since > STALE_CLAIM_MS) {
            const taken = await c.run('UPDATE billing_api_idempotency SET created_at = ?, body = ? WHERE key = ? AND status = 0 AND created_at = ?', [now, claim.token, key, since]);
            if (taken > 0) return { claim };
          }
        }
        throw new BillingError('IDEMPOTENCY_IN_PROGRESS', `A request with Idempotency-Key "${key}" is still being answered; retry it shortly`, { idempotencyKey: key });
      });
    } catch (e) {
      // The claim may have committed although the answer was lost: dropped once the database is back (only a row
      // with this attempt's token), or every retry would wait out STALE_CLAIM_MS.
      if (isBillingError(e) && e.code === 'DATABASE_ERROR') this.defer({ ...claim, outcome: null }, e);
      throw e;
    }
  }

  /**
   * Stores the answer under the key. The mutation has run and this answer stands, so a database failure here
   * is not the request's: the answer is kept and written when the database is back. Never throws.
   */
  finish(claim: Claim, res: StoredResponse): Promise<void> {
    return this.record({ ...claim, outcome: res });
  }

  /** The attempt failed: nothing is stored, and the key is free for a retry (later, if the database fails now). Never throws. */
  abandon(claim: Claim): Promise<void> {
    return this.record({ ...claim, outcome: null });
  }

  /** Writes an attempt's outcome now, or keeps it to write once the database answers. */
  private async record(u: Unsettled): Promise<void> {
    await this.settle(u).catch((e: unknown) => this.defer(u, e));
  }

  /** Stops retrying after one last attempt; what is still unwritten stays claimed until STALE_CLAIM_MS. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.retry(false);
    for (const u of this.unsettled.values()) {
      this.log('error', 'an Idempotency-Key outcome could not be recorded before shutdown; the key stays claimed until its claim goes stale', { idempotencyKey: u.key, staleAfterMs: STALE_CLAIM_MS });
    }
  }

  /** Writes an outcome if the claim is still this attempt's (a claim taken over since is left alone). */
  private async settle(u: Unsettled): Promise<void> {
    await this.write((c) =>
      u.outcome
        ? c.run('UPDATE billing_api_idempotency SET status = ?, body = ? WHERE key = ? AND status = 0 AND body = ?', [u.outcome.status, u.outcome.body, u.key, u.token])
        : c.run('DELETE FROM billing_api_idempotency WHERE key = ? AND status = 0 AND body = ?', [u.key, u.token]),
    );
    if (this.unsettled.delete(u.token)) this.log('info', 'recorded an Idempotency-Key outcome after the database came back', { idempotencyKey: u.key });
  }

  /** A write whose driver failure is a typed, secret-free DATABASE_ERROR (503), as the ledger's are, not a 500. */
  private write<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T> {
    return this.d.writeTransaction(fn).catch(throwAsBillingError);
  }

  private defer(u: Unsettled, e: unknown): void {
    if (!this.unsettled.has(u.token)) {
      const err = asBillingError(e);
      this.log('warn', `could not ${u.outcome ? 'record the answer' : 'drop the claim'} of an Idempotency-Key; retrying until the database answers`, {
        idempotencyKey: u.key,
        err: { code: err.code, message: err.message },
      });
    }
    this.unsettled.set(u.token, u);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.unsettled.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.retry(true);
    }, this.retryMs);
    // A serve with nothing else to do may exit; close() makes the last attempt.
    this.timer.unref();
  }

  private async retry(again: boolean): Promise<void> {
    let failed = false;
    for (const u of [...this.unsettled.values()]) {
      await this.settle(u).catch(() => (failed = true));
    }
    this.retryMs = failed ? Math.min(this.retryMs * 2, RETRY_MAX_MS) : RETRY_MIN_MS;
    if (again) this.schedule();
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
/** Backoff between attempts to write an outcome the database refused: soon after it is back, without hammering it while down. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5_000;

/** How long a claimed key stays claimed before another attempt may take it over (its serve died mid-request). */
const STALE_CLAIM_MS = 5 * 60_000;

/** The ledger idempotency key for the ledger operation a request performs. */
export function ledgerKey(httpKey: string): string {
  return `api:${httpKey}`;
}
