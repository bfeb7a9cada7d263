import { chatflowLangfuse, traceCharge, traceMetadata } from './analytics';
import type { ICommonObject } from './flowise';

/**
 * Where a run reports its costs in Langfuse. Agentflow v2 hands nodes its own
 * Langfuse client and trace (options.analyticHandlers / parentTraceIds): costs
 * go onto that trace through it. Chatflow nodes get neither, so the run uses
 * the chatflow's own Langfuse credential, read server-side.
 */
export async function langfuseTarget(options: ICommonObject): Promise<Record<string, unknown>> {
  const traceId = options.parentTraceIds?.langFuse?.trace;
  if (typeof traceId === 'string' && traceId) {
    return {
      traceId,
      onCharge: (c: Parameters<typeof traceCharge>[1]) => traceCharge(options, c),
      onTraceMetadata: (m: Record<string, unknown>) => traceMetadata(options, m),
    };
  }
  const langfuse = await chatflowLangfuse(options);
  return langfuse ? { langfuse } : {};
}
