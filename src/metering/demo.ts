import { HumanMessage } from '@langchain/core/messages';
import { RunnableLambda } from '@langchain/core/runnables';
import { BillingError } from '../errors';
import type { Ledger } from '../ledger/types';
import { formatUsd } from '../money';
import { FakeUsageChatModel } from './fake-model';
import { BillingCallbackHandler } from './handler';
import { billingRunConfig } from './run-config';

export interface DemoMeteredRunsOptions {
  /** Customer to meter (created and topped up with `topUpUsd` when missing). Default "demo-metered". */
  customerId?: string;
  /** Balance given to a new demo customer. Default "0.05". */
  topUpUsd?: bigint;
  /** Safety stop. Default 1,000 runs. */
  maxRuns?: number;
}

/**
 * Runs metered two-step chains (a deterministic usage-reporting chat model, as
 * gpt-4o) for one customer until the ledger refuses a step with
 * InsufficientFunds, printing each run's cost and the stop.
 */
export async function demoMeteredRuns(ledger: Ledger, print: (line: string) => void, opts: DemoMeteredRunsOptions = {}): Promise<{ runs: number; stoppedBy: string | null }> {
  const customerId = opts.customerId ?? 'demo-metered';
  if (!(await ledger.findCustomer(customerId))) {
    await ledger.createCustomer({ id: customerId, name: 'Metered demo', actor: 'demo' });
    await ledger.topUp({ customerId, amount: opts.topUpUsd ?? 50_000_000n, idempotencyKey: `demo-metered-topup:${customerId}`, actor: 'demo' });
  }
  const model = new FakeUsageChatModel({ model: 'gpt-4o', maxTokens: 200 });
  // Two LLM steps per run: draft, then refine.
  const flow = RunnableLambda.from(async (question: string, config) => {
    const draft = await model.invoke([new HumanMessage(question)], config);
    const refined = await model.invoke([new HumanMessage(`refine this answer: ${String(draft.content)}`)], config);
    return String(refined.content);
  }).withConfig({ runName: 'metered-demo' });

  const start = await ledger.balance(customerId);
  print(`customer ${customerId}: balance $${formatUsd(start.balance)}`);
  const max = opts.maxRuns ?? 1000;
  for (let i = 1; i <= max; i++) {
    const handler = new BillingCallbackHandler({ ledger, customerId, conversationId: `demo-conversation-${i}`, actor: 'demo', computeTime: { reserveMs: 1000 } });
    try {
      await flow.invoke(`question number ${i}: what does metering cost for a two step chain`, billingRunConfig(handler));
      const run = handler.runs[0]!;
      const parts = handler.charges.map((c) => `${c.charge.chargeType} $${formatUsd(c.charge.amount)}`).join(', ');
      print(`run ${i}: $${formatUsd(run.cost)} (${parts}); balance $${formatUsd(run.balanceAfter ?? 0n)}`);
    } catch (e) {
      if (e instanceof BillingError) {
        const b = await ledger.balance(customerId);
        print(`run ${i}: stopped — ${e.code}: ${e.message}`);
        print(`balance $${formatUsd(b.balance)}, held $${formatUsd(b.held)} (nothing was overdrawn; the refused run paid no fee)`);
        return { runs: i - 1, stoppedBy: e.code };
      }
      throw e;
    }
  }
  return { runs: max, stoppedBy: null };
}
