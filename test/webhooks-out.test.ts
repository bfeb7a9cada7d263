import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retryDelayMs } from '../src/webhooks/retry';
import { signature, verifySignature } from '../src/webhooks/sign';
import { openWithEvents } from '../src/webhooks/open';
import { BACKENDS } from './support/backends';
import { cli, client, createKey, type ServeProcess, startServe } from './support/serve';
import { Receiver, until } from './support/webhook-receiver';

describe('webhook signatures and retry policy', () => {
  it('signs the Standard Webhooks way: the reference verifier accepts it, a changed body or secret does not', () => {
    const secret = `whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`;
    const ts = Math.floor(Date.now() / 1000);
    const body = '{"type":"topup.succeeded"}';
    const sig = signature(secret, 'evt_1', ts, body);
    const headers = { 'webhook-id': 'evt_1', 'webhook-timestamp': String(ts), 'webhook-signature': sig };
    expect(() => new Webhook(secret).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(secret).verify(`${body} `, headers)).toThrow();
    expect(verifySignature(secret, 'evt_1', ts, body, `v1,bogus ${sig}`)).toBe(true);
    expect(verifySignature(secret, 'evt_2', ts, body, sig)).toBe(false);
  });

  it('backs off exponentially, capped, with 50–100 % jitter', () => {
    const p = { baseMs: 1000, maxMs: 60_000, maxAttempts: 10 };
    expect(retryDelayMs(1, p, () => 0)).toBe(500);
    expect(retryDelayMs(1, p, () => 1)).toBe(1000);
    expect(retryDelayMs(4, p, () => 1)).toBe(8000);
    expect(retryDelayMs(30, p, () => 1)).toBe(60_000);
    expect(retryDelayMs(30, p, () => 0)).toBe(30_000);
  });
});

describe.each(BACKENDS)('outbound webhooks through serve on $name', (backend) => {
  let db: string;
  let serve: ServeProcess;
  let admin: ReturnType<typeof client>;
  let token: string;
  const receiver = new Receiver();
  const args = ['--webhook-retry-base', '200', '--webhook-poll', '100'];

  beforeAll(async () => {
    db = await backend.freshTarget();
    token = (await createKey(db, 'admin')).token;
    serve = await startServe(db, args);
    admin = client(serve.url, token);
    await receiver.up();
  });
  afterAll(async () => {
    await serve?.stop();
    await receiver.down();
  });

  const events = async (): Promise<Array<{ id: string; type: string }>> => (await admin('GET', '/v1/webhooks/events?limit=500')).json.data;

  it('manages endpoints and filters through the API', async () => {
    const bad = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-bad', body: { url: 'ftp://x', events: ['nope'] } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('VALIDATION_ERROR');
    const ep = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-1', body: { url: `http://127.0.0.1:${receiver.port}/hooks`, events: ['*'] } });
    expect(ep.status).toBe(201);
    expect(ep.json.secret).toMatch(/^whsec_/);
    receiver.secret = ep.json.secret;
    const filtered = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-2', body: { url: `http://127.0.0.1:${receiver.port}/only-invoices`, events: ['invoice.closed'] } });
    const list = (await admin('GET', '/v1/webhooks/endpoints')).json.data;
    expect(list.map((e: { id: string }) => e.id)).toEqual([ep.json.id, filtered.json.id]);
    expect(JSON.stringify(list)).not.toContain('whsec_');
    const upd = await admin('PATCH', `/v1/webhooks/endpoints/${filtered.json.id}`, { key: 'ep-2-off', body: { enabled: false } });
    expect(upd.json.enabled).toBe(false);
    expect((await admin('DELETE', `/v1/webhooks/endpoints/${filtered.json.id}`, { key: 'ep-2-del' })).status).toBe(200);
    expect((await admin('GET', `/v1/webhooks/endpoints/${filtered.json.id}`)).json.error.code).toBe('NOT_FOUND');
  });

  it('delivers a top-up event, signed, with a stable id', async () => {
    await admin('POST', '/v1/customers', { key: 'c-1', body: { id: 'hook-cust' } });
    // Set before any money moves: a writing process caches thresholds for up to 5 s.
    await admin('PATCH', '/v1/customers/hook-cust', { key: 'hook-thr', body: { lowBalanceThresholdUsd: '5' } });
    const t = await admin('POST', '/v1/customers/hook-cust/topups', { key: 'hook-pay-1', body: { amountUsd: '10' } });
    await until('topup.succeeded', () => receiver.got.some((g) => g.type === 'topup.succeeded'));
    const g = receiver.got.find((x) => x.type === 'topup.succeeded')!;
    expect(g.verified).toBe(true);
    expect(g.body.data).toMatchObject({ customerId: 'hook-cust', topUpId: t.json.id, amountUsd: '10.00', balanceUsd: '10.00' });
    expect(g.id).toBe(g.body.data.id);
    // A replayed top-up is the same cause: no second event.
    await admin('POST', '/v1/customers/hook-cust/topups', { key: 'hook-pay-1', body: { amountUsd: '10' } });
    expect((await events()).filter((e) => e.type === 'topup.succeeded')).toHaveLength(1);
  });

  it('loses nothing while the receiver is down (and serve restarts), and delivers each event id once', async () => {
    await receiver.down();
    await admin('POST', '/v1/customers/hook-cust/charges', { key: 'hook-ch-1', body: { amountUsd: '6' } });
    const refused = await admin('POST', '/v1/customers/hook-cust/charges', { key: 'hook-ch-2', body: { amountUsd: '100' } });
    expect(refused.json.error.code).toBe('INSUFFICIENT_FUNDS');
    await admin('POST', '/v1/customers/hook-cust/charges', { key: 'hook-ch-2', body: { amountUsd: '100' } }); // the same refused request again
    await admin('POST', '/v1/customers/hook-cust/topups', { key: 'hook-pay-2', body: { amountUsd: '1.25' } });

    // Causes in another process (as inside Flowise): quota admissions write usage.threshold and run.refused in their own transactions.
    const other = await openWithEvents(db, { actor: 'flowise' });
    try {
      for (let i = 0; i < 19; i++) await other.quota.admitRun({ customerId: 'hook-cust', conversationId: `conv-${i}` });
    } finally {
      await other.close();
    }

    await until('failed attempts', () => serve.logs.some((l) => l.msg === 'webhook delivery failed, will retry'));
    const status = (await admin('GET', '/v1/webhooks/status')).json;
    expect(status.pending).toBeGreaterThanOrEqual(4);

    await serve.stop();
    serve = await startServe(db, args);
    admin = client(serve.url, token);
    await receiver.up();

    const all = await events();
    const types = all.map((e) => e.type).sort();
    expect(types).toEqual(['balance.low', 'run.refused', 'topup.succeeded', 'topup.succeeded', 'usage.threshold']);
    const ids = new Set(all.map((e) => e.id));
    await until('every event delivered', () => [...ids].every((id) => receiver.got.some((g) => g.id === id)));
    await new Promise((r) => setTimeout(r, 500));
    const seen = receiver.got.map((g) => g.id);
    expect(seen).toHaveLength(new Set(seen).size);
    expect(receiver.got.every((g) => g.verified)).toBe(true);
    const low = receiver.got.find((g) => g.type === 'balance.low')!;
    expect(low.body.data).toMatchObject({ customerId: 'hook-cust', balanceUsd: '4.00', thresholdUsd: '5.00' });
    expect(receiver.got.find((g) => g.type === 'run.refused')!.body.data).toMatchObject({ reason: 'INSUFFICIENT_FUNDS', operation: 'charge' });
    expect(receiver.got.find((g) => g.type === 'usage.threshold')!.body.data).toMatchObject({ metric: 'sessions', threshold: 75, percentage: '76.00' });
  });
});

