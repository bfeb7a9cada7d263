import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventId } from '../src/webhooks/events';
import { BACKENDS } from './support/backends';
import { runJson } from './support/cli-run';
import { Receiver } from './support/webhook-receiver';

/**
 * Every CLI command that changes billing writes its outbound events, like
 * serve and the Flowise plugin (one builder: openWithEvents): each command a
 * real process, `endpoints deliver` another, a loopback receiver verifying
 * each request with the `standardwebhooks` library.
 */
describe.each(BACKENDS)('outbound webhooks from CLI commands on $name', (backend) => {
  const receiver = new Receiver();
  beforeAll(() => receiver.up());
  afterAll(() => receiver.down());

  it('invoice close, top-up, sessions, charge and budget raise invoice.closed, topup.succeeded, usage.threshold, balance.low, budget.threshold, run.refused; delivered once each', async () => {
    const db = await backend.freshTarget();
    const cli = async (...args: string[]) => runJson(['--db', db, ...args]);
    const ok = async (...args: string[]) => {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${JSON.stringify(r.value)} ${r.stderr}`).toBe(0);
      return r.value;
    };

    const ep = await ok('endpoints', 'create', receiver.url, '--events', '*');
    receiver.secret = ep.secret;
    await ok('customers', 'create', 'ev');
    await ok('plans', 'create', 'duo', '--name', 'Duo', '--base-usd', '1', '--sessions', '2', '--managed', '--alerts', '50');

    // A conversation 40 days ago starts a subscription (the default plan) whose first period has ended: closing it is invoice.closed.
    await ok('sessions', 'touch', 'ev', 'old', '--at', new Date(Date.now() - 40 * 86_400_000).toISOString());
    const invoice = await ok('invoice', 'close', 'ev');
    const topUp = await ok('topup', 'ev', '1.50', '--key', 'ev-pay');
    await ok('subscribe', 'ev', 'duo');
    await ok('sessions', 'touch', 'ev', 'c1'); // 1 of 2 sessions: 50 %
    await ok('budget', 'set', 'ev', '1');
    const charge = await ok('charge', 'ev', 'Inference', '40'); // $0.80: the balance goes from $1.50 below the default $1.00
    await ok('sessions', 'touch', 'ev', 'c1'); // the admission sees $0.80 of the $1 budget spent: 80 %
    await ok('sessions', 'touch', 'ev', 'c2');
    const refused = await cli('sessions', 'touch', 'ev', 'c3');
    expect(refused.value.error.code).toBe('QUOTA_EXCEEDED');

    const delivered = await ok('endpoints', 'deliver');
    expect(delivered).toMatchObject({ attempted: 6, delivered: 6, failed: 0, retrying: 0 });
    expect(receiver.got.every((g) => g.verified)).toBe(true);
    const by = Object.fromEntries(receiver.got.map((g) => [g.type, g]));
    expect(receiver.got.map((g) => g.type).sort()).toEqual(['balance.low', 'budget.threshold', 'invoice.closed', 'run.refused', 'topup.succeeded', 'usage.threshold']);
    expect(by['invoice.closed']!.id).toBe(eventId('invoice.closed', 'ev', invoice.periodStart));
    expect(by['invoice.closed']!.body.data).toMatchObject({ invoiceId: invoice.invoiceId, planId: 'free' });
    expect(by['topup.succeeded']!.id).toBe(eventId('topup.succeeded', topUp.topupId));
    expect(by['usage.threshold']!.body.data).toMatchObject({ metric: 'sessions', threshold: 50, percentage: '50.00' });
    expect(by['balance.low']!.body.data).toMatchObject({ balanceUsd: '0.70', thresholdUsd: '1.00', chargeId: charge.chargeId });
    expect(by['budget.threshold']!.body.data).toMatchObject({ metric: 'budget', threshold: 50, percentage: '80.00' });
    expect(by['run.refused']!.body.data).toMatchObject({ conversationId: 'c3', reason: 'QUOTA_EXCEEDED' });

    // A second pass finds nothing due: each event once.
    expect(await ok('endpoints', 'deliver')).toMatchObject({ attempted: 0 });
    expect(new Set(receiver.got.map((g) => g.id)).size).toBe(6);
    receiver.got.length = 0;
  }, 120_000);
});
