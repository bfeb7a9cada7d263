import { afterAll, describe, expect, it } from 'vitest';
import { closeSharedLedgers, flowRunKey, openFlowRun, sharedLedger } from '../src/plugin';
import { BACKENDS } from './support/backends';

/**
 * Two processes' worth of ledger handles (one pool and group committer each)
 * on one PostgreSQL ledger, metered predictions of several customers on both:
 * a batch that named one customer (a run's hold) beside another customer's
 * hold (a settle) locked them with a subquery that also read
 * billing_customers, and under the other handle's concurrent writes the lock
 * came back without the named customer. Its operations then failed with
 * "Customer … does not exist": funded customers refused at their first call,
 * settles and fees that failed after the model answered, reservations left
 * held (seen in queue mode with two workers and eight customers: about one
 * prediction in 150). Real sessions; nothing is paused or mocked.
 */
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!BACKENDS.some((b) => b.name === 'postgres'))('metered predictions of several customers from two ledger handles on postgres', () => {
  afterAll(() => closeSharedLedgers());

  it('32 at a time over 8 customers: every prediction admitted, held, settled and ended', async () => {
    const backend = BACKENDS.find((b) => b.name === 'postgres')!;
    const base = await backend.freshTarget();
    // Two locations naming the same ledger: two shared handles, as two worker processes have.
    const urls = [base, `${base}&application_name=fb_second_handle`];
    const { ledger, quota } = await sharedLedger(urls[0]);
    await sharedLedger(urls[1]);
    await quota.createPlan({ id: 'many', name: 'Many', basePriceUsd: '0', sessionsIncluded: 1_000_000, managedModels: true });
    const ids = Array.from({ length: 8 }, (_, i) => `c${i}`);
    for (const id of ids) {
      await ledger.createCustomer({ id });
      await ledger.topUp({ customerId: id, amount: 1_000_000_000_000n, idempotencyKey: `${id}-topup` });
      await quota.subscribe({ customerId: id, planId: 'many' });
    }
    const problems: string[] = [];
    const logger = { warn: (m: string) => problems.push(m), error: (m: string) => problems.push(m) };
    let settled = 0;
    const prediction = async (w: number, k: number) => {
      const chatId = `chat-${w}-${k}`;
      const run = await openFlowRun({
        ledgerDatabase: urls[w % 2], customerId: ids[(w + k) % ids.length], conversationId: chatId, actor: 'node:quotaGuard', logger,
        runKey: flowRunKey({ chatflowId: 'flow', chatId, question: `q ${k}`, historyLength: 0 }),
        runFee: { item: 'PrivateFlowRun', quantity: '1' }, checkSessions: true, idleMs: 200,
      });
      if (await run.precheck('0.01')) return;
      // The chain's own work before the call, and the model's time: what spreads the ledger's operations out.
      await pause((w * 7 + k * 3) % 10);
      const b = await run.beforeModelCall({ callKey: `model:${k}`, model: 'gpt-4o-mini', messages: [{ content: `question ${k}` }] });
      if (!b.ok) return;
      await pause(20);
      const r = await run.afterModelCall(b.ticket, { usage: { inputTokens: 12, outputTokens: 3 } });
      if (r.charge && r.fee) settled++;
    };
    await Promise.all(Array.from({ length: 32 }, async (_, w) => {
      for (let k = 0; k < 40; k++) await prediction(w, k);
    }));
    // The runs end once idle (200 ms); their leftover reservations ride along or go on their own.
    await pause(1500);

    expect(problems).toEqual([]);
    expect(settled).toBe(32 * 40);
    let held = 0n;
    for (const id of ids) held += (await ledger.balance(id)).held;
    expect(held).toBe(0n);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
  }, 120_000);
});
