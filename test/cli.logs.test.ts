import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { BACKENDS } from './support/backends';
import { CLI_MAIN, runJson } from './support/cli-run';
import { stripeLedger } from './support/stripe-fixture';
import { signPayload, startStripeServer, type StripeTestServer } from './support/stripe-server';
import { Receiver, until } from './support/webhook-receiver';

/**
 * The long-running commands log JSON lines (pino, the logger serve uses):
 * each command runs briefly as a real process, every stdout line must parse,
 * and no Stripe key or webhook secret appears anywhere in its output.
 */
interface Daemon {
  readonly child: ChildProcess;
  /** stdout and stderr as written. */
  readonly raw: () => string;
  /** Every stdout line parsed (a line that is not JSON fails the test). */
  readonly lines: () => Array<Record<string, any>>;
  stop(): Promise<void>;
}

function daemon(args: string[], env: Record<string, string>): Daemon {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete e.FLOWISE_BILLING_DB;
  const child = spawn(process.execPath, [CLI_MAIN, ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  return {
    child,
    raw: () => out + err,
    lines: () =>
      out
        .slice(0, out.lastIndexOf('\n') + 1) // complete lines only: a running process may be mid-line
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => {
          try {
            return JSON.parse(l) as Record<string, any>;
          } catch {
            throw new Error(`not a JSON log line: ${l}`);
          }
        }),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** pino's shape: numeric level, epoch-ms time, the command as `component`, a message. */
function expectPinoLines(lines: Array<Record<string, any>>, component: string): void {
  expect(lines.length).toBeGreaterThan(0);
  for (const l of lines) {
    expect(typeof l.level).toBe('number');
    expect(typeof l.time).toBe('number');
    expect(l.component).toBe(component);
    expect(typeof l.msg).toBe('string');
  }
}

describe('structured logs of the long-running commands', () => {
  let server: StripeTestServer;
  const WEBHOOK_SECRET = 'whsec_logs_test_do_not_print_me';
  beforeAll(async () => {
    server = await startStripeServer({ webhookSecret: WEBHOOK_SECRET });
  });
  afterAll(async () => {
    await server.close();
  });

  it('an unknown --log-level is a VALIDATION_ERROR naming the levels, for every long-running command', async () => {
    const db = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fb-loglevel-')), 'ledger.sqlite');
    for (const args of [['serve', '--port', '0'], ['stripe', 'sync', '--watch'], ['webhooks', 'serve', '--port', '0'], ['endpoints', 'deliver', '--watch']]) {
      const r = await runJson(['--db', db, ...args, '--log-level', 'loud'], { env: { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET } });
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.value.error, args.join(' ')).toMatchObject({ code: 'VALIDATION_ERROR' });
      expect(r.value.error.message).toContain('fatal, error, warn, info, debug, trace, silent');
    }
  });

  it('stripe sync --watch: a JSON line per round with its counts; the Stripe key never appears, not even a rejected one', async () => {
    const { ledger, target } = await stripeLedger(BACKENDS[0]!, server);
    for (let i = 0; i < 3; i++) await ledger.charge({ customerId: 'acme', amount: parseUsd('0.05'), idempotencyKey: `log-${i}` });
    await ledger.close();
    const sync = daemon(['--db', target, 'stripe', 'sync', '--watch', '--rate', '1000'], { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url });
    try {
      await until('a delivery round logged', () => sync.lines().some((l) => l.msg.startsWith('sent ') && l.outbox?.pending === 0), 30_000);
    } finally {
      await sync.stop();
    }
    const lines = sync.lines();
    expectPinoLines(lines, 'stripe-sync');
    expect(lines[0]).toMatchObject({ msg: 'stripe sync watching the meter-event outbox', level: 30 });
    const rounds = lines.filter((l) => l.msg.startsWith('sent '));
    expect(rounds.reduce((a, l) => a + l.delivered, 0)).toBe(3);
    expect(rounds.at(-1)).toMatchObject({ level: 30, failed: 0, outbox: { pending: 0, delivered: 3, failed: 0 }, breaker: 'closed' });
    expect(lines.at(-1)).toMatchObject({ msg: 'stripe sync stopped', pending: 0, delivered: 3 });
    expect(sync.raw()).not.toContain(server.secretKey);

    // A wrong key: Stripe refuses every request; the lines say so without the key.
    const wrongKey = 'sk_test_wrong_key_that_must_stay_secret_0123';
    const { ledger: l2, target: t2 } = await stripeLedger(BACKENDS[0]!, server, { customers: ['beta'] });
    await l2.charge({ customerId: 'beta', amount: parseUsd('0.05'), idempotencyKey: 'log-beta' });
    await l2.close();
    const bad = daemon(['--db', t2, 'stripe', 'sync', '--watch', '--rate', '1000'], { STRIPE_SECRET_KEY: wrongKey, STRIPE_API_BASE: server.url });
    try {
      await until('the refusal logged or the command ended', () => bad.child.exitCode !== null || bad.lines().length > 1 || bad.raw().includes('STRIPE_'), 30_000);
    } finally {
      await bad.stop();
    }
    expect(bad.lines().at(-1)).toMatchObject({ level: 60, code: 'STRIPE_AUTH_FAILED', msg: 'stripe sync stopped on an error' });
    expect(bad.raw()).not.toContain(wrongKey);
    expect(bad.raw()).not.toContain(wrongKey.slice(8));
  }, 90_000);

  it('webhooks serve: listening, applied, duplicate and refused events as JSON lines; the signing secret never appears', async () => {
    const db = await BACKENDS[0]!.freshTarget();
    expect((await runJson(['--db', db, 'customers', 'create', 'acme'])).code).toBe(0);
    const hooks = daemon(['--db', db, 'webhooks', 'serve', '--port', '0'], { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET });
    let url = '';
    try {
      await until('listening', () => hooks.lines().some((l) => typeof l.url === 'string'), 30_000);
      url = String(hooks.lines().find((l) => typeof l.url === 'string')!.url);
      const body = JSON.stringify({ id: 'evt_log_1', object: 'event', type: 'some.unknown_event', data: { object: {} }, created: Math.floor(Date.now() / 1000) });
      const post = (sig: string) => fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', 'stripe-signature': sig } });
      expect((await post(signPayload(body, 'whsec_wrong'))).status).toBe(400);
      expect((await post(signPayload(body, WEBHOOK_SECRET))).status).toBe(200);
      expect((await post(signPayload(body, WEBHOOK_SECRET))).status).toBe(200);
      await until('three request lines', () => hooks.lines().filter((l) => l.outcome).length >= 3);
    } finally {
      await hooks.stop();
    }
    const lines = hooks.lines();
    expectPinoLines(lines, 'stripe-webhooks');
    expect(lines.filter((l) => l.outcome).map((l) => [l.outcome, l.level])).toEqual([
      ['refused', 40],
      ['ignored', 30],
      ['duplicate', 30],
    ]);
    expect(lines.find((l) => l.outcome === 'refused')).toMatchObject({ status: 400 });
    expect(lines.find((l) => l.outcome === 'ignored')).toMatchObject({ eventId: 'evt_log_1', type: 'some.unknown_event' });
    expect(lines.at(-1)).toMatchObject({ msg: 'stopped' });
    expect(hooks.raw()).not.toContain(WEBHOOK_SECRET);
    expect(hooks.raw()).not.toContain(server.secretKey);
  }, 60_000);

  it('endpoints deliver --watch: one JSON line per attempt; the endpoint secret never appears', async () => {
    const receiver = new Receiver();
    await receiver.up();
    const db = await BACKENDS[0]!.freshTarget();
    let deliver: Daemon | undefined;
    try {
      const ep = (await runJson(['--db', db, 'endpoints', 'create', receiver.url])).value;
      receiver.secret = ep.secret;
      await runJson(['--db', db, 'customers', 'create', 'acme']);
      await runJson(['--db', db, 'topup', 'acme', '2', '--key', 'log-pay']);
      deliver = daemon(['--db', db, 'endpoints', 'deliver', '--watch'], {});
      await until('delivered', () => deliver!.lines().some((l) => l.msg === 'webhook delivered'), 30_000);
      await deliver.stop();
      const lines = deliver.lines();
      expectPinoLines(lines, 'webhook-delivery');
      expect(lines.find((l) => l.msg === 'webhook delivered')).toMatchObject({ level: 30, eventId: receiver.got[0]!.id, attempts: 1, status: 204 });
      expect(deliver.raw()).not.toContain(ep.secret);
      expect(deliver.raw()).not.toContain(ep.secret.slice('whsec_'.length));
    } finally {
      await deliver?.stop();
      await receiver.down();
    }
  }, 60_000);
});
