import { describe, expect, it } from 'vitest';
import { applySchemas } from '../src/ledger/schema-runner';
import { SECRET_NOT_REPLAYED } from '../src/server/idempotency';
import { migrateServer, SERVER_SCHEMA } from '../src/server/schema';
import { WEBHOOK_SCHEMA } from '../src/webhooks/schema';
import { BACKENDS } from './support/backends';
import { client, createKey, startServe } from './support/serve';

/** Every stored replay body, read straight from the database (as a backup or a support dump would). */
async function storedBodies(backend: (typeof BACKENDS)[number], db: string): Promise<string[]> {
  const ledger = await backend.open(db);
  try {
    return (await ledger.dialect.read((c) => c.query('SELECT body FROM billing_api_idempotency ORDER BY key'))).map((r) => String(r.body));
  } finally {
    await ledger.close();
  }
}

describe.each(BACKENDS)('stored replays of webhook endpoint answers on $name', (backend) => {
  it('keep no signing secret: the first answer has it, a replay has secret null and says why; the rest of the answer is the same', async () => {
    const db = await backend.freshTarget();
    const token = (await createKey(db, 'admin')).token;
    const serve = await startServe(db, ['--no-deliver']);
    try {
      const admin = client(serve.url, token);
      const body = { url: 'https://hooks.example.com/in', events: ['topup.succeeded'] };
      const made = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-once', body });
      expect(made.status).toBe(201);
      expect(made.json.secret).toMatch(/^whsec_/);
      const replay = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-once', body });
      expect(replay.status).toBe(201);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      const { secret: _secret, ...rest } = made.json;
      expect(replay.json).toEqual({ ...rest, secret: null, secretNote: SECRET_NOT_REPLAYED });

      const rotated = await admin('POST', `/v1/webhooks/endpoints/${made.json.id}/rotate-secret`, { key: 'rot-once', body: { overlapSeconds: 60 } });
      expect(rotated.json.secret).toMatch(/^whsec_/);
      const rotReplay = await admin('POST', `/v1/webhooks/endpoints/${made.json.id}/rotate-secret`, { key: 'rot-once', body: { overlapSeconds: 60 } });
      expect(rotReplay.headers.get('idempotent-replayed')).toBe('true');
      expect(rotReplay.json).toMatchObject({ id: made.json.id, secret: null, secretNote: SECRET_NOT_REPLAYED, oldSecretsExpireAt: rotated.json.oldSecretsExpireAt });
      // The note's advice works: a rotation with overlap 0 under a new key gives a new secret and keeps none.
      const recovered = await admin('POST', `/v1/webhooks/endpoints/${made.json.id}/rotate-secret`, { key: 'rot-lost', body: { overlapSeconds: 0 } });
      expect(recovered.json).toMatchObject({ secret: expect.stringMatching(/^whsec_/), oldSecretsExpireAt: [] });
    } finally {
      await serve.stop();
    }
    const stored = await storedBodies(backend, db);
    expect(stored).toHaveLength(3);
    for (const b of stored) expect(b).not.toContain('whsec_');
  });

  it('replays stored with a secret before this release are scrubbed by the upgrade; other stored answers and claims are untouched', async () => {
    const db = await backend.freshTarget();
    const ledger = await backend.open(db);
    try {
      const d = ledger.dialect;
      // serve's tables as the previous release left them: its first step only.
      await applySchemas(d, [WEBHOOK_SCHEMA, { ...SERVER_SCHEMA, steps: SERVER_SCHEMA.steps.filter((s) => s.version === 1) }]);
      const endpoint = { id: 'we_0123456789abcdef0123456789abcdef', url: 'https://hooks.example.com/in', events: ['*'], description: null, enabled: true, secret: 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0', createdAt: '2026-11-30T10:00:00.000Z' };
      const plan = JSON.stringify({ id: 'starter', description: 'mentions "secret":"whsec_ in text only' });
      await d.writeTransaction(async (c) => {
        await c.run('INSERT INTO billing_api_idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?)', ['k-endpoint', 'fp1', 201, JSON.stringify(endpoint), 1]);
        await c.run('INSERT INTO billing_api_idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?)', ['k-plan', 'fp2', 201, plan, 2]);
        await c.run('INSERT INTO billing_api_idempotency (key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?)', ['k-running', 'fp3', 0, '', 3]);
      });
      await migrateServer(d);
      const rows = await d.read((c) => c.query('SELECT key, status, body FROM billing_api_idempotency ORDER BY key'));
      const byKey = new Map(rows.map((r) => [String(r.key), r]));
      const { secret: _secret, ...rest } = endpoint;
      expect(JSON.parse(String(byKey.get('k-endpoint')!.body))).toEqual({ ...rest, secret: null, secretNote: SECRET_NOT_REPLAYED });
      expect(Number(byKey.get('k-endpoint')!.status)).toBe(201);
      expect(String(byKey.get('k-plan')!.body)).toBe(plan);
      expect(String(byKey.get('k-running')!.body)).toBe('');
      // Run again (another process): nothing left to change.
      await migrateServer(d);
      expect(await d.read((c) => c.query('SELECT key, status, body FROM billing_api_idempotency ORDER BY key'))).toEqual(rows);
    } finally {
      await ledger.close();
    }
  });
});
