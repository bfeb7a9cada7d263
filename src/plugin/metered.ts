import { BaseCallbackHandler } from '@langchain/core/callbacks/base';

/**
 * Attaching billing to a LangChain object that Flowise hands from node to node.
 * The handler goes into the instance's own `callbacks` (not `withConfig`, which
 * returns a RunnableBinding that agents and `instanceof` checks reject), so
 * it fires for every invoke/stream/generate, survives `bindTools`, and works in
 * chatflows and agentflows alike. No `instanceof` on LangChain classes: the
 * model may come from another `@langchain/core` copy than this file.
 */
const OUR_HANDLERS = new Set(['BillingCallbackHandler', 'BillingRefusalHandler']);

interface HasCallbacks {
  callbacks?: unknown;
}

export function attachHandler<T>(target: T, handler: BaseCallbackHandler): T {
  if (!target || typeof target !== 'object') throw new TypeError('expected a LangChain model or tool instance');
  const t = target as HasCallbacks;
  const current = t.callbacks;
  if (current === undefined || current === null) {
    t.callbacks = [handler];
  } else if (Array.isArray(current)) {
    // A re-used instance must not accumulate handlers from earlier predictions.
    t.callbacks = [...current.filter((h) => !OUR_HANDLERS.has((h as { name?: string })?.name ?? '')), handler];
  } else if (typeof (current as { addHandler?: unknown }).addHandler === 'function') {
    const m = current as { handlers?: Array<{ name?: string }>; removeHandler?(h: unknown): void; addHandler(h: unknown, inherit?: boolean): void };
    for (const h of [...(m.handlers ?? [])]) if (OUR_HANDLERS.has(h?.name ?? '')) m.removeHandler?.(h);
    m.addHandler(handler, true);
  } else {
    throw new TypeError('the instance has callbacks of an unknown kind');
  }
  // Some models rebuild themselves from their constructor fields: @langchain/openai's ChatOpenAI.withConfig
  // (and so bindTools, which agents call) returns `new ChatOpenAI(this.fields)`. Put the handler there too,
  // or tool-calling agents would run an unmetered copy.
  const fields = (target as { fields?: unknown }).fields;
  if (fields && typeof fields === 'object' && !Array.isArray(fields)) {
    (fields as HasCallbacks).callbacks = Array.isArray(t.callbacks) ? t.callbacks : [handler];
  }
  return target;
}

/**
 * Refuses every model call and tool run with the operator's message: what a
 * metered node attaches when the customer could not be resolved, so the
 * refusal happens before the provider is called (and a Quota Guard in front
 * usually answered first).
 */
export class BillingRefusalHandler extends BaseCallbackHandler {
  name = 'BillingRefusalHandler';
  override raiseError = true;
  override awaitHandlers = true;
  constructor(private readonly message: string) {
    super({ raiseError: true });
    this.raiseError = true;
    this.awaitHandlers = true;
  }
  override async handleLLMStart(): Promise<void> {
    throw new Error(this.message);
  }
  override async handleChatModelStart(): Promise<void> {
    throw new Error(this.message);
  }
  override async handleToolStart(): Promise<void> {
    throw new Error(this.message);
  }
}
