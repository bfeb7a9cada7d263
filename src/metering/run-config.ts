import type { RunnableConfig } from '@langchain/core/runnables';
import type { BillingCallbackHandler } from './handler';

type Callbacks = RunnableConfig['callbacks'];

/** Duck-typed CallbackManager (no instanceof: several @langchain/core copies coexist). */
interface ManagerLike {
  copy(): ManagerLike;
  addHandler(handler: unknown, inherit?: boolean): void;
  handlers?: unknown[];
  inheritableHandlers?: unknown[];
}

/** `list` with `handler` first (LangChain calls handlers in list order). */
const first = (handler: unknown, list: readonly unknown[]): unknown[] => [handler, ...list.filter((h) => h !== handler)];
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
  else if (Array.isArray(existing)) callbacks = first(handler, existing) as Callbacks;
  else if (isManager(existing)) {
    // addHandler appends: the handler then ran after the others, which had read (and Langfuse copied) the
    // run's metadata before it added the admission fields.
    const m: ManagerLike = (existing as ManagerLike).copy();
    m.addHandler(handler, true);
    if (Array.isArray(m.handlers)) m.handlers = first(handler, m.handlers);
    if (Array.isArray(m.inheritableHandlers)) m.inheritableHandlers = first(handler, m.inheritableHandlers);
    callbacks = m as unknown as Callbacks;
  } else callbacks = [handler];
  return { ...base, metadata, callbacks };
}

/** `runnable.withConfig(billingRunConfig(handler))`: the runnable, metered and tagged with billing metadata. */
export function withBilling<T extends { withConfig(config: Partial<RunnableConfig>): unknown }>(runnable: T, handler: BillingCallbackHandler): ReturnType<T['withConfig']> {
  return runnable.withConfig(billingRunConfig(handler)) as ReturnType<T['withConfig']>;
}
