import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseUsd } from '../src/money';
import { WebhookDeliverer } from '../src/webhooks/deliver';
import { openWithEvents, type OpenedServices } from '../src/webhooks/open';
import { BACKENDS } from './support/backends';
import { cli, client, createKey, startServe } from './support/serve';

const DAY_MS = 24 * 3600 * 1000;

interface Hit {
  readonly signatures: number;
  /** Per secret the receiver was given: did the standardwebhooks verifier accept the request with it (checked on arrival)? */
  readonly accepted: boolean[];
}

/** A loopback receiver that verifies each request with the official `standardwebhooks` package, once per secret in `secrets`. */
async function receiver(): Promise<{ url: string; secrets: string[]; hits: Hit[]; close(): Promise<void> }> {
  const secrets: string[] = [];
  const hits: Hit[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const accepted = secrets.map((s) => {
        try {
          new Webhook(s).verify(body, req.headers as Record<string, string>);
          return true;
        } catch {
          return false;
        }
      });
      hits.push({ signatures: String(req.headers['webhook-signature']).split(' ').length, accepted });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    secrets,
    hits,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One topup.succeeded event, owed to every endpoint. */
async function oneEvent(s: OpenedServices, id: string): Promise<void> {
  await s.ledger.createCustomer({ id });
  await s.ledger.topUp({ customerId: id, amount: parseUsd('5'), idempotencyKey: `pay-${id}` });
}

describe.each(BACKENDS)('signing secret rotation on $name', (backend) => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    vi.useRealTimers();
    await Promise.all(open.splice(0).map((o) => o.close()));
  });

  async function setup(): Promise<{ s: OpenedServices; r: Awaited<ReturnType<typeof receiver>>; d: WebhookDeliverer }> {
    const s = await openWithEvents(await backend.freshTarget());
    open.push(s);
    const r = await receiver();
    open.push(r);
    // Date.now read at each call, so a test that moves the system time moves the deliverer too.
    return { s, r, d: new WebhookDeliverer(s.ledger.dialect, { clock: () => Date.now() }) };
  }

  it('a standardwebhooks receiver accepts with the old and with the new secret during the overlap, and only with the new one after it', async () => {
    const { s, r, d } = await setup();
    const ep = await s.webhooks.createEndpoint({ url: r.url });
    const before = Date.now();
    const rotated = await s.webhooks.rotateSecret(ep.id);
    expect(rotated.secret).toMatch(/^whsec_/);
    expect(rotated.secret).not.toBe(ep.secret);
    expect(rotated.oldSecretsExpireAt).toHaveLength(1);
    const until = Date.parse(rotated.oldSecretsExpireAt[0]!);
    expect(until - before).toBeGreaterThanOrEqual(DAY_MS);
    expect(until - Date.now()).toBeLessThanOrEqual(DAY_MS);
    // Shown once: reading the endpoint back names when the old one stops, never a secret.
    const read = await s.webhooks.getEndpoint(ep.id);
    expect(read.oldSecretsExpireAt).toEqual(rotated.oldSecretsExpireAt);
    expect(JSON.stringify(await s.webhooks.listEndpoints())).not.toContain('whsec_');
    r.secrets.push(ep.secret, rotated.secret);

    await oneEvent(s, 'rot-during');
    expect(await d.deliverDue()).toMatchObject({ attempted: 1, delivered: 1 });
    expect(r.hits).toEqual([{ signatures: 2, accepted: [true, true] }]);

    // The overlap ends (the deliverer and the verifier both read the moved clock): only the new secret signs.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(until + 1_000);
    await oneEvent(s, 'rot-after');
    expect(await d.deliverDue()).toMatchObject({ attempted: 1, delivered: 1 });
    expect(r.hits[1]).toEqual({ signatures: 1, accepted: [false, true] });
    // And the old secret is gone from the row, not just unused.
    const [row] = await s.ledger.dialect.read((c) => c.query('SELECT secret, old_secrets, old_secrets_next_expiry FROM billing_webhook_endpoints WHERE id = ?', [ep.id]));
    expect(row).toMatchObject({ secret: rotated.secret, old_secrets: null, old_secrets_next_expiry: null });
    expect((await s.webhooks.getEndpoint(ep.id)).oldSecretsExpireAt).toEqual([]);
  });

  it('rotating again inside an overlap keeps every replaced secret signing (up to 4), overlap 0 drops them all at once', async () => {
    const { s, r, d } = await setup();
    const ep = await s.webhooks.createEndpoint({ url: r.url });
    r.secrets.push(ep.secret);
    const short = await s.webhooks.rotateSecret(ep.id, { overlapSeconds: 3600 });
    r.secrets.push(short.secret);
    for (let i = 0; i < 3; i++) r.secrets.push((await s.webhooks.rotateSecret(ep.id)).secret);
    // Each rotation keeps the earlier replaced secrets: nobody knows which one the receiver has deployed yet.
    const now = Date.now();
    const ends = (await s.webhooks.getEndpoint(ep.id)).oldSecretsExpireAt.map((t) => Date.parse(t) - now);
    expect(ends).toHaveLength(4);
    expect(ends[0]).toBeLessThanOrEqual(3600_000); // the first kept its 1 h
    const fifth = await s.webhooks.rotateSecret(ep.id).then(() => null, (e: { code: string; message: string; details: unknown }) => e);
    expect(fifth?.code).toBe('SECRET_ROTATION_LIMIT');
    expect(`${fifth?.message} ${JSON.stringify(fifth?.details)}`).not.toContain('whsec_');
    await oneEvent(s, 'rot-many');
    await d.deliverDue();
    expect(r.hits).toEqual([{ signatures: 5, accepted: [true, true, true, true, true] }]);

    // A leaked secret: overlap 0 leaves the new one alone.
    const clean = await s.webhooks.rotateSecret(ep.id, { overlapSeconds: 0 });
    expect(clean.oldSecretsExpireAt).toEqual([]);
    r.secrets.push(clean.secret);
    await oneEvent(s, 'rot-clean');
    await d.deliverDue();
    expect(r.hits[1]).toEqual({ signatures: 1, accepted: [false, false, false, false, false, true] });
  });

  it('refuses a bad overlap as VALIDATION_ERROR and an unknown endpoint as NOT_FOUND, changing nothing and naming no secret', async () => {
    const { s } = await setup();
    const ep = await s.webhooks.createEndpoint({ url: 'https://hooks.example.com/in' });
    for (const input of [{ overlapSeconds: -1 }, { overlapSeconds: 1.5 }, { overlapSeconds: 7 * 86_400 + 1 }, { overlapSeconds: '24h' }, { overlap: 60 }, 'x']) {
      const e = await s.webhooks.rotateSecret(ep.id, input).then(() => null, (err: { code: string; message: string }) => err);
      expect(e?.code, JSON.stringify(input)).toBe('VALIDATION_ERROR');
      expect(e?.message).not.toContain('whsec_');
    }
    await expect(s.webhooks.rotateSecret('we_00000000000000000000000000000000')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const [row] = await s.ledger.dialect.read((c) => c.query('SELECT secret, old_secrets FROM billing_webhook_endpoints WHERE id = ?', [ep.id]));
    expect(row).toMatchObject({ secret: ep.secret, old_secrets: null });
  });
});

