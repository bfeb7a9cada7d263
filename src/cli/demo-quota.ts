import { isBillingError } from '../errors';
import { QuotaService } from '../quota/service';
import { CLI_ACTOR } from './context';
import type { DemoStep } from './demo';
import { keyValues } from './output';
import { usageBar } from './commands/usage';

/** A Free-tier customer runs out of sessions; an upgrade lifts the limit at once. */
export const sessionQuota: DemoStep = {
  id: 'session-quota',
  title: 'Session quota: the Free tier runs out, an upgrade lifts it',
  async run(ctx) {
    const quota = new QuotaService(ctx.ledger, { actor: CLI_ACTOR });
    const free = await quota.getPlan('free');
    const limit = free.sessionsIncluded ?? 0;
    await quota.subscribe({ customerId: ctx.customerId, planId: 'free' });
    for (let i = 1; i <= limit; i++) await quota.admitRun({ customerId: ctx.customerId, conversationId: `demo-chat-${i}` });
    const during = await quota.usage(ctx.customerId);

    let refusal = { code: '', message: '' };
    try {
      await quota.admitRun({ customerId: ctx.customerId, conversationId: `demo-chat-${limit + 1}` });
    } catch (e) {
      if (!isBillingError(e) || e.code !== 'QUOTA_EXCEEDED') throw e;
      refusal = { code: e.code, message: e.message };
    }
    // A conversation already in progress may finish.
    const ongoing = await quota.admitRun({ customerId: ctx.customerId, conversationId: 'demo-chat-1' });
    const up = await quota.subscribe({ customerId: ctx.customerId, planId: 'starter' });
    const after = await quota.admitRun({ customerId: ctx.customerId, conversationId: `demo-chat-${limit + 1}` });

    return {
      data: {
        plan: 'free',
        sessionsLimit: limit,
        sessionsUsed: during.sessionsUsed,
        refused: refusal,
        ongoingSession: ongoing.session,
        upgrade: up.change,
        afterUpgrade: { tier: after.tier, session: after.session, sessionsUsed: after.sessionsUsed, sessionsLimit: after.sessionsLimit },
      },
      text: keyValues([
        ['Free tier', `${limit} sessions a month, bring your own key`],
        ['after 25 chats', `${usageBar(during.usagePercentage)}  near limit: ${during.isNearLimit ? 'yes' : 'no'}`],
        ['chat 26', `REFUSED error[${refusal.code}]: ${refusal.message}`],
        ['chat 1 again', `${ongoing.session} session continues (graceful degradation)`],
        ['upgrade', `free → starter (${up.change}, effective now)`],
        ['chat 26 again', `${after.session} session: ${after.sessionsUsed} of ${after.sessionsLimit} used on ${after.tier}`],
      ], '  '),
    };
  },
};
