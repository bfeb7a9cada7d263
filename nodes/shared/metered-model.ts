import { randomUUID } from 'node:crypto';
import { addTokenCounts, callSignal, type StreamCounts, streamChunkUsageOf, streamTotal, type TokenCounts, usageMetadataOf, withStreamedCounts } from '../../src/plugin';
import { refusalChunk, refusalResult, type RefusalLike } from './refusal-answer';

/**
 * Meters a LangChain chat model instance, whatever provider built it: each
 * call is paid before the provider is reached and settled after, on the
 * instance's own `_generate` and `_streamResponseChunks`, the two places every
 * path of a chat model ends in (invoke, stream, batch, generatePrompt, the
 * Agent node's tool loop; a cached answer reaches neither and costs nothing).
 * `withConfig` is covered too: @langchain/openai's returns `new ChatOpenAI(this.fields)`
 * (and bindTools goes through it), a fresh instance that is metered again;
 * core's RunnableBinding keeps calling this instance.
 *
 * No `instanceof` on LangChain classes: the model may come from another
 * `@langchain/core` copy than this file.
 */

/** What a metered model needs from the run it bills (src/plugin's FlowRun). */
export interface CallMeter {
  beforeModelCall(call: {
    callKey: string;
    model: string | undefined;
    messages: readonly unknown[];
    tools?: unknown;
    maxOutputTokens?: number;
    usesCustomerKey?: boolean;
    observationId?: string;
    traceId?: string;
  }): Promise<{ ok: true; ticket: unknown } | { ok: false; refusal: RefusalLike }>;
  afterModelCall(ticket: unknown, result: { usage?: TokenCounts; text?: string }): Promise<unknown>;
  failModelCall(ticket: unknown, result: { streamedText?: string }): Promise<unknown>;
}

export interface MeterModelOptions {
  /** The run, or a function giving it (the run may be opened lazily). */
  readonly meter: () => Promise<CallMeter>;
  /** Part of every call key (the node id), so two nodes of one run never share a key. */
  readonly nodeKey: string;
  readonly usesCustomerKey: boolean;
}

const METERED = Symbol.for('flowise-billing.meteredModel');
type AnyFn = (...args: any[]) => any;
interface ModelLike {
  _generate?: AnyFn;
  _streamResponseChunks?: AnyFn;
  withConfig?: AnyFn;
  getLsParams?: AnyFn;
  model?: unknown;
  modelName?: unknown;
  maxTokens?: unknown;
  maxCompletionTokens?: unknown;
  [METERED]?: true;
}

function modelName(m: ModelLike): string | undefined {
  for (const v of [m.model, m.modelName]) if (typeof v === 'string' && v) return v;
  return undefined;
}

/**
 * The call's output limit. After the call's own options, LangChain's
 * `getLsParams(options).ls_max_tokens`: every provider maps its own field there (Google's `maxOutputTokens`,
 * Ollama's `numPredict`…), which the list after it does not know; a limit
 * missed is held at the 4096-token default, less than such a call may produce.
 */
function maxOutputTokens(m: ModelLike, options: Record<string, unknown> | undefined): number | undefined {
  let ls: unknown;
  try {
    ls = typeof m.getLsParams === 'function' ? (m.getLsParams(options ?? {}) as { ls_max_tokens?: unknown } | undefined)?.ls_max_tokens : undefined;
  } catch {
    // a provider's own parameter mapping failing here is not the call's failure: the fields below decide
  }
  // A limit passed with the call comes first (a provider's ls_max_tokens may reflect only its instance).
  for (const v of [options?.max_tokens, options?.maxTokens, options?.max_completion_tokens, ls, m.maxTokens, m.maxCompletionTokens]) {
    if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return v;
  }
  return undefined;
}