describe('endpoints rotate-secret (CLI)', () => {
  it('prints the new secret once; endpoints deliver then signs with both; bad --overlap and unknown ids are refused', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    const r = await receiver();
    try {
      const ep = JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'create', r.url])).stdout);
      for (const overlap of ['8d', '1.5h', '-1', '24 h', 'abc', '']) {
        const bad = await cli(['--db', db, '--json', 'endpoints', 'rotate-secret', ep.id, '--overlap', overlap]);
        expect(bad.code, overlap).toBe(1);
        expect(JSON.parse(bad.stdout).error.code, overlap).toBe('VALIDATION_ERROR');
      }
      const unknown = await cli(['--db', db, '--json', 'endpoints', 'rotate-secret', 'we_00000000000000000000000000000000']);
      expect(JSON.parse(unknown.stdout).error.code).toBe('NOT_FOUND');
      const started = Date.now();
      const rotated = await cli(['--db', db, '--json', 'endpoints', 'rotate-secret', ep.id, '--overlap', '2h']);
      expect(rotated.code, rotated.stderr).toBe(0);
      const out = JSON.parse(rotated.stdout);
      expect(out).toMatchObject({ id: ep.id, url: r.url });
      expect(out.secret).toMatch(/^whsec_/);
      expect(out.secret).not.toBe(ep.secret);
      expect(Date.parse(out.oldSecretsExpireAt[0]) - started).toBeGreaterThanOrEqual(2 * 3600_000 - 1000);
      expect(Date.parse(out.oldSecretsExpireAt[0]) - Date.now()).toBeLessThanOrEqual(2 * 3600_000);
      // Listing shows until when, not what.
      const list = await cli(['--db', db, 'endpoints', 'list']);
      expect(list.stdout).toContain(out.oldSecretsExpireAt[0]);
      expect(list.stdout).not.toContain('whsec_');
      r.secrets.push(ep.secret, out.secret);
      expect((await cli(['--db', db, 'customers', 'create', 'rot-cli'])).code).toBe(0);
      expect((await cli(['--db', db, 'topup', 'rot-cli', '3', '--key', 'rot-pay'])).code).toBe(0);
      const delivered = await cli(['--db', db, '--json', 'endpoints', 'deliver']);
      expect(JSON.parse(delivered.stdout)).toMatchObject({ attempted: 1, delivered: 1 });
      expect(delivered.stderr).not.toContain('whsec_');
      expect(r.hits).toEqual([{ signatures: 2, accepted: [true, true] }]);
      const human = await cli(['--db', db, 'endpoints', 'rotate-secret', ep.id, '--overlap', '0']);
      expect(human.code).toBe(0);
      expect(human.stdout).toMatch(/secret\s+whsec_/);
      expect(human.stdout).toContain('none: only the new secret signs');
    } finally {
      await r.close();
    }
  });
});

