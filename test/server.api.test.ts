import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyBillingToken } from '../src/identity/token';
import { BACKENDS } from './support/backends';
import { cli, client, createKey, type ServeProcess, startServe } from './support/serve';

/**
 * The HTTP API against a real `flowise-billing serve` process on each
 * backend: every endpoint, typed refusals that change nothing, auth and
 * idempotent replays. Amounts are compared as exact decimal strings.
 */
const TOKEN_SECRET = 'a-token-secret-that-is-at-least-32-bytes-long!';

describe.each(BACKENDS)('serve API on $name', (backend) => {
  let db: string;
  let serve: ServeProcess;
  let admin: ReturnType<typeof client>;
  let write: ReturnType<typeof client>;
  let read: ReturnType<typeof client>;
  let anon: ReturnType<typeof client>;
  let keys: Record<'admin' | 'write' | 'read', { id: string; token: string }>;

  beforeAll(async () => {
    db = await backend.freshTarget();
    keys = { admin: await createKey(db, 'admin'), write: await createKey(db, 'write'), read: await createKey(db, 'read') };
    serve = await startServe(db, [], { FLOWISE_BILLING_TOKEN_SECRET: TOKEN_SECRET });
    admin = client(serve.url, keys.admin.token);
    write = client(serve.url, keys.write.token);
    read = client(serve.url, keys.read.token);
    anon = client(serve.url);
  });
  afterAll(async () => {
    await serve?.stop();
  });

  const balanceOf = async (id: string) => (await read('GET', `/v1/customers/${id}/balance`)).json;
  const statementOf = async (id: string) => (await read('GET', `/v1/customers/${id}/statement?limit=1000`)).json.data;

  it('serves health, an OpenAPI 3.1 document naming every route, and no CORS headers by default', async () => {
    const h = await anon('GET', '/healthz');
    expect(h.json).toEqual({ ok: true, backend: backend.name });
    const doc = (await anon('GET', '/openapi.json')).json;
    expect(doc.openapi).toBe('3.1.0');
    for (const p of [
      '/v1/customers', '/v1/customers/{customerId}', '/v1/customers/{customerId}/topups', '/v1/customers/{customerId}/balance', '/v1/customers/{customerId}/statement',
      '/v1/customers/{customerId}/charges', '/v1/charges/{chargeId}/refunds', '/v1/customers/{customerId}/holds', '/v1/holds/{holdId}/settle', '/v1/holds/{holdId}/release',
      '/v1/customers/{customerId}/usage', '/v1/plans', '/v1/customers/{customerId}/subscription', '/v1/customers/{customerId}/budget', '/v1/customers/{customerId}/alerts',
      '/v1/customers/{customerId}/invoices', '/v1/customers/{customerId}/invoices/preview', '/v1/customers/{customerId}/invoices/close',
      '/v1/ratecards', '/v1/ratecards/{version}', '/v1/ratecards/{version}/activate', '/v1/tokens', '/v1/webhooks/endpoints', '/v1/webhooks/events', '/v1/apikeys',
    ]) {
      expect(doc.paths[p], p).toBeDefined();
    }
    expect(doc.paths['/v1/customers/{customerId}'].patch.requestBody.content['application/json'].schema.properties.name).toBeDefined();
    expect(doc.paths['/v1/customers/{customerId}/topups'].post.parameters.some((x: { name: string; in: string }) => x.name === 'idempotency-key' && x.in === 'header')).toBe(true);
    const pre = await fetch(`${serve.url}/v1/customers`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('refuses a missing, malformed or unknown key (401) and a key without the scope (403)', async () => {
    for (const c of [anon, client(serve.url, 'not-a-key'), client(serve.url, `fbk_${'0'.repeat(16)}_${'A'.repeat(43)}`)]) {
      const r = await c('GET', '/v1/customers');
      expect(r.status).toBe(401);
      expect(r.json.error.code).toBe('UNAUTHORIZED');
    }
    const forged = client(serve.url, `fbk_${keys.admin.id}_${'B'.repeat(43)}`);
    expect((await forged('GET', '/v1/customers')).status).toBe(401);
    const r = await read('POST', '/v1/customers', { key: 'ro-1', body: { id: 'ro-cust' } });
    expect(r.status).toBe(403);
    expect(r.json.error).toMatchObject({ code: 'FORBIDDEN', details: { scope: 'read', required: 'write' } });
    expect((await write('POST', '/v1/ratecards', { key: 'w-rc', body: {} })).json.error.code).toBe('FORBIDDEN');
    expect((await read('GET', '/v1/customers/ro-cust')).json.error.code).toBe('CUSTOMER_NOT_FOUND');
  });

  it('creates, lists (paged), gets and updates customers', async () => {
    for (const id of ['cust-a', 'cust-b', 'cust-c']) {
      const r = await write('POST', '/v1/customers', { key: `create-${id}`, body: { id, name: `Customer ${id}` } });
      expect(r.status).toBe(201);
      expect(r.json).toMatchObject({ id, name: `Customer ${id}` });
    }
    const same = await write('POST', '/v1/customers', { key: 'create-same', body: { id: 'cust-a', name: 'Customer cust-a' } });
    expect(same.json.createdAt).toBe((await read('GET', '/v1/customers/cust-a')).json.createdAt);
    const dup = await write('POST', '/v1/customers', { key: 'create-again', body: { id: 'cust-a', name: 'Someone else' } });
    expect(dup.status).toBe(409);
    expect(dup.json.error.code).toBe('CUSTOMER_EXISTS');

    const p1 = await read('GET', '/v1/customers?limit=2');
    expect(p1.json.data.map((c: { id: string }) => c.id)).toEqual(['cust-a', 'cust-b']);
    expect(p1.json.data[0]).toMatchObject({ balanceUsd: '0.00', availableUsd: '0.00' });
    const p2 = await read('GET', `/v1/customers?limit=2&after=${p1.json.nextAfter}`);
    expect(p2.json.data.map((c: { id: string }) => c.id)).toEqual(['cust-c']);
    expect(p2.json.nextAfter).toBeNull();

    const g = await read('GET', '/v1/customers/cust-a');
    expect(g.json).toMatchObject({ id: 'cust-a', balanceUsd: '0.00', subscription: null });

    const u = await write('PATCH', '/v1/customers/cust-a', { key: 'patch-a', body: { planId: 'starter', budgetUsd: '50', lowBalanceThresholdUsd: '2.50' } });
    expect(u.status).toBe(200);
    expect(u.json.subscription).toMatchObject({ planId: 'starter', status: 'active' });
    expect(u.json.budget).toMatchObject({ budgetUsd: '50.00' });
    const bad = await write('PATCH', '/v1/customers/cust-a', { key: 'patch-bad', body: { planId: 'nope', budgetUsd: '1' } });
    expect(bad.status).toBe(404);
    expect(bad.json.error.code).toBe('PLAN_NOT_FOUND');
    expect((await read('GET', '/v1/customers/cust-a')).json.budget.budgetUsd).toBe('50.00');

    // Rename: validated, idempotent under its key, audited once; a bad name changes nothing.
    const renamed = await write('PATCH', '/v1/customers/cust-a', { key: 'rename-a', body: { name: 'Acme Renamed' } });
    expect(renamed.status).toBe(200);
    expect(renamed.json).toMatchObject({ id: 'cust-a', name: 'Acme Renamed', budget: { budgetUsd: '50.00' } });
    const replay = await write('PATCH', '/v1/customers/cust-a', { key: 'rename-a', body: { name: 'Acme Renamed' } });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.json).toEqual(renamed.json);
    const reused = await write('PATCH', '/v1/customers/cust-a', { key: 'rename-a', body: { name: 'Other' } });
    expect(reused.json.error.code).toBe('IDEMPOTENCY_CONFLICT');
    for (const [k, name] of [['rename-empty', ''], ['rename-long', 'x'.repeat(201)], ['rename-num', 5]] as const) {
      const r = await write('PATCH', '/v1/customers/cust-a', { key: k, body: { name } });
      expect(r.status).toBe(400);
      expect(r.json.error.code).toBe('VALIDATION_ERROR');
    }
    expect((await read('GET', '/v1/customers/cust-a')).json.name).toBe('Acme Renamed');
    expect((await write('PATCH', '/v1/customers/no-such', { key: 'rename-ghost', body: { name: 'x' } })).json.error.code).toBe('CUSTOMER_NOT_FOUND');
    const cleared = await write('PATCH', '/v1/customers/cust-c', { key: 'rename-c', body: { name: null } });
    expect(cleared.json.name).toBeNull();
    expect((await read('GET', '/v1/customers?limit=2&after=cust-b')).json.data[0]).toMatchObject({ id: 'cust-c', name: null });
    const badCursor = await read('GET', '/v1/customers?limit=2&after=bad%20cursor');
    expect(badCursor.status).toBe(400);
    expect(badCursor.json.error.code).toBe('VALIDATION_ERROR');
    const badSeq = await read('GET', '/v1/customers/cust-a/statement?afterSeq=-1');
    expect(badSeq.json.error.code).toBe('VALIDATION_ERROR');
  });

  it('tops up idempotently: a replay returns the same top-up, a different body with the key conflicts, a missing key is refused', async () => {
    const t1 = await write('POST', '/v1/customers/cust-b/topups', { key: 'pay-1', body: { amountUsd: '10.50', memo: 'checkout 1' } });
    expect(t1.status).toBe(201);
    expect(t1.json).toMatchObject({ customerId: 'cust-b', amountUsd: '10.50', balanceAfterUsd: '10.50' });
    const again = await write('POST', '/v1/customers/cust-b/topups', { key: 'pay-1', body: { amountUsd: '10.50', memo: 'checkout 1' } });
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.json.id).toBe(t1.json.id);
    const equal = await write('POST', '/v1/customers/cust-b/topups', { key: 'pay-1', body: { amountUsd: '10.500', memo: 'checkout 1' } });
    expect(equal.json.id).toBe(t1.json.id);
    const conflict = await write('POST', '/v1/customers/cust-b/topups', { key: 'pay-1', body: { amountUsd: '11' } });
    expect(conflict.status).toBe(409);
    expect(conflict.json.error.code).toBe('IDEMPOTENCY_CONFLICT');
    const other = await write('POST', '/v1/customers/cust-c/topups', { key: 'pay-1', body: { amountUsd: '10.50', memo: 'checkout 1' } });
    expect(other.json.error.code).toBe('IDEMPOTENCY_CONFLICT');
    const noKey = await write('POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '5' } });
    expect(noKey.status).toBe(400);
    expect(noKey.json.error.code).toBe('VALIDATION_ERROR');
    expect(noKey.json.error.message).toMatch(/idempotency-key/i);
    expect(await balanceOf('cust-b')).toMatchObject({ balanceUsd: '10.50' });
    expect(await balanceOf('cust-c')).toMatchObject({ balanceUsd: '0.00' });
  });

  it('concurrent first attempts with one key run a mutation that is not a ledger operation once', async () => {
    const plan = { id: 'race-plan', name: 'Race', basePriceUsd: '5', sessionsIncluded: 10, managedModels: true };
    const rs = await Promise.all(Array.from({ length: 8 }, () => admin('POST', '/v1/plans', { key: 'plan-race-1', body: plan })));
    // One ran; each other attempt got its stored response or was told the first is still running, never "already exists".
    expect(rs.filter((r) => r.status === 201 && r.headers.get('idempotent-replayed') !== 'true')).toHaveLength(1);
    for (const r of rs.filter((x) => x.status !== 201)) expect(r.json.error, JSON.stringify(r.json)).toMatchObject({ code: 'IDEMPOTENCY_IN_PROGRESS', details: { idempotencyKey: 'plan-race-1' } });
    expect(rs.every((r) => r.status === 201 || r.status === 409)).toBe(true);
    // A retry after the first finished gets its response.
    const retry = await admin('POST', '/v1/plans', { key: 'plan-race-1', body: plan });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect((await read('GET', '/v1/plans')).json.data.filter((p: { id: string }) => p.id === 'race-plan')).toHaveLength(1);
    // A failed attempt stores nothing: the key is free again once the request is fixed.
    const bad = await admin('POST', '/v1/plans', { key: 'plan-race-2', body: { ...plan, id: 'race-plan' } });
    expect(bad.json.error.code).toBe('VALIDATION_ERROR');
    const fixed = await admin('POST', '/v1/plans', { key: 'plan-race-2', body: { ...plan, id: 'race-plan-2' } });
    expect(fixed.status).toBe(201);
  });

  it('concurrent first attempts with one key move money once', async () => {
    const rs = await Promise.all(Array.from({ length: 8 }, () => write('POST', '/v1/customers/cust-c/topups', { key: 'race-1', body: { amountUsd: '1' } })));
    expect(new Set(rs.map((r) => r.json.id)).size).toBe(1);
    expect(await balanceOf('cust-c')).toMatchObject({ balanceUsd: '1.00' });
  });

  it('refuses bad input of every kind with a typed 4xx and changes nothing', async () => {
    const before = { bal: await balanceOf('cust-b'), st: await statementOf('cust-b') };
    const cases: Array<[string, string, { body?: unknown; raw?: string; headers?: Record<string, string> }, number, string]> = [
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '-5' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '1e3' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: 5 } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '0.0000000001' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '0' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '99999999999' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { body: { amountUsd: '5', extra: true } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { raw: '{"amountUsd": "5"' }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { raw: '<amountUsd>5</amountUsd>', headers: { 'content-type': 'application/xml' } }, 415, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { raw: '{"amountUsd": "5"}', headers: { 'content-type': 'text/plain' } }, 415, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/topups', { raw: JSON.stringify({ amountUsd: '5', memo: 'x'.repeat(70_000) }) }, 413, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/no-such/topups', { body: { amountUsd: '5' } }, 404, 'CUSTOMER_NOT_FOUND'],
      // A typo'd customer is not one with nothing fired or invoiced.
      ['GET', '/v1/customers/no-such/alerts', {}, 404, 'CUSTOMER_NOT_FOUND'],
      ['GET', '/v1/customers/no-such/invoices', {}, 404, 'CUSTOMER_NOT_FOUND'],
      ['POST', '/v1/customers/bad%20id/topups', { body: { amountUsd: '5' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/charges', { body: { amountUsd: '500' } }, 402, 'INSUFFICIENT_FUNDS'],
      ['POST', '/v1/customers/cust-b/charges', { body: { chargeType: 'Inference' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/charges', { body: { chargeType: 'Teleport', quantity: '1' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/charges', { body: { chargeType: 'Inference', quantity: '-1' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers/cust-b/holds', { body: { amountUsd: '5', ttlSeconds: 0 } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/holds/hld_nope/settle', { body: { amountUsd: '1' } }, 404, 'HOLD_NOT_FOUND'],
      ['POST', '/v1/charges/chg_nope/refunds', { body: {} }, 404, 'CHARGE_NOT_FOUND'],
      ['PUT', '/v1/customers/cust-b/subscription', { body: { planId: 'Not A Plan' } }, 400, 'VALIDATION_ERROR'],
      ['PUT', '/v1/customers/cust-b/budget', { body: { limitUsd: 'ten' } }, 400, 'VALIDATION_ERROR'],
      ['PATCH', '/v1/customers/cust-b', { body: {} }, 400, 'VALIDATION_ERROR'],
      ['PATCH', '/v1/customers/cust-b', { body: { name: 'B\r\nforged: line' } }, 400, 'VALIDATION_ERROR'],
      ['POST', '/v1/customers', { body: { id: 'ctl-name', name: 'tab\there' } }, 400, 'VALIDATION_ERROR'],
      ['GET', '/v1/customers/cust-b/statement?limit=abc', {}, 400, 'VALIDATION_ERROR'],
      ['GET', '/v1/customers?limit=100000', {}, 400, 'VALIDATION_ERROR'],
      // Digits only, as the CLI takes them (z.coerce.number took these).
      ['GET', '/v1/customers?limit=1e2', {}, 400, 'VALIDATION_ERROR'],
      ['GET', '/v1/customers?limit=0x10', {}, 400, 'VALIDATION_ERROR'],
      ['GET', '/v1/customers?limit=%205', {}, 400, 'VALIDATION_ERROR'],
      ['GET', '/v1/customers?limit=', {}, 400, 'VALIDATION_ERROR'],
      ['GET', '/v1/customers/cust-b/statement?afterSeq=-1', {}, 400, 'VALIDATION_ERROR'],
      ['DELETE', '/v1/customers/cust-b/topups', {}, 404, 'NOT_FOUND'],
    ];
    let n = 0;
    for (const [method, p, opts, status, code] of cases) {
      const r = await write(method, p, { ...opts, key: `bad-${n++}` });
      expect(r.status, `${method} ${p} ${JSON.stringify(opts.body ?? opts.raw)?.slice(0, 60)}`).toBe(status);
      expect(r.json?.error?.code, `${method} ${p}`).toBe(code);
      expect(typeof r.json.error.message).toBe('string');
    }
    const notAnObject = await write('POST', '/v1/customers/cust-b/topups', { key: 'bad-array', body: [1] });
    expect(notAnObject.json.error.details.issues).toEqual([{ path: 'body', message: expect.any(String) }]);
    const tooLarge = await write('POST', '/v1/customers/cust-b/topups', { key: 'bad-large', raw: JSON.stringify({ amountUsd: '5', memo: 'x'.repeat(70_000) }) });
    expect(tooLarge.json.error.details).toEqual({ limitBytes: 64 * 1024 });
    expect(tooLarge.json.error.message).toMatch(/65536 bytes/);
    expect((await read('GET', '/v1/customers?limit=2')).status).toBe(200);
    expect(await balanceOf('cust-b')).toEqual(before.bal);
    expect(await statementOf('cust-b')).toEqual(before.st);
  });

  it('answers a request Node cannot parse (unknown method, bad request line, huge headers) with a typed body', async () => {
    const { hostname: host, port } = new URL(serve.url);
    const rawRequest = (text: string) =>
      new Promise<string>((resolve, reject) => {
        const sock = net.connect(Number(port), host, () => sock.end(text));
        let out = '';
        sock.on('data', (d) => (out += d));
        sock.on('close', () => resolve(out));
        sock.on('error', reject);
      });
    for (const [text, status] of [
      ['FOO /v1/customers HTTP/1.1\r\nHost: x\r\n\r\n', 400],
      ['GET /v1/customers HTTP/9\r\n\r\n', 400],
      [`GET /v1/customers HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ] as const) {
      const answer = await rawRequest(text);
      expect(answer.startsWith(`HTTP/1.1 ${status} `), text.slice(0, 30)).toBe(true);
      const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
      expect(body.error).toMatchObject({ code: 'VALIDATION_ERROR', message: expect.any(String), details: {} });
    }
    // The server is still answering.
    expect((await read('GET', '/v1/customers')).status).toBe(200);
  });

  it('reads back a customer whose id has the full 128 characters; a malformed or over-long path is a typed 4xx', async () => {
    const id = `L${'x'.repeat(120)}:a@b+c-`; // 128 characters, three that clients %-encode
    expect(id).toHaveLength(128);
    expect((await write('POST', '/v1/customers', { key: 'long-id', body: { id } })).status).toBe(201);
    for (const p of [`/v1/customers/${id}`, `/v1/customers/${encodeURIComponent(id)}/balance`]) {
      const r = await read('GET', p);
      expect(r.status, p).toBe(200);
      expect(r.json.customerId).toBe(id);
    }
    for (const [p, status] of [['/v1/customers/%E0%A4%A', 400], [`/v1/customers/${'a'.repeat(129)}`, 400], [`/v1/customers/${'a'.repeat(300)}`, 414]] as const) {
      const r = await read('GET', p);
      expect(r.status, p).toBe(status);
      expect(r.json.error).toMatchObject({ code: 'VALIDATION_ERROR', message: expect.any(String) });
    }
  });

  it('charges (priced and explicit), refunds, holds settle and release, and pages the statement', async () => {
    const priced = await write('POST', '/v1/customers/cust-b/charges', { key: 'ch-1', body: { chargeType: 'Inference', quantity: '4', metadata: { chatflowId: 'flow-1', nodeId: 'llm_0' } } });
    expect(priced.status).toBe(201);
    expect(priced.json).toMatchObject({ amountUsd: '0.08', chargeType: 'Inference', quantity: '4', balanceAfterUsd: '10.42' });
    const explicit = await write('POST', '/v1/customers/cust-b/charges', { key: 'ch-2', body: { amountUsd: '0.000025' } });
    expect(explicit.json.amountUsd).toBe('0.000025');
    expect((await read('GET', `/v1/charges/${priced.json.id}`)).json.metadata).toMatchObject({ chatflowId: 'flow-1', source: 'api' });
    // A client cannot pose as another writer (metering's 'langchain', Flowise's nodes): source is the server's.
    const before = (await read('GET', '/v1/customers/cust-b/balance')).json;
    const posing = await write('POST', '/v1/customers/cust-b/charges', { key: 'ch-posing', body: { amountUsd: '1', metadata: { source: 'langchain' } } });
    expect(posing.status).toBe(400);
    expect(posing.json.error).toMatchObject({ code: 'VALIDATION_ERROR', message: expect.stringContaining('metadata.source') });
    expect((await read('GET', '/v1/customers/cust-b/balance')).json).toEqual(before);

    const ref = await write('POST', `/v1/charges/${priced.json.id}/refunds`, { key: 'ref-1', body: { amountUsd: '0.03', reason: 'goodwill' } });
    expect(ref.status).toBe(201);
    expect(ref.json.amountUsd).toBe('0.03');
    const over = await write('POST', `/v1/charges/${priced.json.id}/refunds`, { key: 'ref-2', body: { amountUsd: '1' } });
    expect(over.json.error.code).toBe('REFUND_EXCEEDS_CHARGE');

    const h = await write('POST', '/v1/customers/cust-b/holds', { key: 'h-1', body: { amountUsd: '2', ttlSeconds: 600 } });
    expect(h.json).toMatchObject({ status: 'pending', amountUsd: '2.00' });
    expect(await balanceOf('cust-b')).toMatchObject({ heldUsd: '2.00' });
    expect((await read('GET', `/v1/holds/${h.json.id}`)).json.status).toBe('pending');
    const s = await write('POST', `/v1/holds/${h.json.id}/settle`, { key: 'h-1-settle', body: { amountUsd: '1.25' } });
    expect(s.json).toMatchObject({ amountUsd: '1.25', holdId: h.json.id });
    const again = await write('POST', `/v1/holds/${h.json.id}/settle`, { key: 'h-1-settle-again', body: { amountUsd: '1.25' } });
    expect(again.json.error.code).toBe('HOLD_NOT_PENDING');
    const h2 = await write('POST', '/v1/customers/cust-b/holds', { key: 'h-2', body: { amountUsd: '3' } });
    const rel = await write('POST', `/v1/holds/${h2.json.id}/release`, { key: 'h-2-rel' });
    expect(rel.json.status).toBe('released');
    const b = await balanceOf('cust-b');
    // 10.50 − 0.08 − 0.000025 + 0.03 − 1.25
    expect(b).toMatchObject({ balanceUsd: '9.199975', heldUsd: '0.00', availableUsd: '9.199975' });

    const all = await statementOf('cust-b');
    const p1 = await read('GET', '/v1/customers/cust-b/statement?limit=3');
    expect(p1.json.data).toEqual(all.slice(0, 3));
    const p2 = await read('GET', `/v1/customers/cust-b/statement?limit=3&afterSeq=${p1.json.nextAfterSeq}`);
    expect(p2.json.data).toEqual(all.slice(3, 6));
  });

  it('refuses a $0 charge or hold (explicit, priced at nothing, too small to cost a nano-USD) with VALIDATION_ERROR and writes nothing; a $0 settle still closes a hold', async () => {
    await write('POST', '/v1/customers', { key: 'zero-create', body: { id: 'zero' } });
    await write('POST', '/v1/customers/zero/topups', { key: 'zero-top', body: { amountUsd: '5' } });
    const before = { bal: await balanceOf('zero'), st: await statementOf('zero') };
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['charges', { amountUsd: '0' }, /^Invalid body: body\.amountUsd: amountUsd must be greater than zero$/],
      ['charges', { amountUsd: '$0.000000000' }, /^Invalid body: body\.amountUsd: amountUsd must be greater than zero$/],
      ['charges', { chargeType: 'Inference', quantity: '0' }, /^Inference × 0 costs \$0 at rate card [^ ]+: a charge must be greater than zero$/],
      ['charges', { chargeType: 'Inference', quantity: '0.000000001' }, /^Inference × 0\.000000001 costs \$0 at rate card /],
      ['holds', { amountUsd: '0' }, /^Invalid body: body\.amountUsd: amountUsd must be greater than zero$/],
      ['holds', { amountUsd: '0.00', ttlSeconds: 60 }, /^Invalid body: body\.amountUsd: amountUsd must be greater than zero$/],
    ];
    for (const [i, [route, body, message]] of cases.entries()) {
      const r = await write('POST', `/v1/customers/zero/${route}`, { key: `zero-${i}`, body });
      expect([r.status, r.json.error.code], JSON.stringify(body)).toEqual([400, 'VALIDATION_ERROR']);
      expect(r.json.error.message).toMatch(message);
    }
    expect(await balanceOf('zero')).toEqual(before.bal);
    expect(await statementOf('zero')).toEqual(before.st);
    // A refusal is not stored under its key: the same keys with real amounts go through.
    expect((await write('POST', '/v1/customers/zero/charges', { key: 'zero-2', body: { chargeType: 'Inference', quantity: '1' } })).status).toBe(201);
    const h = await write('POST', '/v1/customers/zero/holds', { key: 'zero-4', body: { amountUsd: '1' } });
    expect(h.status).toBe(201);
    // Settling at $0 is still how a client closes a hold whose work cost nothing: all of it is released.
    const s = await write('POST', `/v1/holds/${h.json.id}/settle`, { key: 'zero-settle', body: { amountUsd: '0' } });
    expect(s.status).toBe(201);
    expect((await read('GET', `/v1/holds/${h.json.id}`)).json.status).not.toBe('pending');
    expect(await balanceOf('zero')).toMatchObject({ heldUsd: '0.00' });
  });

  it('names the budget budgetUsd whether or not one is set (null when none), never budget: null', async () => {
    await write('POST', '/v1/customers', { key: 'nb-create', body: { id: 'no-budget' } });
    const shapes = async () => [
      (await read('GET', '/v1/customers/no-budget')).json.budget,
      (await read('GET', '/v1/customers/no-budget/budget')).json,
      (await read('GET', '/v1/customers/no-budget/usage')).json,
    ];
    for (const s of await shapes()) {
      expect(s).toHaveProperty('budgetUsd', null);
      expect(s).not.toHaveProperty('budget');
    }
    expect((await write('PUT', '/v1/customers/no-budget/budget', { key: 'nb-set', body: { limitUsd: '5' } })).json.budgetUsd).toBe('5.00');
    const cleared = await write('PATCH', '/v1/customers/no-budget', { key: 'nb-clear', body: { budgetUsd: null } });
    expect(cleared.json.budget).toHaveProperty('budgetUsd', null);
    for (const s of await shapes()) expect(s).toHaveProperty('budgetUsd', null);
  });

  it('takes a bodyless mutation sent with Content-Type: application/json (as the README client sends every request)', async () => {
    const json = { 'content-type': 'application/json' };
    await write('POST', '/v1/customers', { key: 'eb-create', body: { id: 'empty-body' } });
    await write('POST', '/v1/customers/empty-body/topups', { key: 'eb-topup', body: { amountUsd: '5' } });
    await write('PUT', '/v1/customers/empty-body/subscription', { key: 'eb-sub', body: { planId: 'free' } });
    const h = await write('POST', '/v1/customers/empty-body/holds', { key: 'eb-hold', body: { amountUsd: '1' } });
    const rel = await write('POST', `/v1/holds/${h.json.id}/release`, { key: 'eb-release', headers: json });
    expect(rel.status).toBe(200);
    expect(rel.json.status).toBe('released');
    const cancel = await write('DELETE', '/v1/customers/empty-body/subscription', { key: 'eb-cancel', headers: json });
    expect(cancel.status).toBe(200);
    expect(cancel.json.subscription.cancelAtPeriodEnd).toBe(true);
    // A route that needs a body still refuses an empty one, with the field named.
    const topup = await write('POST', '/v1/customers/empty-body/topups', { key: 'eb-topup-2', headers: json });
    expect(topup.status).toBe(400);
    expect(topup.json.error.code).toBe('VALIDATION_ERROR');
    expect(await balanceOf('empty-body')).toMatchObject({ balanceUsd: '5.00', heldUsd: '0.00' });
  });

  it('reports usage, lists and edits plans, subscribes, budgets, alerts and invoices', async () => {
    const plans = (await read('GET', '/v1/plans')).json.data.map((p: { id: string }) => p.id);
    expect(plans).toEqual(expect.arrayContaining(['free', 'starter', 'professional', 'enterprise']));
    expect((await read('GET', '/v1/plans/starter')).json.id).toBe('starter');
    const created = await admin('POST', '/v1/plans', { key: 'plan-team', body: { id: 'team', name: 'Team', basePriceUsd: '49', sessionsIncluded: 5000, managedModels: true } });
    expect(created.status).toBe(201);
    expect((await write('POST', '/v1/plans', { key: 'plan-team-w', body: { id: 'team2', name: 'T', basePriceUsd: '1', sessionsIncluded: 1, managedModels: true } })).status).toBe(403);
    const patched = await admin('PATCH', '/v1/plans/team', { key: 'plan-team-p', body: { basePriceUsd: '59' } });
    expect(patched.json).toMatchObject({ id: 'team', basePriceUsd: '59', sessionsIncluded: 5000 });

    const sub = await write('PUT', '/v1/customers/cust-b/subscription', { key: 'sub-b', body: { planId: 'team' } });
    expect(sub.json).toMatchObject({ subscription: { planId: 'team' }, change: 'new' });
    expect((await read('GET', '/v1/customers/cust-b/subscription')).json.subscription.planId).toBe('team');
    const usage = await read('GET', '/v1/customers/cust-b/usage');
    expect(usage.json).toMatchObject({ customerId: 'cust-b', tier: 'team', sessionsLimit: 5000, baseUsd: '59.00' });

    const bud = await write('PUT', '/v1/customers/cust-b/budget', { key: 'bud-b', body: { limitUsd: '25' } });
    expect(bud.json).toMatchObject({ budgetUsd: '25.00' });
    expect((await read('GET', '/v1/customers/cust-b/budget')).json.budgetUsd).toBe('25.00');
    expect((await read('GET', '/v1/customers/cust-b/alerts')).json.data).toEqual([]);

    const preview = await read('GET', '/v1/customers/cust-b/invoices/preview');
    expect(preview.json).toMatchObject({ planId: 'team', baseUsd: '59.00', totalUsd: '59.00', id: null });
    expect((await read('GET', '/v1/customers/cust-b/invoices')).json.data).toEqual([]);
    const close = await write('POST', '/v1/customers/cust-b/invoices/close', { key: 'close-b' });
    expect(close.status).toBe(400);
    expect(close.json.error.message).toMatch(/No billing period/);

    const cancel = await write('DELETE', '/v1/customers/cust-b/subscription', { key: 'cancel-b' });
    expect(cancel.json.subscription.cancelAtPeriodEnd).toBe(true);
  });

  it('lists, shows, imports and activates rate cards', async () => {
    const list = (await read('GET', '/v1/ratecards')).json.data;
    const active = list.find((c: { active: boolean }) => c.active);
    const doc = (await read('GET', `/v1/ratecards/${active.version}`)).json;
    expect(doc.version).toBe(active.version);
    const next = { ...doc, version: `${active.version}-api` };
    const imp = await admin('POST', '/v1/ratecards', { key: 'rc-imp', body: next });
    expect(imp.status).toBe(201);
    expect(imp.json).toMatchObject({ version: next.version, active: false });
    const changed = await admin('POST', '/v1/ratecards', { key: 'rc-imp-2', body: { ...next, chargeTypes: { ...next.chargeTypes, Inference: { ...next.chargeTypes.Inference, perUnitUsd: '0.05' } } } });
    expect(changed.status).toBe(400);
    expect((await admin('POST', '/v1/ratecards', { key: 'rc-bad', body: { version: 'x' } })).json.error.code).toBe('VALIDATION_ERROR');
    const act = await admin('POST', `/v1/ratecards/${next.version}/activate`, { key: 'rc-act' });
    expect(act.json).toMatchObject({ version: next.version, active: true });
    expect((await admin('POST', '/v1/ratecards/none-such/activate', { key: 'rc-act-x' })).json.error.code).toBe('RATE_CARD_NOT_FOUND');
    await admin('POST', `/v1/ratecards/${active.version}/activate`, { key: 'rc-act-back' });
  });

  it('signs billing tokens that verify with the credential secret', async () => {
    const r = await write('POST', '/v1/tokens', { body: { customerId: 'cust-a', ttlSeconds: 600 } });
    expect(r.status).toBe(200);
    expect(verifyBillingToken(r.json.token, TOKEN_SECRET).customerId).toBe('cust-a');
    expect((await write('POST', '/v1/tokens', { body: { customerId: 'nobody' } })).json.error.code).toBe('CUSTOMER_NOT_FOUND');
    expect((await write('POST', '/v1/tokens', { body: { customerId: 'cust-a', ttlSeconds: 10 ** 9 } })).status).toBe(400);
    expect((await read('POST', '/v1/tokens', { body: { customerId: 'cust-a' } })).status).toBe(403);
  });

  it('lists and revokes API keys; a revoked key is refused', async () => {
    const extra = await createKey(db, 'write');
    const unused = await createKey(db, 'read');
    const c = client(serve.url, extra.token);
    const before = Date.now();
    expect((await c('GET', '/v1/customers')).status).toBe(200);
    // Its last use is recorded (without holding up the request); a key never used has none.
    const listed = async () => (await admin('GET', '/v1/apikeys')).json.data as Array<{ id: string; lastUsedAt: string | null }>;
    await expect.poll(async () => (await listed()).find((k) => k.id === extra.id)?.lastUsedAt, { timeout: 5_000 }).not.toBeNull();
    const list = await listed();
    expect(Date.parse(list.find((k) => k.id === extra.id)!.lastUsedAt!)).toBeGreaterThanOrEqual(before - 1);
    expect(list.find((k) => k.id === unused.id)!.lastUsedAt).toBeNull();
    expect(list.map((k: { id: string }) => k.id)).toContain(extra.id);
    expect(JSON.stringify(list)).not.toContain(extra.token.slice(22));
    const rev = await admin('DELETE', `/v1/apikeys/${extra.id}`, { key: `revoke-${extra.id}` });
    expect(rev.json.revokedAt).not.toBeNull();
    const r = await c('GET', '/v1/customers');
    expect(r.status).toBe(401);
    expect(r.json.error.code).toBe('UNAUTHORIZED');
    // Revoked from the CLI too (another process): refused within the 2 s cache.
    const other = await createKey(db, 'read');
    const o = client(serve.url, other.token);
    expect((await o('GET', '/v1/customers')).status).toBe(200);
    expect((await cli(['--db', db, 'apikeys', 'revoke', other.id])).code).toBe(0);
    await new Promise((res) => setTimeout(res, 2_100));
    expect((await o('GET', '/v1/customers')).status).toBe(401);
  });

  it('runs the README operator backend example: sign-up, token, checkout credit once, balance', async () => {
    // A plain .mjs file (what an operator copies), loaded by URL: it has no type declarations.
    const ex = await import(pathToFileURL(path.resolve(__dirname, '..', 'examples', 'operator-backend.mjs')).href);
    const billing = ex.billingClient(serve.url, keys.write.token);
    const user = { id: 'shopper-1', email: 'shopper@example.com' };
    await ex.onSignup(billing, user);
    await ex.onSignup(billing, user);
    const token = await ex.billingTokenFor(billing, user);
    expect(verifyBillingToken(token, TOKEN_SECRET).customerId).toBe('shopper-1');
    const session = { id: 'cs_test_1', amount_total: 1250 };
    await ex.onCheckoutCompleted(billing, user, session);
    await ex.onCheckoutCompleted(billing, user, session); // Stripe redelivers
    expect(await ex.balanceOf(billing, user)).toBe('12.50');
    await expect(ex.onCheckoutCompleted(billing, { id: 'nobody' }, { id: 'cs_x', amount_total: 100 })).rejects.toMatchObject({ code: 'CUSTOMER_NOT_FOUND' });
  });

  it('exports Prometheus metrics: operations and refusals by code, ledger latency, outbox lag', async () => {
    const m = (await anon('GET', '/metrics')).text;
    expect(m).toMatch(/flowise_billing_operations_total\{operation="topUp",outcome="ok"\} \d+/);
    expect(m).toMatch(/flowise_billing_refusals_total\{code="INSUFFICIENT_FUNDS"\} [1-9]/);
    expect(m).toMatch(/flowise_billing_refusals_total\{code="UNAUTHORIZED"\} [1-9]/);
    expect(m).toMatch(/flowise_billing_ledger_seconds_bucket\{le="0.005",operation="balance"\} \d+/);
    expect(m).toMatch(/flowise_billing_webhook_outbox_lag_seconds \d/);
    expect(m).toMatch(/flowise_billing_stripe_outbox_pending \d/);
    expect(m).toMatch(/flowise_billing_stripe_invoice_items_pending 0/);
    expect(m).toMatch(/flowise_billing_stripe_invoice_items_failed 0/);
  });

  it('logs structured JSON lines without keys or secrets', async () => {
    // A key pasted into a query string by mistake is masked in the request log.
    expect((await read('GET', `/v1/customers?after=${keys.admin.token}`)).status).toBe(200);
    await expect.poll(() => serve.logs.some((l) => (l.req as { url?: string } | undefined)?.url === '/v1/customers?after=fbk_[redacted]')).toBe(true);
    expect(serve.logs.length).toBeGreaterThan(5);
    const text = JSON.stringify(serve.logs);
    expect(text).not.toContain(keys.admin.token.slice(22));
    expect(text).not.toContain(TOKEN_SECRET);
    expect(serve.logs.some((l) => l.req && typeof l.level === 'number')).toBe(true);
  });
});

describe('serve rate limit and CORS', () => {
  it('answers 429 RATE_LIMITED per key past the limit, other keys go on, and CORS answers only the configured origin', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    const a = await createKey(db, 'read');
    const b = await createKey(db, 'read');
    const s = await startServe(db, ['--rate-limit', '5', '--cors', 'https://app.example.com']);
    try {
      const ca = client(s.url, a.token);
      const statuses = [];
      for (let i = 0; i < 7; i++) statuses.push((await ca('GET', '/v1/customers')).status);
      expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
      const r = await ca('GET', '/v1/customers');
      expect(r.status).toBe(429);
      expect(r.json.error.code).toBe('RATE_LIMITED');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await client(s.url, b.token)('GET', '/v1/customers')).status).toBe(200);
      // CORS only for the configured origin.
      const ok = await fetch(`${s.url}/v1/customers`, { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } });
      expect(ok.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
      const evil = await fetch(`${s.url}/v1/customers`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
      expect(evil.headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await s.stop();
    }
  });
});