/** The call's usage: its message's `usage_metadata` (cached input parts included), else LangChain's `llmOutput` counts. */
function usageOf(message: { usage_metadata?: unknown } | undefined, llmOutput: any): TokenCounts | undefined {
  const u = usageMetadataOf(message?.usage_metadata);
  if (u) return u;
  const t = llmOutput?.tokenUsage ?? llmOutput?.estimatedTokenUsage;
  if (t && typeof t.promptTokens === 'number' && typeof t.completionTokens === 'number') return { inputTokens: t.promptTokens, outputTokens: t.completionTokens };
  return undefined;
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p === 'string' ? p : typeof p?.text === 'string' ? p.text : '')).join('');
  return '';
}

/**
 * The trace of the Langfuse handler Flowise attached to this prediction's chain
 * (chatflow analytics): one handler per prediction, so its trace is this call's.
 */
function langfuseTraceOf(runManager: { handlers?: unknown[] } | undefined): { traceId?: string } {
  for (const h of runManager?.handlers ?? []) {
    const lf = h as { langfuse?: unknown; getTraceId?: () => unknown };
    if (lf && lf.langfuse && typeof lf.getTraceId === 'function') {
      const id = lf.getTraceId();
      if (typeof id === 'string' && id) return { traceId: id };
    }
  }
  return {};
}

/**
 * Whether the model's class implements streaming itself. LangChain falls back
 * to invoke when `_streamResponseChunks` is still BaseChatModel's own (it
 * compares the two), so an instance patch there must not break that test.
 */
function streamsNatively(m: object): boolean {
  let p = Object.getPrototypeOf(m);
  while (p && !Object.prototype.hasOwnProperty.call(p, '_streamResponseChunks')) p = Object.getPrototypeOf(p);
  return !!p && !Object.prototype.hasOwnProperty.call(p, '_generateUncached');
}

/**
 * The options and run managers of the calls a metered `_generate` is paying
 * for right now, with the text their provider streamed so far. A provider
 * whose `_generate` streams through its own `_streamResponseChunks`
 * (ChatAnthropic with `streaming: true`, as Flowise builds it) passes them on:
 * that inner stream is the same provider call and is not paid again (it was
 * held and charged twice); what it streamed is charged if the call fails midway,
 * and the usage its chunks carried corrects the cache counts of the result.
 */
const generating = new WeakMap<object, { text: string; usage?: StreamCounts }>();
const objectOf = (v: unknown): object | null => (v !== null && typeof v === 'object' ? v : null);
const generateOf = (options: unknown, runManager: unknown): { text: string; usage?: StreamCounts } | undefined => {
  for (const v of [options, runManager]) {
    const o = objectOf(v);
    const g = o && generating.get(o);
    if (g) return g;
  }
  return undefined;
};