describe('endpoints CLI', () => {
  it('creates, lists, updates, deletes endpoints and delivers once', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    const receiver = new Receiver();
    await receiver.up();
    try {
      const bad = await cli(['--db', db, '--json', 'endpoints', 'create', 'not a url']);
      expect(bad.code).toBe(1);
      expect(JSON.parse(bad.stdout).error.code).toBe('VALIDATION_ERROR');
      const made = await cli(['--db', db, '--json', 'endpoints', 'create', `http://127.0.0.1:${receiver.port}/in`, '--events', 'topup.succeeded']);
      expect(made.code).toBe(0);
      const ep = JSON.parse(made.stdout);
      receiver.secret = ep.secret;
      const list = JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'list'])).stdout);
      expect(list.endpoints).toHaveLength(1);
      expect(list.endpoints[0]).toMatchObject({ id: ep.id, events: ['topup.succeeded'], enabled: true });
      // A CLI top-up raises the event; `endpoints deliver` (once) sends it.
      expect((await cli(['--db', db, 'customers', 'create', 'cli-c'])).code).toBe(0);
      expect((await cli(['--db', db, 'topup', 'cli-c', '3', '--key', 'cli-pay'])).code).toBe(0);
      const d = JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'deliver'])).stdout);
      expect(d).toMatchObject({ attempted: 1, delivered: 1 });
      expect(receiver.got).toHaveLength(1);
      expect(receiver.got[0]).toMatchObject({ type: 'topup.succeeded', verified: true });
      const upd = JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'update', ep.id, '--disable'])).stdout);
      expect(upd.enabled).toBe(false);
      expect(JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'status'])).stdout)).toMatchObject({ delivered: 1, pending: 0, failed: 0 });
      expect((await cli(['--db', db, 'endpoints', 'delete', ep.id])).code).toBe(0);
      expect(JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'delete', ep.id])).stdout).error.code).toBe('NOT_FOUND');
    } finally {
      await receiver.down();
    }
  });
});
