import type { ICommonObject } from './flowise';

/** Flow state after merging `updates` (Agentflow v2: a returned `state` replaces the runtime state). */
export function withState(options: ICommonObject, updates: Record<string, unknown>): Record<string, unknown> {
  const state = options.agentflowRuntime?.state;
  return { ...(state && typeof state === 'object' ? state : {}), ...updates };
}

/** One key per execution, node and iteration: the same node re-run in a loop or iteration charges again, a retry does not. */
export function executionKey(kind: string, options: ICommonObject, nodeId: string): string {
  const exec = options.apiMessageId ?? options.chatId ?? 'run';
  const iteration = options.iterationContext?.index ?? options.iterationContext?.iterationIndex;
  return `agentflow:${options.chatflowid ?? options.chatflowId ?? 'flow'}:${exec}:${nodeId}${iteration !== undefined ? `:i${iteration}` : ''}:${kind}`;
}

/**
 * The newest answer of the run so far (what an LLM/Agent node produced), for nodes that pass it on: an
 * assistant message, or a message named after the node that wrote it. Flowise 3.1.4's LLM and Agent nodes
 * append their response with role "user" by default ("Return Response As": User Message), named after the node.
 */
export function lastAssistantText(options: ICommonObject): string {
  const history = options.agentflowRuntime?.chatHistory;
  if (!Array.isArray(history)) return '';
  for (let k = history.length - 1; k >= 0; k--) {
    const m = history[k];
    if (m && (m.role === 'assistant' || m.role === 'ai' || (typeof m.name === 'string' && m.name)) && typeof m.content === 'string') return m.content;
  }
  return '';
}

/**
 * Both choices behave alike since refusals stopped throwing (a throw was HTTP 500): the node's content is the
 * message, flow state gets billingRefused / billingRefusal / billingMessage, and the metered steps after it
 * answer the refusal without running. Kept so that saved flows still load.
 */
export const ON_REFUSAL_OPTIONS = [
  {
    label: 'Answer with the message',
    name: 'stop',
    description: 'This node’s content is the message and flow state gets $flow.state.billingRefused / billingRefusal / billingMessage; metered steps after it answer the refusal without running (unmetered nodes still run: route around them with a Condition on flow state)',
  },
  { label: 'Write it to flow state', name: 'state', description: 'The same as "Answer with the message" (kept for saved flows): state is written in both cases' },
];

/** The On Refusal input of Billing Gate and Charge. */
export const ON_REFUSAL_INPUT = {
  label: 'On Refusal',
  name: 'onRefusal',
  type: 'options',
  options: ON_REFUSAL_OPTIONS,
  default: 'stop',
  optional: true,
  additionalParams: true,
  description: 'Either way the refusal is this node’s content and is written to flow state (a refusal never throws: that would be HTTP 500)',
};
