import type { RunnableConfig } from '@langchain/core/runnables';
import type { BillingCallbackHandler } from './handler';

type Callbacks = RunnableConfig['callbacks'];

/** Duck-typed CallbackManager (no instanceof: several @langchain/core copies coexist). */
interface ManagerLike {
  copy(): ManagerLike;
  addHandler(handler: unknown, inherit?: boolean): void;
}
const isManager = (v: unknown): v is ManagerLike =>
  typeof v === 'object' && v !== null && typeof (v as ManagerLike).copy === 'function' && typeof (v as ManagerLike).addHandler === 'function';

/**
 * A RunnableConfig whose `metadata` carries the billing fields and whose
 * callbacks include the billing handler (first, so that its start callbacks run
 * before other handlers'). LangChain hands config metadata to every handler's
 * start callback and every child run inherits it, so a Langfuse handler on the
 * same run writes the fields onto the trace and every observation.
 *
 * The handler itself adds the dynamic fields (plan tier, quota remaining, balance
 * after the run fee) once admission is done; those reach child runs, and reach the
 * trace through the handler's own Langfuse report (see README).
 */
export function billingRunConfig(handler: BillingCallbackHandler, base: RunnableConfig = {}): RunnableConfig {
  const metadata = { ...(base.metadata ?? {}), ...handler.billingMetadata() };
  let callbacks: Callbacks;
  const existing = base.callbacks;
  if (!existing) callbacks = [handler];
  else if (Array.isArray(existing)) callbacks = existing.includes(handler) ? existing : [handler, ...existing];
  else if (isManager(existing)) {
    const m = existing.copy();
    m.addHandler(handler, true);
    callbacks = m as unknown as Callbacks;
  } else callbacks = [handler];
  return { ...base, metadata, callbacks };
}

/** `runnable.withConfig(billingRunConfig(handler))`: the runnable, metered and tagged with billing metadata. */
export function withBilling<T extends { withConfig(config: Partial<RunnableConfig>): unknown }>(runnable: T, handler: BillingCallbackHandler): ReturnType<T['withConfig']> {
  return runnable.withConfig(billingRunConfig(handler)) as ReturnType<T['withConfig']>;
}
