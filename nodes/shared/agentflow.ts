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

export const ON_REFUSAL_OPTIONS = [
  {
    label: 'Answer with the message',
    name: 'stop',
    description: 'The refusal is the answer (HTTP 200): metered steps after this node answer it without running. Flowise cannot skip unmetered nodes from here: route around them with a Condition on flow state',
  },
  { label: 'Write it to flow state', name: 'state', description: 'Sets $flow.state.billingRefused / billingRefusal / billingMessage for a Condition node; the flow continues' },
];
