import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { WebhookDeliverer } from '../src/webhooks/deliver';
import { eventId, writeEvents } from '../src/webhooks/events';
import { FETCH_BLOCKED_PORTS } from '../src/webhooks/store';
import { openWithEvents, type OpenedServices } from '../src/webhooks/open';
import { BACKENDS } from './support/backends';
import { cli, client, createKey, startServe } from './support/serve';

/** A loopback receiver whose every answer is `answer(req, res)`. */
async function receiver(answer: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<{ url: string; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    req.resume();
    req.on('end', () => answer(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    hits: () => hits,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe.each(BACKENDS)('webhook endpoints and delivery under bad input and faults on $name', (backend) => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((o) => o.close()));
  });

  async function services(): Promise<OpenedServices> {
    const s = await openWithEvents(await backend.freshTarget());
    open.push(s);
    return s;
  }

  /** One topup.succeeded event, owed to every endpoint. */
  async function oneEvent(s: OpenedServices, id: string): Promise<void> {
    await s.ledger.createCustomer({ id });
    await s.ledger.topUp({ customerId: id, amount: parseUsd('5'), idempotencyKey: `pay-${id}` });
  }

  it('refuses control characters and surrounding spaces in url and description as VALIDATION_ERROR, and stores nothing', async () => {
    const s = await services();
    const ok = await s.webhooks.createEndpoint({ url: 'https://hooks.example.com/in', description: 'billing' });
    const bad: Array<Record<string, unknown>> = [
      { url: 'https://hooks.example.com/a\nb' },
      { url: 'https://hooks.example.com/a\tb' },
      { url: 'https://hooks.example.com/\u0000' },
      { url: 'https://hooks.example.com/\u001b[31m' },
      { url: ' https://hooks.example.com/in' },
      { url: 'https://hooks.example.com/in\n' },
      { url: 'https://hooks.example.com/in', description: 'two\nlines' },
      { url: 'https://hooks.example.com/in', description: 'nul\u0000' },
    ];
    for (const input of bad) {
      await expect(s.webhooks.createEndpoint(input), JSON.stringify(input)).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
      const { url, description } = input as { url: string; description?: string };
      await expect(s.webhooks.updateEndpoint(ok.id, description === undefined ? { url } : { description }), JSON.stringify(input)).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
      });
    }
    const { secret: _secret, ...unchanged } = ok;
    expect(await s.webhooks.listEndpoints()).toEqual([unchanged]);
  });

  it('refuses an endpoint on a port fetch never connects to (the bad ports of the Fetch standard), as fetch itself does', async () => {
    const s = await services();
    for (const port of ['6000', '10080', '25', '6667']) {
      const url = `http://127.0.0.1:${port}/hook`;
      await expect(s.webhooks.createEndpoint({ url }), url).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: expect.stringContaining('port') });
    }
    // The list is the runtime's: fetch refuses every port on it before connecting, and connects to the others.
    for (const port of FETCH_BLOCKED_PORTS) {
      const e = await fetch(`http://127.0.0.1:${port}/`).then(() => null, (err: Error) => err);
      expect(String((e?.cause as Error | undefined)?.message), port).toBe('bad port');
    }
    const open = await fetch('http://127.0.0.1:2/').then(() => null, (err: Error) => err);
    expect((open?.cause as { code?: string } | undefined)?.code).toBe('ECONNREFUSED');
    for (const url of ['http://127.0.0.1:8080/hook', 'https://hooks.example.com:8443/in', 'https://hooks.example.com/in']) {
      expect((await s.webhooks.createEndpoint({ url })).url).toBe(url);
    }
  });

  it('a receiver answering 410 Gone: the delivery fails for good, the endpoint is disabled, nothing more is sent to it', async () => {
    const s = await services();
    const r = await receiver((_req, res) => res.writeHead(410).end());
    open.push(r);
    const ep = await s.webhooks.createEndpoint({ url: r.url });
    await oneEvent(s, 'gone-1');
    const logs: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
    const d = new WebhookDeliverer(s.ledger.dialect, { retry: { baseMs: 1, maxMs: 1, maxAttempts: 20 }, log: (level, msg, fields) => logs.push({ level, msg, fields }) });
    expect(await d.deliverDue()).toMatchObject({ attempted: 1, failed: 1, retrying: 0 });
    expect(await s.webhooks.getEndpoint(ep.id)).toMatchObject({ enabled: false });
    expect(await s.webhooks.deliveryCounts()).toMatchObject({ pending: 0, failed: 1 });
    expect(logs.map((l) => l.msg)).toEqual(['webhook endpoint answered 410 Gone: delivery failed, endpoint disabled']);
    await new Promise((res) => setTimeout(res, 5));
    expect(await d.deliverDue()).toMatchObject({ attempted: 0 });
    expect(r.hits()).toBe(1);
    // The operator turns it back on and requeues: it is tried again.
    await s.webhooks.updateEndpoint(ep.id, { enabled: true });
    expect(await s.webhooks.retryFailed(ep.id)).toBe(1);
    expect(await d.deliverDue()).toMatchObject({ attempted: 1 });
  });

  it('status names the last failures and why (a refused connection, a port fetch will not call), not a bare TypeError', async () => {
    const s = await services();
    const closed = await receiver((_req, res) => res.end());
    await closed.close();
    const refused = await s.webhooks.createEndpoint({ url: closed.url });
    // An endpoint on a port fetch refuses, as a release that did not refuse them at creation stored it.
    const blocked = await s.webhooks.createEndpoint({ url: 'http://127.0.0.1:6001/hooks' });
    await s.ledger.dialect.writeTransaction((c) => c.run('UPDATE billing_webhook_endpoints SET url = ? WHERE id = ?', ['http://127.0.0.1:6000/hooks', blocked.id]));
    await oneEvent(s, 'down-1');
    expect(await new WebhookDeliverer(s.ledger.dialect).deliverDue()).toMatchObject({ attempted: 2, retrying: 2 });
    const status = await s.webhooks.deliveryCounts();
    expect(status).toMatchObject({ pending: 2, failed: 0 });
    expect(status.lastErrors.map((e) => [e.endpointId, e.attempts, e.error]).sort()).toEqual(
      [
        [refused.id, 1, 'request failed: ECONNREFUSED'],
        [blocked.id, 1, 'request failed: bad port'],
      ].sort(),
    );
  });

  it('a receiver answering 503 or 429 with Retry-After is not called again before it says (seconds or an HTTP date), capped by the policy', async () => {
    const s = await services();
    let now = Date.now();
    const answers = [
      (res: http.ServerResponse) => res.writeHead(503, { 'retry-after': '120' }).end(),
      (res: http.ServerResponse) => res.writeHead(429, { 'retry-after': new Date(now + 300_000).toUTCString() }).end(),
      (res: http.ServerResponse) => res.writeHead(503, { 'retry-after': '999999' }).end(),
      (res: http.ServerResponse) => res.writeHead(503, { 'retry-after': 'soon' }).end(),
    ];
    const r = await receiver((_req, res) => answers.shift()!(res));
    open.push(r);
    await s.webhooks.createEndpoint({ url: r.url });
    await oneEvent(s, 'busy-1');
    now = Date.now();
    const next: number[] = [];
    const d = new WebhookDeliverer(s.ledger.dialect, {
      clock: () => now,
      random: () => 1,
      retry: { baseMs: 1_000, maxMs: 3_600_000, maxAttempts: 20 },
      log: (_level, _msg, fields) => next.push(Date.parse(String(fields.nextAttemptAt)) - now),
    });
    for (let i = 0; i < 4; i++) {
      expect(await d.deliverDue()).toMatchObject({ attempted: 1, retrying: 1 });
      now += next[i]!;
    }
    expect(next[0]).toBe(120_000);
    expect(next[1]).toBeGreaterThanOrEqual(298_000);
    expect(next[1]).toBeLessThanOrEqual(300_000);
    expect(next[2]).toBe(3_600_000); // at most the policy's longest pause
    expect(next[3]).toBe(8_000); // unreadable: the backoff (1 s doubled three times)
  });

  it('an endpoint deleted while a transaction writes an event for it leaves no delivery counted pending for ever', async () => {
    const s = await services();
    const ep = await s.webhooks.createEndpoint({ url: 'https://hooks.example.com/in' });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let written!: () => void;
    const wrote = new Promise<void>((resolve) => (written = resolve));
    // The cause's transaction (as a ledger batch's) has written the event and its delivery, not yet committed.
    const cause = s.ledger.dialect.writeTransaction(async (c) => {
      await writeEvents(c, [{ id: eventId('topup.succeeded', 'race-1'), type: 'topup.succeeded', customerId: 'race-1', timestamp: new Date().toISOString(), data: {} }], Date.now());
      written();
      await held;
    });
    await wrote;
    const deleted = s.webhooks.deleteEndpoint(ep.id);
    await new Promise((r) => setTimeout(r, 200));
    release();
    await Promise.all([cause, deleted]);
    expect(await s.webhooks.listEndpoints()).toEqual([]);
    expect(await s.webhooks.deliveryCounts()).toMatchObject({ pending: 0, oldestPendingMs: 0, lastErrors: [] });
  });

  it('a receiver streaming an endless 2xx body: delivered at once, without reading the body into memory', async () => {
    const s = await services();
    let written = 0;
    const r = await receiver((_req, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(1 << 20);
      const more = (): void => {
        while (written < 500 << 20) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    open.push(r);
    await s.webhooks.createEndpoint({ url: r.url });
    await oneEvent(s, 'stream-1');
    const d = new WebhookDeliverer(s.ledger.dialect, { timeoutMs: 3_000 });
    const started = Date.now();
    expect(await d.deliverDue()).toMatchObject({ attempted: 1, delivered: 1 });
    expect(Date.now() - started).toBeLessThan(2_000);
    // What the socket buffers took before the deliverer hung up, not the whole stream.
    expect(written).toBeLessThan(32 << 20);
  });
});

describe('endpoints update (CLI) with nothing or contradictory to change', () => {
  it('is VALIDATION_ERROR and changes nothing', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    const made = JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'create', 'https://hooks.example.com/in'])).stdout);
    for (const flags of [[], ['--enable', '--disable']]) {
      const r = await cli(['--db', db, '--json', 'endpoints', 'update', made.id, ...flags]);
      expect(r.code, flags.join(' ')).toBe(1);
      expect(JSON.parse(r.stdout).error.code).toBe('VALIDATION_ERROR');
    }
    const { secret: _secret, ...unchanged } = made;
    expect(JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'list'])).stdout).endpoints).toEqual([unchanged]);
  });
});

