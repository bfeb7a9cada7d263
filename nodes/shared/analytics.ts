import { flowise, type ICommonObject } from './flowise';
import { BILLING_METADATA_KEYS } from '../../src/plugin';

/**
 * Agentflow v2 runs its own Langfuse trace (no LangChain callbacks): nodes get
 * `options.analyticHandlers` and `options.parentTraceIds`. These helpers put
 * billing metadata and charged costs onto that same trace with the Langfuse
 * client Flowise already holds. Fire and forget: the SDK queues and sends in
 * the background, and any failure is swallowed; the ledger already has the
 * charge (billing never depends on an observer).
 */
interface LangfuseLike {
  trace(body: Record<string, unknown>): unknown;
  generation(body: Record<string, unknown>): unknown;
}

function langfuseOf(options: ICommonObject): { client: LangfuseLike; traceId: string; spanId?: string } | null {
  try {
    const handlers = options.analyticHandlers?.getHandlers?.();
    const client = handlers?.langFuse?.client as LangfuseLike | undefined;
    const traceId = options.parentTraceIds?.langFuse?.trace;
    if (!client || typeof client.trace !== 'function' || typeof traceId !== 'string' || !traceId) return null;
    return { client, traceId, spanId: options.parentTraceIds?.langFuse?.span };
  } catch {
    return null;
  }
}

/** Adds billing fields to the flow's trace metadata. */
export function traceMetadata(options: ICommonObject, metadata: Record<string, unknown>): void {
  const lf = langfuseOf(options);
  if (!lf) return;
  try {
    lf.client.trace({ id: lf.traceId, metadata });
  } catch {
    // an observer never fails a run
  }
}

/** Records a settled charge as a zero-duration generation carrying its cost, under the flow's current span. */
export function traceCharge(
  options: ICommonObject,
  c: { chargeId: string; name: string; unit: string; quantity: string; costUsd: string; metadata: Record<string, unknown>; at: Date },
): void {
  const lf = langfuseOf(options);
  if (!lf) return;
  try {
    const qty = Number(c.quantity);
    lf.client.generation({
      // Deterministic id: a repeated report upserts instead of adding the cost twice.
      id: `billing-${c.chargeId}`,
      traceId: lf.traceId,
      parentObservationId: lf.spanId,
      name: c.name,
      startTime: c.at,
      endTime: c.at,
      // Langfuse wants numbers; the exact amount stays in metadata as a decimal string.
      costDetails: { total: Number(c.costUsd) },
      ...(Number.isSafeInteger(qty) ? { usageDetails: { [c.unit]: qty } } : {}),
      metadata: { ...c.metadata, [BILLING_METADATA_KEYS.costUsd]: c.costUsd, [BILLING_METADATA_KEYS.chargeId]: c.chargeId },
    });
  } catch {
    // an observer never fails a run
  }
}

/**
 * The Langfuse credentials of a chatflow's own analytics settings, read
 * server-side from Flowise's database (never from the request), or undefined
 * when Langfuse is off or anything is missing. Chatflow nodes get no Langfuse
 * client, so the Metered Chat Model reports costs with its own.
 */
export async function chatflowLangfuse(options: ICommonObject): Promise<{ publicKey: string; secretKey: string; baseUrl: string } | undefined> {
  // Read on every prediction (one indexed row): an operator who turns Langfuse on sees the very next prediction traced.
  if (!options.appDataSource || !options.databaseEntities?.ChatFlow || !options.chatflowid) return undefined;
  return readChatflowLangfuse(options);
}

async function readChatflowLangfuse(options: ICommonObject): Promise<{ publicKey: string; secretKey: string; baseUrl: string } | undefined> {
  try {
    const entity = options.databaseEntities.ChatFlow;
    // Only the analytics column: the row's flowData (tens of KB with billing nodes) is not needed here, and
    // every metered prediction makes this read.
    const flow = await options.appDataSource.getRepository(entity).findOne({ where: { id: options.chatflowid }, select: { id: true, analytic: true } });
    return await langfuseOfAnalytic(typeof flow?.analytic === 'string' ? flow.analytic : null, options);
  } catch {
    // Analytics are an observer: without them the model is still metered.
    return undefined;
  }
}

/** The Langfuse credentials named by a chatflow's analytic column (as stored), or undefined when Langfuse is off or anything is missing. */
export async function langfuseOfAnalytic(stored: string | null, options: ICommonObject): Promise<{ publicKey: string; secretKey: string; baseUrl: string } | undefined> {
  try {
    const analytic = stored ? JSON.parse(stored) : null;
    const lf = analytic?.langFuse;
    if (!lf?.status || !lf.credentialId) return undefined;
    const data = await flowise.getCredentialData(String(lf.credentialId), options);
    if (!data?.langFusePublicKey || !data?.langFuseSecretKey) return undefined;
    return { publicKey: String(data.langFusePublicKey), secretKey: String(data.langFuseSecretKey), baseUrl: String(data.langFuseEndpoint || 'https://cloud.langfuse.com') };
  } catch {
    // Analytics are an observer: without them the model is still metered.
    return undefined;
  }
}
