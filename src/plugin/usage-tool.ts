import { DynamicTool } from '@langchain/core/tools';
import type { LedgerHandle } from './ledgers';
import { usageSummary } from './usage';

/**
 * An agent tool answering "how much have I used / what is left" for the
 * resolved customer only: it takes no arguments, so a prompt cannot ask about
 * someone else's account.
 */
export function usageTool(
  opts: { name?: string; description?: string; handle: () => Promise<LedgerHandle>; customerId: string } | { name?: string; description?: string; refusal: string },
): DynamicTool {
  const name = opts.name ?? 'billing_usage';
  const description =
    opts.description ??
    "Returns the current customer's own billing usage as JSON: plan, sessions used and remaining this period, balance and available credit in USD, current charges. Takes no input.";
  return new DynamicTool({
    name,
    description,
    func: async () => {
      if ('refusal' in opts) return opts.refusal;
      try {
        // The ledger opens at the call: an unreachable ledger fails this call, not the prediction building the agent.
        return JSON.stringify(await usageSummary(await opts.handle(), opts.customerId));
      } catch (e) {
        return `Usage is not available right now (${(e as { code?: string })?.code ?? 'error'}).`;
      }
    },
  });
}