describe('endpoints retry (CLI)', () => {
  it('requeues the failed deliveries of one endpoint (or all), as POST …/{id}/retry does; an unknown endpoint is NOT_FOUND', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    const s = await openWithEvents(db);
    let ep: string;
    try {
      const closed = await receiver((_req, res) => res.end());
      await closed.close();
      ep = (await s.webhooks.createEndpoint({ url: closed.url })).id;
      await s.ledger.createCustomer({ id: 'retry-1' });
      await s.ledger.topUp({ customerId: 'retry-1', amount: parseUsd('5'), idempotencyKey: 'pay-retry-1' });
      expect(await new WebhookDeliverer(s.ledger.dialect, { retry: { baseMs: 1, maxMs: 1, maxAttempts: 1 } }).deliverDue()).toMatchObject({ failed: 1 });
    } finally {
      await s.close();
    }
    const r = await cli(['--db', db, '--json', 'endpoints', 'retry', ep]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ requeued: 1 });
    expect(JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'status'])).stdout)).toMatchObject({ pending: 1, failed: 0 });
    const unknown = await cli(['--db', db, '--json', 'endpoints', 'retry', 'we_00000000000000000000000000000000']);
    expect(unknown.code).toBe(1);
    expect(JSON.parse(unknown.stdout).error.code).toBe('NOT_FOUND');
  });
});

