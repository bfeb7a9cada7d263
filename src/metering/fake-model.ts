import { BaseChatModel, type BaseChatModelParams } from '@langchain/core/language_models/chat_models';
import { AIMessage, AIMessageChunk, type BaseMessage } from '@langchain/core/messages';
import { ChatGenerationChunk, type ChatResult } from '@langchain/core/outputs';
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';

/** Same counting rule as the loopback OpenAI test server: whitespace-separated words. */
function words(text: string): string[] {
  return text.split(/\s+/).filter((w) => w.length > 0);
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p === 'string' ? p : (p as { text?: string })?.text ?? '')).join(' ');
  return '';
}

export interface FakeUsageChatModelInput extends BaseChatModelParams {
  /** Reported as the model name (priced from the rate card). Default "gpt-4o-mini". */
  model?: string;
  /** The reply for a conversation; default `echo: <last message>`. */
  reply?: (messages: BaseMessage[]) => string;
  /** Output limit: truncates the reply to this many words and is sent as max_tokens. */
  maxTokens?: number;
  /** Whether usage_metadata is reported (default true). */
  reportUsage?: boolean;
}

/**
 * A deterministic chat model that reports token usage, for examples, demos,
 * tests and benchmarks (no network). Token rule, per call:
 *   input_tokens  = Σ over messages of (4 + words(text))
 *   output_tokens = words(reply)
 * Streaming yields one word per chunk; the last chunk carries usage_metadata.
 */
export class FakeUsageChatModel extends BaseChatModel {
  model: string;
  maxTokens?: number;
  reportUsage: boolean;
  private readonly replyFn: (messages: BaseMessage[]) => string;
  /** Number of calls that reached the model. */
  calls = 0;

  constructor(fields: FakeUsageChatModelInput = {}) {
    super(fields);
    this.model = fields.model ?? 'gpt-4o-mini';
    this.maxTokens = fields.maxTokens;
    this.reportUsage = fields.reportUsage ?? true;
    this.replyFn = fields.reply ?? ((m) => `echo: ${textOf(m[m.length - 1]?.content)}`);
  }

  static override lc_name(): string {
    return 'FakeUsageChatModel';
  }

  _llmType(): string {
    return 'fake-usage';
  }

  override invocationParams(): Record<string, unknown> {
    return { model: this.model, ...(this.maxTokens ? { max_tokens: this.maxTokens } : {}) };
  }

  /** The reply and its usage for `messages` (exported so tests compute expectations with the same rule). */
  compute(messages: BaseMessage[]): { text: string; inputTokens: number; outputTokens: number } {
    let w = words(this.replyFn(messages));
    if (this.maxTokens !== undefined) w = w.slice(0, this.maxTokens);
    const inputTokens = messages.reduce((n, m) => n + 4 + words(textOf(m.content)).length, 0);
    return { text: w.join(' '), inputTokens, outputTokens: w.length };
  }

  private usage(r: { inputTokens: number; outputTokens: number }) {
    return { input_tokens: r.inputTokens, output_tokens: r.outputTokens, total_tokens: r.inputTokens + r.outputTokens };
  }

  async _generate(messages: BaseMessage[]): Promise<ChatResult> {
    this.calls++;
    const r = this.compute(messages);
    const message = new AIMessage({
      content: r.text,
      ...(this.reportUsage ? { usage_metadata: this.usage(r) } : {}),
      response_metadata: { model_name: this.model },
    });
    return { generations: [{ text: r.text, message }], llmOutput: {} };
  }

  override async *_streamResponseChunks(messages: BaseMessage[], _options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): AsyncGenerator<ChatGenerationChunk> {
    this.calls++;
    const r = this.compute(messages);
    const pieces = words(r.text);
    for (let i = 0; i < pieces.length; i++) {
      const text = i === 0 ? pieces[i]! : ` ${pieces[i]}`;
      const chunk = new ChatGenerationChunk({ text, message: new AIMessageChunk({ content: text }) });
      yield chunk;
      await runManager?.handleLLMNewToken(text, undefined, undefined, undefined, undefined, { chunk });
    }
    yield new ChatGenerationChunk({
      text: '',
      message: new AIMessageChunk({ content: '', ...(this.reportUsage ? { usage_metadata: this.usage(r) } : {}), response_metadata: { model_name: this.model } }),
    });
  }
}
