import { chatflowLangfuse, langfuseOfAnalytic, traceCharge, traceMetadata } from './analytics';
import type { ICommonObject } from './flowise';

/**
 * Where a run reports its costs in Langfuse. Agentflow v2 hands nodes its own
 * Langfuse client and trace (options.analyticHandlers / parentTraceIds): costs
 * go onto that trace through it. Chatflow nodes get neither, so the run uses
 * the chatflow's own Langfuse credential, read server-side.
 */
export async function langfuseTarget(options: ICommonObject, analytic?: string | null): Promise<Record<string, unknown>> {
  const traceId = options.parentTraceIds?.langFuse?.trace;
  if (typeof traceId === 'string' && traceId) {
    return {
      traceId,
      onCharge: (c: Parameters<typeof traceCharge>[1]) => traceCharge(options, c),
      onTraceMetadata: (m: Record<string, unknown>) => traceMetadata(options, m),
    };
  }
  // `analytic`: the chatflow's settings, already read for this prediction (with its Billing Ledger credential).
  const langfuse = analytic === undefined ? await chatflowLangfuse(options) : await langfuseOfAnalytic(analytic, options);
  return langfuse ? { langfuse } : {};
}