describe('endpoints list|status|deliver (CLI) read an existing ledger only', () => {
  it('a missing ledger is LEDGER_NOT_FOUND and nothing is created; a ledger without webhook tables lists none', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    for (const cmd of [['list'], ['status'], ['deliver']]) {
      const r = await cli(['--db', db, '--json', 'endpoints', ...cmd]);
      expect(r.code, cmd.join(' ')).toBe(1);
      expect(JSON.parse(r.stdout).error.code).toBe('LEDGER_NOT_FOUND');
      expect(fs.existsSync(db)).toBe(false);
    }
    const plain = await BACKENDS[0]!.open(db); // the ledger's own tables only, as an older release left it
    await plain.close();
    expect(JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'list'])).stdout)).toEqual({ endpoints: [] });
    expect(JSON.parse((await cli(['--db', db, '--json', 'endpoints', 'status'])).stdout)).toMatchObject({ pending: 0, failed: 0 });
  });
});

describe.each(BACKENDS)('POST /v1/webhooks/endpoints under one Idempotency-Key on $name', (backend) => {
  it('concurrent first attempts make one endpoint, every answer (or retry) with its id, the secret in the first only; the key with another url is IDEMPOTENCY_CONFLICT', async () => {
    const db = await backend.freshTarget();
    const token = (await createKey(db, 'admin')).token;
    const serve = await startServe(db, ['--no-deliver']);
    try {
      const admin = client(serve.url, token);
      const answers = await Promise.all(Array.from({ length: 12 }, () => admin('POST', '/v1/webhooks/endpoints', { key: 'ep-race', body: { url: 'https://hooks.example.com/in' } })));
      // One attempt runs; the others get its stored answer, or are told it is still running (and get it on retry).
      const first = answers.filter((a) => a.status === 201);
      expect(first.length).toBeGreaterThan(0);
      for (const a of answers.filter((x) => x.status !== 201)) expect([a.status, a.json.error.code]).toEqual([409, 'IDEMPOTENCY_IN_PROGRESS']);
      const again = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-race', body: { url: 'https://hooks.example.com/in' } });
      expect(again.status).toBe(201);
      expect(new Set([...first, again].map((a) => a.json.id)).size).toBe(1);
      // The attempt that ran shows the secret; replays of its stored answer do not (webhooks-out.replay.test.ts).
      const ran = [...first, again].filter((a) => a.headers.get('idempotent-replayed') !== 'true');
      expect(ran).toHaveLength(1);
      expect(ran[0]!.json.secret).toMatch(/^whsec_/);
      for (const a of [...first, again].filter((x) => x !== ran[0])) expect(a.json.secret).toBeNull();
      expect((await admin('GET', '/v1/webhooks/endpoints')).json.data.map((e: { id: string }) => e.id)).toEqual([again.json.id]);
      const other = await admin('POST', '/v1/webhooks/endpoints', { key: 'ep-race', body: { url: 'https://hooks.example.com/other' } });
      expect(other.status).toBe(409);
      expect(other.json.error.code).toBe('IDEMPOTENCY_CONFLICT');
      expect((await admin('GET', '/v1/webhooks/endpoints')).json.data).toHaveLength(1);
      // Concurrent first attempts that disagree: one endpoint, the others a conflict.
      const mixed = await Promise.all(['a', 'b', 'a', 'b', 'a', 'b'].map((u) => admin('POST', '/v1/webhooks/endpoints', { key: 'ep-mixed', body: { url: `https://hooks.example.com/${u}` } })));
      const made = mixed.filter((m) => m.status === 201);
      expect(new Set(made.map((m) => `${m.json.id} ${m.json.url}`)).size).toBe(1);
      for (const m of mixed.filter((x) => x.status !== 201)) expect(['IDEMPOTENCY_CONFLICT', 'IDEMPOTENCY_IN_PROGRESS']).toContain(m.json.error.code);
      expect((await admin('GET', '/v1/webhooks/endpoints')).json.data).toHaveLength(2);
    } finally {
      await serve.stop();
    }
  });
});
