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

function fields(refusal: RefusalLike) {
  const meta = { [REFUSAL_MARKER_KEY]: refusal.marker ?? { type: REFUSAL_MARKER_KEY, kind: refusal.kind, code: refusal.code } };
  return { content: refusal.message, response_metadata: meta, additional_kwargs: meta, tool_calls: [] };
}

/** A `_generate` result that answers with the refusal. */
export function refusalResult(refusal: RefusalLike) {
  return { generations: [{ text: refusal.message, message: new AIMessage(fields(refusal)) }], llmOutput: {} };
}

/** A `_streamResponseChunks` chunk that answers with the refusal. */
export function refusalChunk(refusal: RefusalLike): ChatGenerationChunk {
  return new ChatGenerationChunk({ text: refusal.message, message: new AIMessageChunk(fields(refusal)) });
}