/** Meters `model` in place and returns it. */
export function meterModel<T>(model: T, opts: MeterModelOptions): T {
  const m = model as unknown as ModelLike;
  if (!m || typeof m !== 'object' || m[METERED]) return model;
  Object.defineProperty(m, METERED, { value: true, enumerable: false });
  const callKey = (runManager: { runId?: string } | undefined) => `${opts.nodeKey}:${runManager?.runId ?? randomUUID()}`;
  const before = async (self: ModelLike, messages: unknown[], options: any, runManager: any) => {
    const meter = await opts.meter();
    const t = await meter.beforeModelCall({
      callKey: callKey(runManager),
      model: modelName(self),
      messages,
      tools: options?.tools,
      maxOutputTokens: maxOutputTokens(self, options),
      usesCustomerKey: opts.usesCustomerKey,
      // The LangChain run id is the Langfuse generation of this call, and a chatflow's Langfuse handler knows its trace.
      ...(runManager?.runId ? { observationId: runManager.runId } : {}),
      ...langfuseTraceOf(runManager),
    });
    return { meter, t };
  };

  const generate = m._generate;
  if (typeof generate === 'function') {
    m._generate = async function (this: ModelLike, messages: unknown[], options: any, runManager: any) {
      const { meter, t } = await before(this, messages, options, runManager);
      if (!t.ok) return refusalResult(t.refusal, messages);
      let result;
      const streamed: { text: string; usage?: StreamCounts } = { text: '' };
      const marks = [objectOf(options), objectOf(runManager)].filter((x): x is object => x !== null);
      for (const x of marks) generating.set(x, streamed);
      try {
        result = await generate.call(this, messages, options, runManager);
      } catch (e) {
        await meter.failModelCall(t.ticket, { streamedText: streamed.text });
        throw e;
      } finally {
        for (const x of marks) generating.delete(x);
      }
      const g = result?.generations?.[0];
      const usage = usageOf(g?.message, result?.llmOutput);
      // Streamed inside (ChatAnthropic with streaming on): the concatenated message counts Anthropic's cache tokens
      // twice and its output one too many (message_start's placeholder 1 added to message_delta's total).
      await meter.afterModelCall(t.ticket, { usage: usage && withStreamedCounts(usage, streamed.usage), text: g?.text ?? textOf(g?.message?.content) });
      return result;
    };
  }

  const stream = m._streamResponseChunks;
  if (typeof stream === 'function' && streamsNatively(m)) {
    m._streamResponseChunks = async function* (this: ModelLike, messages: unknown[], options: any, runManager: any) {
      const outer = generateOf(options, runManager);
      if (outer) {
        for await (const chunk of stream.call(this, messages, options, runManager)) {
          outer.text += chunk?.text ?? '';
          outer.usage = addTokenCounts(outer.usage, streamChunkUsageOf(chunk?.message));
          yield chunk;
        }
        return;
      }
      const { meter, t } = await before(this, messages, options, runManager);
      if (!t.ok) {
        yield refusalChunk(t.refusal, messages);
        return;
      }
      let text = '';
      let usage: StreamCounts | undefined;
      let done = false;
      let ended = false;
      // A consumer that aborts while this generator waits at its yield (in its own loop body, or while busy)
      // never resumes it: LangChain's stream refuses to go on once the signal is aborted, so the finally below
      // never ran and the call stayed held until its hold expired, unpaid. The abort ends it instead, one turn
      // later (a generator that does go on, the provider's request failing, ends it itself first).
      const given = callSignal(options);
      const signal = given?.aborted ? undefined : given;
      const onAbort = () =>
        setImmediate(() => {
          if (ended) return;
          ended = true;
          meter.failModelCall(t.ticket, { streamedText: text }).catch(() => undefined);
        });
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        for await (const chunk of stream.call(this, messages, options, runManager)) {
          text += chunk?.text ?? '';
          // A stream's usage is the sum of its chunks' (LangChain's own rule when it concatenates them):
          // Anthropic reports the input tokens in its first event and the output in its last (input 0 there),
          // Google's client turns its running totals into per-chunk differences. Keeping only the last chunk's
          // charged an Anthropic stream no prompt and a Gemini one only its last chunk. Each chunk's cache counts
          // are cut to its own input, so Anthropic's last event, which repeats them with 0 input, adds none; its
          // output count is the call's total, which replaces the sum (see streamChunkUsageOf).
          usage = addTokenCounts(usage, streamChunkUsageOf(chunk?.message));
          yield chunk;
        }
        done = true;
      } finally {
        signal?.removeEventListener('abort', onAbort);
        // A stream cut short (error, abort, consumer stopped) pays for what was streamed.
        if (!ended) {
          ended = true;
          if (done) await meter.afterModelCall(t.ticket, { usage: streamTotal(usage), text });
          else await meter.failModelCall(t.ticket, { streamedText: text });
        }
      }
    };
  }

  const withConfig = m.withConfig;
  if (typeof withConfig === 'function') {
    m.withConfig = function (this: unknown, ...args: unknown[]) {
      return meterModel(withConfig.apply(this, args), opts);
    };
  }
  return model;
}
