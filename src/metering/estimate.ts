/**
 * Token estimates and usage extraction for the metering handler. Everything
 * here is duck-typed: several `@langchain/core` copies coexist in Flowise, so
 * nothing checks `instanceof` on a LangChain class.
 *
 * ESTIMATE RULE (used for holds, and for charging when a provider reports no usage):
 *   tokens(text)  = max(words(text), ceil(chars(text) / 4))
 *                   — chars/4 is the usual English average; every whitespace-separated
 *                   word is at least one BPE token, which keeps short-word text honest.
 *   prompt tokens = Σ over messages of (MESSAGE_OVERHEAD_TOKENS + tokens(text of the
 *                   message, including tool-call names and arguments)) + tokens(JSON of
 *                   the tool definitions sent with the call).
 *   output tokens = tokens(generated text + tool-call names and arguments).
 * The estimate is a reservation, not a bound: a settle above the hold takes the
 * excess from what else is available (the ledger records any shortfall).
 */

const MESSAGE_OVERHEAD_TOKENS = 4;

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The number of whitespace-separated words (runs of characters outside `\s`), counted without splitting the text. */
export function countWords(text: string): number {
  let n = 0;
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const space = isSpace(text.charCodeAt(i));
    if (!space && !inWord) n++;
    inWord = !space;
  }
  return n;
}

/** Exactly the characters of the RegExp class `\s` (WhiteSpace and LineTerminator). */
function isSpace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d);
  if (c < 0xa0) return false;
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

export function estimateTextTokens(text: string): number {
  if (!text) return 0;
  return Math.max(countWords(text), Math.ceil(text.length / 4));
}

/** The text of a message `content` (string, or an array of parts). Non-text parts count as their JSON. */
export function contentText(content: unknown): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => (typeof p === 'string' ? p : isRec(p) && p.type === 'text' ? String(p.text ?? '') : safeJson(p)))
      .join(' ');
  }
  return safeJson(content);
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? '';
  } catch {
    return '';
  }
}

/** Tool calls of a LangChain message (`tool_calls`, or the raw `additional_kwargs.tool_calls`), as name + arguments text. */
function toolCallText(message: Rec): string {
  const parts: string[] = [];
  const calls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
  for (const c of calls) if (isRec(c)) parts.push(String(c.name ?? ''), typeof c.args === 'string' ? c.args : safeJson(c.args ?? {}));
  if (!calls.length) {
    const kw = isRec(message.additional_kwargs) ? message.additional_kwargs : {};
    const raw = Array.isArray(kw.tool_calls) ? kw.tool_calls : [];
    for (const c of raw) if (isRec(c) && isRec(c.function)) parts.push(String(c.function.name ?? ''), String(c.function.arguments ?? ''));
  }
  return parts.join(' ');
}

/** Prompt-token estimate of one chat model call (messages are duck-typed BaseMessages or plain objects). */
export function estimatePromptTokens(messages: readonly unknown[], tools?: unknown): number {
  let n = 0;
  for (const m of messages) {
    if (typeof m === 'string') {
      n += MESSAGE_OVERHEAD_TOKENS + estimateTextTokens(m);
      continue;
    }
    if (!isRec(m)) continue;
    const text = `${contentText(m.content)} ${toolCallText(m)}`.trim();
    n += MESSAGE_OVERHEAD_TOKENS + estimateTextTokens(text);
  }
  if (Array.isArray(tools) && tools.length) n += estimateTextTokens(safeJson(tools));
  return n;
}

/** Output-token estimate of a finished generation (text plus tool calls). */
function estimateOutputTokens(generation: unknown): number {
  if (!isRec(generation)) return 0;
  const msg = isRec(generation.message) ? generation.message : undefined;
  const text = msg ? `${contentText(msg.content)} ${toolCallText(msg)}`.trim() : String(generation.text ?? '');
  return estimateTextTokens(text);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() ? v.trim() : undefined);
const posInt = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined);

/** The model name: invocation params `model` / `model_name` / `modelName`, else metadata `ls_model_name`. */
export function modelNameOf(extraParams: unknown, metadata: unknown): string | undefined {
  const inv = isRec(extraParams) && isRec(extraParams.invocation_params) ? extraParams.invocation_params : {};
  const md = isRec(metadata) ? metadata : {};
  return str(inv.model) ?? str(inv.model_name) ?? str(inv.modelName) ?? str(md.ls_model_name);
}

