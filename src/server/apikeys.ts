import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { BillingError, ValidationError } from '../errors';
import type { Dialect, Row } from '../ledger/dialect';

export const SCOPES = ['read', 'write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];
const RANK: Record<Scope, number> = { read: 0, write: 1, admin: 2 };

/** admin ⊃ write ⊃ read. */
export function allows(have: Scope, need: Scope): boolean {
  return RANK[have] >= RANK[need];
}

export interface ApiKey {
  readonly id: string;
  readonly name: string | null;
  readonly scope: Scope;
  readonly createdAt: string;
  readonly lastUsedAt: string | null;
  readonly revokedAt: string | null;
}

/** `fbk_<id>_<secret>`: the id finds the row, the secret is compared by hash. */
const TOKEN = /^fbk_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$/;
const VERIFY_CACHE_MS = 2_000;
/** `lastUsedAt` is kept to the minute: a busy key costs one write a minute, not one per request. */
const LAST_USED_RESOLUTION_MS = 60_000;

const hash = (secret: string) => createHash('sha256').update(secret).digest('hex');

function keyFromRow(r: Row): ApiKey {
  const t = (v: unknown) => (v === null || v === undefined ? null : new Date(Number(v)).toISOString());
  return { id: String(r.id), name: r.name === null ? null : String(r.name), scope: String(r.scope) as Scope, createdAt: t(r.created_at)!, lastUsedAt: t(r.last_used_at), revokedAt: t(r.revoked_at) };
}

const createInput = z.object({ scope: z.enum(SCOPES), name: z.string().min(1).max(100).optional() });

/**
 * API keys, stored hashed. Verification is cached for two seconds per key so
 * a busy client costs no read per request; a revocation therefore takes
 * effect within two seconds in a running `serve`.
 */
export class ApiKeyStore {
  private readonly cache = new Map<string, { at: number; key: ApiKey; hash: string }>();
  /** When this process last wrote a key's last_used_at. */
  private readonly touched = new Map<string, number>();
  private touching: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly d: Dialect,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Creates a key; the returned `token` is the only time the secret exists outside the caller. */
  async create(input: { scope: string; name?: string }): Promise<ApiKey & { token: string }> {
    const r = createInput.safeParse(input);
    if (!r.success) throw ValidationError.fromZod('API key', r.error);
    const id = randomUUID().replace(/-/g, '').slice(0, 16);
    const secret = randomBytes(32).toString('base64url');
    const now = this.clock();
    await this.d.writeTransaction((c) =>
      c.run('INSERT INTO billing_api_keys (id, name, scope, secret_hash, created_at, last_used_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL, NULL)', [
        id, r.data.name ?? null, r.data.scope, hash(secret), now,
      ]),
    );
    return { ...(await this.get(id)), token: `fbk_${id}_${secret}` };
  }

  async get(id: string): Promise<ApiKey> {
    const [r] = await this.d.read((c) => c.query('SELECT * FROM billing_api_keys WHERE id = ?', [id]));
    if (!r) throw new BillingError('NOT_FOUND', `API key ${id} does not exist`, { apiKeyId: id });
    return keyFromRow(r);
  }

  async list(): Promise<ApiKey[]> {
    const rows = await this.d.read((c) => c.query('SELECT * FROM billing_api_keys ORDER BY created_at, id'));
    return rows.map(keyFromRow);
  }

  async revoke(id: string): Promise<ApiKey> {
    await this.d.writeTransaction(async (c) => {
      const n = await c.run('UPDATE billing_api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?', [this.clock(), id]);
      if (n === 0) throw new BillingError('NOT_FOUND', `API key ${id} does not exist`, { apiKeyId: id });
    });
    this.cache.delete(id);
    return this.get(id);
  }

  /** The key a bearer token names, or UNAUTHORIZED (never saying which part was wrong). */
  async verify(token: string | undefined): Promise<ApiKey> {
    const refused = () => new BillingError('UNAUTHORIZED', 'A valid API key is required: Authorization: Bearer fbk_…', {});
    const m = token ? TOKEN.exec(token) : null;
    if (!m) throw refused();
    const [, id, secret] = m as unknown as [string, string, string];
    const now = this.clock();
    let entry = this.cache.get(id);
    if (!entry || now - entry.at >= VERIFY_CACHE_MS) {
      const [r] = await this.d.read((c) => c.query('SELECT * FROM billing_api_keys WHERE id = ?', [id]));
      if (!r) throw refused();
      entry = { at: now, key: keyFromRow(r), hash: String(r.secret_hash) };
      this.cache.set(id, entry);
    }
    const a = Buffer.from(hash(secret), 'hex');
    const b = Buffer.from(entry.hash, 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b) || entry.key.revokedAt !== null) throw refused();
    this.touch(id, now, entry.key.lastUsedAt);
    return entry.key;
  }

  /**
   * Records that a key was used, at most once a minute per key and process. Not awaited by the request:
   * a failed write (the database restarting) costs the key its last-used time, never the request.
   */
  private touch(id: string, now: number, stored: string | null): void {
    const last = Math.max(this.touched.get(id) ?? 0, stored === null ? 0 : Date.parse(stored));
    if (now - last < LAST_USED_RESOLUTION_MS) return;
    this.touched.set(id, now);
    this.touching = this.touching
      .then(() => this.d.writeTransaction((c) => c.run('UPDATE billing_api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)', [now, id, now])))
      .catch(() => this.touched.delete(id));
  }

  /** Waits for last-used writes in flight (before the database closes). */
  async flush(): Promise<void> {
    await this.touching;
  }
}

/** `Authorization: Bearer <token>`. */
export const BEARER = /^Bearer\s+(\S+)$/i;