describe.each(BACKENDS)('POST /v1/webhooks/endpoints/{id}/rotate-secret on $name', (backend) => {
  it('needs the admin scope, validates the body, and a retry with the same key does not rotate twice', async () => {
    const db = await backend.freshTarget();
    const [adminKey, writeKey] = [(await createKey(db, 'admin')).token, (await createKey(db, 'write')).token];
    const serve = await startServe(db, ['--no-deliver']);
    try {
      const admin = client(serve.url, adminKey);
      const ep = (await admin('POST', '/v1/webhooks/endpoints', { key: 'rot-ep', body: { url: 'https://hooks.example.com/in' } })).json;
      const path = `/v1/webhooks/endpoints/${ep.id}/rotate-secret`;
      const forbidden = await client(serve.url, writeKey)('POST', path, { key: 'rot-w', body: {} });
      expect([forbidden.status, forbidden.json.error.code]).toEqual([403, 'FORBIDDEN']);
      for (const body of [{ overlapSeconds: -5 }, { overlapSeconds: 604_801 }, { overlapSeconds: 'soon' }, { other: 1 }]) {
        const bad = await admin('POST', path, { key: `rot-bad-${JSON.stringify(body)}`, body });
        expect([bad.status, bad.json.error.code], JSON.stringify(body)).toEqual([400, 'VALIDATION_ERROR']);
      }
      const unknown = await admin('POST', '/v1/webhooks/endpoints/we_00000000000000000000000000000000/rotate-secret', { key: 'rot-404' });
      expect([unknown.status, unknown.json.error.code]).toEqual([404, 'NOT_FOUND']);
      const first = await admin('POST', path, { key: 'rot-1', body: { overlapSeconds: 600 } });
      expect(first.status).toBe(200);
      expect(first.json.secret).toMatch(/^whsec_/);
      expect(first.json.secret).not.toBe(ep.secret);
      expect(first.json.oldSecretsExpireAt).toHaveLength(1);
      const again = await admin('POST', path, { key: 'rot-1', body: { overlapSeconds: 600 } });
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.json.id).toBe(ep.id);
      expect((await admin('GET', `/v1/webhooks/endpoints/${ep.id}`)).json.oldSecretsExpireAt).toEqual(first.json.oldSecretsExpireAt);
      // Without a body: the default overlap, a day.
      const plain = await admin('POST', path, { key: 'rot-2' });
      expect(plain.status).toBe(200);
      expect(Date.parse(plain.json.oldSecretsExpireAt.at(-1)) - Date.now()).toBeGreaterThan(DAY_MS - 60_000);
      expect(serve.logs.map((l) => JSON.stringify(l)).join('\n')).not.toContain('whsec_');
    } finally {
      await serve.stop();
    }
  });
});