/** The call's output limit: `max_tokens` / `max_completion_tokens` / `maxTokens` (or `ls_max_tokens`), else undefined. */
export function maxOutputTokensOf(extraParams: unknown, metadata: unknown): number | undefined {
  const inv = isRec(extraParams) && isRec(extraParams.invocation_params) ? extraParams.invocation_params : {};
  const md = isRec(metadata) ? metadata : {};
  return (
    posInt(inv.max_completion_tokens) ?? posInt(inv.max_tokens) ?? posInt(inv.maxTokens) ?? posInt(inv.maxCompletionTokens) ?? posInt(md.ls_max_tokens)
  );
}

/** Number of choices the call asks for (`n`), at least 1. */
export function choicesOf(extraParams: unknown): number {
  const inv = isRec(extraParams) && isRec(extraParams.invocation_params) ? extraParams.invocation_params : {};
  return posInt(inv.n) ?? 1;
}

/** The call's abort signal (LangChain passes the call options, `signal` included, as `extraParams.options`). */
export function signalOf(extraParams: unknown): AbortSignal | undefined {
  return callSignal(isRec(extraParams) ? extraParams.options : undefined);
}

/** The abort signal in a call's options, duck-typed: a signal from another realm or polyfill works too. */
export function callSignal(options: unknown): AbortSignal | undefined {
  const s = isRec(options) ? options.signal : undefined;
  return isRec(s) && typeof s.addEventListener === 'function' && typeof s.removeEventListener === 'function' && typeof s.aborted === 'boolean' ? (s as unknown as AbortSignal) : undefined;
}

/** Tool definitions sent with the call, if any. */
export function toolsOf(extraParams: unknown): unknown {
  const inv = isRec(extraParams) && isRec(extraParams.invocation_params) ? extraParams.invocation_params : {};
  return inv.tools ?? inv.functions;
}

export type UsageSource = 'usage_metadata' | 'tokenUsage' | 'estimatedTokenUsage' | 'estimate';

export interface TokenUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Parts of `inputTokens` the provider read from / wrote to its prompt cache (absent: none reported). */
  readonly cacheReadTokens?: number;
  readonly cacheWriteTokens?: number;
  readonly source: UsageSource;
}

/** Token counts of one call or stream chunk, without where they came from. */
export type TokenCounts = Omit<TokenUsage, 'source'>;

const nonNeg = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined);

/**
 * The cached parts of `inputTokens` in LangChain's `input_token_details`: `cache_read` (OpenAI's cached
 * prompt tokens, Anthropic's cache reads) and `cache_creation` (Anthropic's cache writes). A count that is
 * not a non-negative integer is ignored; together they never exceed the input tokens (reads first), so a
 * provider's bad report can lower a charge at most to the cache price of the tokens it really sent.
 */
export function cachePartsOf(details: unknown, inputTokens: number): { cacheReadTokens: number; cacheWriteTokens: number } {
  const d = isRec(details) ? details : {};
  return cacheParts(d.cache_read, d.cache_creation, inputTokens);
}

/** Cache read and write counts as cachePartsOf keeps them: garbage ignored, together at most `inputTokens`. */
export function cacheParts(read: unknown, write: unknown, inputTokens: number): { cacheReadTokens: number; cacheWriteTokens: number } {
  const cacheReadTokens = Math.min(nonNeg(read) ?? 0, inputTokens);
  const cacheWriteTokens = Math.min(nonNeg(write) ?? 0, inputTokens - cacheReadTokens);
  return { cacheReadTokens, cacheWriteTokens };
}

/**
 * A message's or a stream chunk's `usage_metadata`, or undefined when it lacks the input or output count,
 * or when both are 0: that is no report. @langchain/openai's Responses API converter (1.2.x) fills in 0 / 0
 * when the provider sent no `usage` (a compatible server may not), and a call read as that was charged
 * nothing; a real call always has input. A chunk of 0 / 0 adds nothing to a stream's sum either way.
 */
export function usageMetadataOf(usageMetadata: unknown): TokenCounts | undefined {
  if (!isRec(usageMetadata)) return undefined;
  const i = nonNeg(usageMetadata.input_tokens);
  const o = nonNeg(usageMetadata.output_tokens);
  if (i === undefined || o === undefined || i + o === 0) return undefined;
  const { cacheReadTokens, cacheWriteTokens } = cachePartsOf(usageMetadata.input_token_details, i);
  return withCache({ inputTokens: i, outputTokens: o }, cacheReadTokens, cacheWriteTokens);
}

