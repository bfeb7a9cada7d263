import type { DemoStep } from './demo';

/**
 * Metered LangChain runs for a second customer until the ledger refuses a step.
 * LangChain is an optional peer dependency: without it the step says so and the
 * rest of the demo still runs.
 */
export const meteredRuns: DemoStep = {
  id: 'metered-runs',
  title: 'Metered LangChain runs until the money runs out',
  async run(ctx) {
    let demo: typeof import('../metering/demo');
    try {
      demo = require('../metering/demo') as typeof import('../metering/demo');
    } catch (e) {
      const reason = (e as Error).message.split('\n')[0];
      return { data: { skipped: true, reason }, text: `  skipped: @langchain/core is not installed (${reason})` };
    }
    const lines: string[] = [];
    const customerId = `${ctx.customerId}-chat`;
    // LangChain console.errors every error a raiseError handler throws; the demo prints the refusal itself.
    const consoleError = console.error;
    console.error = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && args[0].startsWith('Error in handler BillingCallbackHandler')) return;
      consoleError(...args);
    };
    let r: Awaited<ReturnType<typeof demo.demoMeteredRuns>>;
    try {
      r = await demo.demoMeteredRuns(ctx.ledger, (l) => lines.push(`  ${l}`), { customerId, topUpUsd: 50_000_000n });
    } finally {
      console.error = consoleError;
    }
    return { data: { customerId, runs: r.runs, stoppedBy: r.stoppedBy }, text: lines.join('\n') };
  },
};
