import { AIMessage, AIMessageChunk } from '@langchain/core/messages';
import { ChatGenerationChunk } from '@langchain/core/outputs';
import { REFUSAL_MARKER_KEY } from '../../src/plugin';

/**
 * Refusals as answers. Flowise turns every error thrown during a prediction
 * into HTTP 500 (agentflow nodes and chat models have no catch), so a metered
 * model that is refused never throws: it answers with the operator's message as
 * its own AI message, the chain or the LLM/Agent node ends with it (HTTP 200),
 * and the provider is never called. The message carries a machine-readable
 * marker in its metadata; what reaches an API client is described in the README
 * ("Refusals are answers").
 */
export interface RefusalLike {
  readonly kind: string;
  readonly code: string;
  readonly message: string;
  readonly marker?: object;
}

/**
 * Flowise 3.1.4's Condition Agent asks its model for a JSON block `{"output": "<scenario>"}` and throws
 * (HTTP 500) on anything else. Its last message always has this shape, whatever system prompt the operator set
 * (ConditionAgent.js builds `{"input": …, "scenarios": […], "instruction": …}`).
 */
function asksForScenario(messages: readonly unknown[] | undefined): boolean {
  const last = messages?.[messages.length - 1] as { content?: unknown } | undefined;
  const c = typeof last?.content === 'string' ? last.content.trimStart() : '';
  return c.startsWith('{"input":') && c.includes('"scenarios": [');
}

/**
 * The refusal as the model's answer. To a Condition Agent it is a scenario answer naming the message (no
 * scenario matches it, so Flowise takes the last, "else", branch; the run is refused, so the metered steps
 * there answer the refusal too): the prediction still ends with HTTP 200 and no unpaid call.
 */
function fields(refusal: RefusalLike, messages?: readonly unknown[]) {
  const meta = { [REFUSAL_MARKER_KEY]: refusal.marker ?? { type: REFUSAL_MARKER_KEY, kind: refusal.kind, code: refusal.code } };
  const content = asksForScenario(messages) ? `\`\`\`json\n${JSON.stringify({ output: refusal.message })}\n\`\`\`` : refusal.message;
  return { content, response_metadata: meta, additional_kwargs: meta, tool_calls: [] };
}

/** A `_generate` result that answers with the refusal. */
export function refusalResult(refusal: RefusalLike, messages?: readonly unknown[]) {
  const f = fields(refusal, messages);
  return { generations: [{ text: f.content, message: new AIMessage(f) }], llmOutput: {} };
}

/** A `_streamResponseChunks` chunk that answers with the refusal. */
export function refusalChunk(refusal: RefusalLike, messages?: readonly unknown[]): ChatGenerationChunk {
  const f = fields(refusal, messages);
  return new ChatGenerationChunk({ text: f.content, message: new AIMessageChunk(f) });
}