/**
 * `counts` with these cache parts; a part that is 0 is left out, so a call without cache reads as it always
 * did. A new literal, not a spread clone given properties (on Node 20 that makes the scavenger keep garbage:
 * see withCardVersion in run-state.ts); it runs on every metered call.
 */
function withCache(counts: TokenCounts, cacheReadTokens = 0, cacheWriteTokens = 0): { -readonly [K in keyof TokenCounts]: TokenCounts[K] } {
  const out: { -readonly [K in keyof TokenCounts]: TokenCounts[K] } = { inputTokens: counts.inputTokens, outputTokens: counts.outputTokens };
  if (cacheReadTokens) out.cacheReadTokens = cacheReadTokens;
  if (cacheWriteTokens) out.cacheWriteTokens = cacheWriteTokens;
  return out;
}

/** `counts` as the usage of a finished call, from `source` (built as withCache builds, for the same reason). */
function usageFrom(counts: TokenCounts, source: UsageSource): TokenUsage {
  const out: { -readonly [K in keyof TokenUsage]: TokenUsage[K] } = { inputTokens: counts.inputTokens, outputTokens: counts.outputTokens, source };
  if (counts.cacheReadTokens) out.cacheReadTokens = counts.cacheReadTokens;
  if (counts.cacheWriteTokens) out.cacheWriteTokens = counts.cacheWriteTokens;
  return out;
}

/**
 * A stream's running usage: the sum of its chunks' (LangChain's own rule when it concatenates them), and
 * the largest output count a chunk gave as the call's total so far (see streamChunkUsageOf).
 */
export type StreamCounts = TokenCounts & { readonly cumulativeOutputTokens?: number };

/** The usage of a stream: the sum of its chunks' (LangChain's own rule when it concatenates them). */
export function addTokenCounts(sum: StreamCounts | undefined, chunk: StreamCounts | undefined): StreamCounts | undefined {
  if (!chunk) return sum;
  if (!sum) return chunk;
  const out: { -readonly [K in keyof StreamCounts]: StreamCounts[K] } = withCache(
    { inputTokens: sum.inputTokens + chunk.inputTokens, outputTokens: sum.outputTokens + chunk.outputTokens },
    (sum.cacheReadTokens ?? 0) + (chunk.cacheReadTokens ?? 0),
    (sum.cacheWriteTokens ?? 0) + (chunk.cacheWriteTokens ?? 0),
  );
  const total = Math.max(sum.cumulativeOutputTokens ?? -1, chunk.cumulativeOutputTokens ?? -1);
  if (total >= 0) out.cumulativeOutputTokens = total;
  return out;
}

/**
 * A stream chunk's usage (a message chunk's `usage_metadata`, see usageMetadataOf), marked when its output
 * count is the call's total so far rather than the chunk's own: Anthropic's `message_delta`, whose usage is
 * cumulative (the Messages API's documented rule), which @langchain/anthropic (1.3.x) turns into a chunk of
 * 0 input tokens with the event's delta (`stop_reason` included) in `additional_kwargs`. `message_start`
 * carries a placeholder output count (1), so summing them, as LangChain does, charged every streamed
 * Anthropic call one output token more than Anthropic bills. Taking the largest cumulative count does not
 * depend on the order the chunks arrive in.
 */
export function streamChunkUsageOf(message: unknown): StreamCounts | undefined {
  const m = isRec(message) ? message : undefined;
  const u = usageMetadataOf(m?.usage_metadata);
  if (!u || u.inputTokens !== 0 || !isRec(m!.additional_kwargs) || !('stop_reason' in m!.additional_kwargs)) return u;
  const out: { -readonly [K in keyof StreamCounts]: StreamCounts[K] } = u;
  out.cumulativeOutputTokens = u.outputTokens;
  return out;
}

/** A stream's usage as charged: its summed counts, the output being the call's total when a chunk gave it. */
export function streamTotal(streamed: StreamCounts | undefined): TokenCounts | undefined {
  if (!streamed || streamed.cumulativeOutputTokens === undefined) return streamed;
  return withCache({ inputTokens: streamed.inputTokens, outputTokens: streamed.cumulativeOutputTokens }, streamed.cacheReadTokens, streamed.cacheWriteTokens);
}

