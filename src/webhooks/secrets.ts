import { z } from 'zod';
import { BillingError } from '../errors';
import type { Dialect, Row, SqlConnection } from '../ledger/dialect';

/**
 * Rotating an endpoint's signing secret without breaking its receiver.
 * Standard Webhooks lets `webhook-signature` carry several space-separated
 * signatures (`v1,<a> v1,<b>`) for exactly this: after a rotation every
 * request is signed with the new secret and with the replaced one until the
 * overlap ends, so the receiver verifies with either while its operator
 * deploys the new one. Then the replaced secret is dropped from the row.
 */

/** The overlap when none is given: a day, time enough to deploy a new secret to a receiver. */
export const DEFAULT_OVERLAP_S = 24 * 3600;
/** The longest overlap: a week (Stripe's longest secret roll too); a replaced, maybe leaked, secret should not stay valid longer. */
export const MAX_OVERLAP_S = 7 * 24 * 3600;
/**
 * Replaced secrets that may still sign at once. Rotations inside one overlap pile up (each keeps the ones before,
 * since nobody knows which one the receiver has deployed), and each adds a signature to every request.
 */
export const MAX_OLD_SECRETS = 4;

export const overlapSeconds = z
  .number({ invalid_type_error: 'the overlap must be a number of seconds' })
  .int('the overlap must be a whole number of seconds')
  .min(0, 'the overlap must be 0 (drop the old secret now) or more')
  .max(MAX_OVERLAP_S, `the overlap must be at most 7 days (${MAX_OVERLAP_S} s)`);

/** The body of a rotation (API) and what the CLI's --overlap becomes. */
export const rotationInput = z.object({ overlapSeconds: overlapSeconds.default(DEFAULT_OVERLAP_S) }).strict();

const UNIT_S: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** The CLI's --overlap: digits with an optional unit s, m, h or d ("24h", "90m", "0"), bounded as overlapSeconds. */
export const overlapText = z
  .string()
  .regex(/^\d{1,7}[smhd]?$/, 'overlap must be a whole number with an optional unit s, m, h or d, e.g. 24h, 90m, 0')
  .transform((s) => Number(s.replace(/[smhd]$/, '')) * UNIT_S[/[smhd]$/.test(s) ? s.slice(-1) : 's']!)
  .pipe(overlapSeconds);

interface OldSecret {
  readonly secret: string;
  /** Epoch ms after which it no longer signs. */
  readonly expiresAt: number;
}

function oldSecretsOf(r: Row): OldSecret[] {
  return r.old_secrets === null || r.old_secrets === undefined ? [] : (JSON.parse(String(r.old_secrets)) as OldSecret[]);
}

/** The secrets a request sent at `now` is signed with: the current one first, then each replaced one still in its overlap. */
export function signingSecrets(r: Row, now: number): string[] {
  return [String(r.secret), ...oldSecretsOf(r).filter((s) => s.expiresAt > now).map((s) => s.secret)];
}

/** When each replaced secret still signing stops, soonest first (what an operator sees; never the secrets). */
export function oldSecretExpiries(r: Row, now: number): string[] {
  return oldSecretsOf(r)
    .filter((s) => s.expiresAt > now)
    .map((s) => s.expiresAt)
    .sort((a, b) => a - b)
    .map((t) => new Date(t).toISOString());
}

function columns(list: readonly OldSecret[]): [string | null, number | null] {
  return list.length === 0 ? [null, null] : [JSON.stringify(list), Math.min(...list.map((s) => s.expiresAt))];
}

/**
 * Makes `secret` the endpoint's signing secret (row `r`, read for update in
 * `c`'s transaction). The replaced one signs until now + overlap; ones
 * replaced before keep their own end, brought forward to that same instant
 * at the latest, so overlap 0 drops every replaced secret at once (the answer
 * to a leaked one).
 */
export async function rotate(c: SqlConnection, r: Row, secret: string, overlapS: number, now: number): Promise<void> {
  const until = now + overlapS * 1000;
  const kept = [...oldSecretsOf(r), { secret: String(r.secret), expiresAt: until }]
    .map((s) => ({ secret: s.secret, expiresAt: Math.min(s.expiresAt, until) }))
    .filter((s) => s.expiresAt > now);
  if (kept.length > MAX_OLD_SECRETS) {
    const next = new Date(Math.min(...kept.slice(0, -1).map((s) => s.expiresAt))).toISOString();
    throw new BillingError(
      'SECRET_ROTATION_LIMIT',
      `Webhook endpoint ${String(r.id)} already signs with ${kept.length - 1} replaced secrets besides its current one (the first stops at ${next}); rotate again after that, or with overlap 0 to drop every replaced secret now`,
      { endpointId: String(r.id), oldSecrets: kept.length - 1, nextExpiry: next },
    );
  }
  await c.run('UPDATE billing_webhook_endpoints SET secret = ?, old_secrets = ?, old_secrets_next_expiry = ?, updated_at = ? WHERE id = ?', [secret, ...columns(kept), now, String(r.id)]);
}

/**
 * Removes replaced secrets whose overlap has ended from their rows (they
 * stopped signing at that instant already; this takes them off the disk).
 * One read of the endpoints table when there is nothing to drop.
 */
export async function dropExpiredSecrets(d: Dialect, now: number): Promise<number> {
  const due = await d.read((c) => c.query('SELECT id FROM billing_webhook_endpoints WHERE old_secrets_next_expiry <= ?', [now]));
  if (due.length === 0) return 0;
  return d.writeTransaction(async (c) => {
    let dropped = 0;
    for (const { id } of due) {
      const [r] = await c.query(`SELECT id, old_secrets FROM billing_webhook_endpoints WHERE id = ? AND old_secrets_next_expiry <= ? ${d.forUpdate}`, [String(id), now]);
      if (!r) continue; // rotated or deleted meanwhile
      const all = oldSecretsOf(r);
      const kept = all.filter((s) => s.expiresAt > now);
      await c.run('UPDATE billing_webhook_endpoints SET old_secrets = ?, old_secrets_next_expiry = ? WHERE id = ?', [...columns(kept), String(id)]);
      dropped += all.length - kept.length;
    }
    return dropped;
  });
}