/**
 * A streamed call's usage corrected by its chunks. @langchain/anthropic (1.3.x) gives the closing
 * `message_delta` chunk 0 input tokens but the call's cache counts again (the API repeats them there,
 * cumulative), so the concatenated message reports every cache count twice (langchainjs#10249), and its
 * output is message_delta's cumulative count plus message_start's placeholder 1. Summed chunk by chunk,
 * each cache count cut to its own chunk's input, and the output taken from the cumulative count (see
 * streamChunkUsageOf), they are right: used when the chunks account for the final input count (otherwise
 * they missed part of the usage, e.g. OpenAI's usage chunk is never reported).
 */
export function withStreamedCounts(final: TokenCounts, streamed: StreamCounts | undefined): TokenCounts {
  if (!streamed || streamed.inputTokens !== final.inputTokens) return final;
  const output = streamed.cumulativeOutputTokens ?? final.outputTokens;
  return withCache({ inputTokens: final.inputTokens, outputTokens: output }, streamed.cacheReadTokens, streamed.cacheWriteTokens);
}

/**
 * Actual usage of a finished call (an LLMResult, duck-typed), in this order:
 *  1. `usage_metadata` on a generation's message (input_tokens / output_tokens, and the cached parts of
 *     the input in input_token_details, see cachePartsOf) — the first generation that carries it
 *     (providers report one usage for all choices); `streamed`, the sum of the call's streamed chunks'
 *     usage, corrects its cache parts and a cumulative output count (see withStreamedCounts);
 *  2. `llmOutput.tokenUsage` (promptTokens / completionTokens; LangChain puts no cache counts there);
 *  3. `llmOutput.estimatedTokenUsage` (LangChain's own count when the provider sent none), each
 *     side raised to the estimate below when that is larger: LangChain counts the text only
 *     (@langchain/openai 1.x: no `tools` definitions, no tool calls), so a streamed tool-call
 *     turn came out as 0 output tokens;
 *  4. otherwise the estimate: the prompt estimate taken at the start plus the
 *     estimated output tokens of every generation (see the rule at the top).
 */
export function usageOf(output: unknown, promptEstimate: number, streamed?: StreamCounts): TokenUsage {
  const out = isRec(output) ? output : {};
  const gens: unknown[] = Array.isArray(out.generations) ? (out.generations as unknown[]).flat() : [];
  for (const g of gens) {
    const u = usageMetadataOf(isRec(g) && isRec(g.message) ? g.message.usage_metadata : undefined);
    if (u) return usageFrom(withStreamedCounts(u, streamed), 'usage_metadata');
  }
  const llmOutput = isRec(out.llmOutput) ? out.llmOutput : {};
  let produced: number | undefined;
  const estimatedOutput = () => (produced ??= gens.reduce<number>((n, g) => n + estimateOutputTokens(g), 0));
  for (const source of ['tokenUsage', 'estimatedTokenUsage'] as const) {
    const u = isRec(llmOutput[source]) ? (llmOutput[source] as Rec) : undefined;
    const i = nonNeg(u?.promptTokens);
    const o = nonNeg(u?.completionTokens);
    if (i === undefined || o === undefined || i + o === 0) continue;
    if (source === 'tokenUsage') return { inputTokens: i, outputTokens: o, source };
    return { inputTokens: Math.max(i, promptEstimate), outputTokens: Math.max(o, estimatedOutput()), source };
  }
  return { inputTokens: promptEstimate, outputTokens: estimatedOutput(), source: 'estimate' };
}

/** The text of a streamed chunk for counting (token text, or tool-call argument deltas). */
export function streamedText(token: string, fields: unknown): string {
  if (token) return token;
  const chunk = isRec(fields) && isRec(fields.chunk) ? fields.chunk : undefined;
  const msg = chunk && isRec(chunk.message) ? chunk.message : undefined;
  const tcc = msg && Array.isArray(msg.tool_call_chunks) ? msg.tool_call_chunks : [];
  return tcc.map((c) => (isRec(c) ? `${c.name ?? ''}${c.args ?? ''}` : '')).join('');
}

/** The usage a streamed chunk carries (`fields.chunk.message` of handleLLMNewToken, see streamChunkUsageOf), if any. */
export function chunkUsageOf(fields: unknown): StreamCounts | undefined {
  const chunk = isRec(fields) && isRec(fields.chunk) ? fields.chunk : undefined;
  return streamChunkUsageOf(chunk?.message);
}
