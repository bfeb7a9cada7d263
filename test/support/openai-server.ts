/**
 * A deterministic, OpenAI-compatible chat-completions server on loopback, for tests.
 *
 * Endpoints: `POST /v1/chat/completions` (streaming and not, tool calls),
 * `POST /v1/responses` (the Responses API, see openai-responses.ts),
 * `GET /v1/models`, `GET /v1/models/:id`. Node `http` only.
 *
 * Everything a response contains is a pure function of the request (plus an
 * optional script the test installs), so a test can compute the expected text
 * and token usage itself with the exported helpers:
 *
 * TOKEN-COUNT RULE (see `countWords`, `countPromptTokens`, `countCompletionTokens`)
 *  - words(s)          = number of whitespace-separated, non-empty pieces of s.
 *  - prompt_tokens     = Σ over request messages of
 *                          MESSAGE_OVERHEAD (4)
 *                          + words(text content)         (string content, or the `text`
 *                                                         of each text part; every non-text
 *                                                         part, e.g. an image, counts
 *                                                         NON_TEXT_PART_TOKENS (85))
 *                          + Σ over its tool_calls of words(function.name) + words(function.arguments)
 *                      + TOOL_DEFINITION_TOKENS (10) × number of `tools` in the request.
 *  - completion_tokens = per choice: words(reply text) + Σ over tool calls of
 *                        words(name) + words(arguments as sent); × `n` choices.
 *  - total_tokens      = prompt_tokens + completion_tokens.
 *  - `max_completion_tokens` (or else `max_tokens`) truncates the reply TEXT to
 *    that many words and sets finish_reason "length" (tool calls are never truncated).
 *  - A script may override any usage field (e.g. `cached_tokens`); the overrides
 *    are reported verbatim (total is recomputed unless overridden).
 *
 * DEFAULT REPLY (no script): `echo: <text of the last user message>`; that is
 * words(last user text) + 1 completion tokens before truncation.
 */
import * as http from 'node:http';
import { listenOnLoopback } from './loopback';
import { createRequire } from 'node:module';
import { handleResponses, type ResponsesCall, type ResponsesUsageScript } from './openai-responses';

export const MESSAGE_OVERHEAD = 4;
export const TOOL_DEFINITION_TOKENS = 10;
export const NON_TEXT_PART_TOKENS = 85;
export const DEFAULT_REPLY_PREFIX = 'echo:';

// ---------------------------------------------------------------- types

export interface ChatToolCallIn {
  id?: string;
  type?: string;
  function?: { name?: string; arguments?: string };
}

export interface ChatMessageIn {
  role: string;
  content?: unknown;
  name?: string;
  tool_calls?: ChatToolCallIn[];
  tool_call_id?: string;
}

export interface ChatRequest {
  model?: string;
  messages?: ChatMessageIn[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  n?: number | null;
  tools?: unknown[];
  tool_choice?: unknown;
  [key: string]: unknown;
}

export interface ScriptToolCall {
  /** Defaults to `call_<callNumber>_<index>`. */
  id?: string;
  name: string;
  /** An object is JSON.stringify'd (no whitespace, so it counts as one word unless it contains spaces). */
  arguments?: string | Record<string, unknown>;
}

export interface UsageOverride {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  cached_tokens?: number;
  reasoning_tokens?: number;
}

/** How to cut a stream short. */
export interface StreamInterrupt {
  /** Number of content/tool-call delta chunks sent before the interruption (the role chunk is not counted). */
  afterChunks: number;
  /**
   * 'destroy': the socket is destroyed (client sees a connection reset / premature close).
   * 'end': the HTTP response ends cleanly without finish_reason, usage or `[DONE]`.
   */
  mode?: 'destroy' | 'end';
}

export interface ScriptReplyObject {
  content?: string | null;
  tool_calls?: ScriptToolCall[];
  /** Defaults: 'tool_calls' when tool calls are present, 'length' when truncated, else 'stop'. */
  finish_reason?: string;
  usage?: UsageOverride;
  /** Delay before the response starts (overrides the server default). */
  delayMs?: number;
  /** Answer with this HTTP error status and an OpenAI-style error body instead. */
  errorStatus?: number;
  errorMessage?: string;
  /** Streaming only. */
  interrupt?: StreamInterrupt;
  /** Streaming only: delay between chunks (overrides the server default). */
  chunkDelayMs?: number;
}

export type ScriptReply = string | ScriptReplyObject;

export interface ScriptContext {
  /** 1-based number of this chat-completions call since start/reset. */
  callNumber: number;
  /** Headers of the request (lower-case keys). */
  headers: http.IncomingHttpHeaders;
}

export type ChatScript = (request: ChatRequest, ctx: ScriptContext) => ScriptReply | Promise<ScriptReply>;

export interface RecordedResponse {
  status: number;
  stream: boolean;
  content: string | null;
  toolCalls: Array<{ id: string; name: string; arguments: string }>;
  finishReason: string | null;
  usage: ChatUsage | null;
  /** Set when a stream was cut short by `interrupt`. */
  interrupted?: 'destroy' | 'end';
}

export interface RecordedCall {
  path: string;
  body: ChatRequest;
  headers: http.IncomingHttpHeaders;
  /** Date.now() when the request body was fully received. */
  at: number;
  /** Filled in once the reply is computed (before any delay/streaming). */
  response?: RecordedResponse;
}

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number; audio_tokens: number };
  completion_tokens_details: {
    reasoning_tokens: number;
    audio_tokens: number;
    accepted_prediction_tokens: number;
    rejected_prediction_tokens: number;
  };
}

export interface OpenAIServerOptions {
  /** Port to listen on (default 0 = any free port). Always binds 127.0.0.1. */
  port?: number;
  /** If set, requests must carry `Authorization: Bearer <apiKey>` or get 401. */
  apiKey?: string;
  /** Model ids listed by GET /v1/models. */
  models?: string[];
  /** Delay before every response starts (ms). */
  delayMs?: number;
  /** Delay between stream chunks (ms). */
  chunkDelayMs?: number;
  /** Words per streamed content chunk (default 1). */
  wordsPerChunk?: number;
  /** Interrupt every stream (unless the script reply says otherwise). */
  interrupt?: StreamInterrupt;
  script?: ChatScript | null;
}

export interface OpenAIServer {
  port: number;
  /** e.g. `http://127.0.0.1:PORT/v1` — pass as `configuration.baseURL` or Flowise `basepath`. */
  baseURL: string;
  calls: RecordedCall[];
  callCount(): number;
  setScript(script: ChatScript | null): void;
  /** Change server-wide defaults at run time (delay, chunking, interrupt…). */
  setOptions(opts: Omit<OpenAIServerOptions, 'port' | 'script'>): void;
  /** Calls to `POST /v1/responses`, in order (not in `calls`, which are chat completions). */
  responsesCalls: ResponsesCall[];
  /** How the Responses API reports usage from now on (see openai-responses.ts); reset clears it. */
  setResponsesUsage(usage: ResponsesUsageScript): void;
  /** Clears recorded calls and the call counter (script and options stay). */
  reset(): void;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- token counting

/** Number of whitespace-separated, non-empty pieces of `text`. */
export function countWords(text: string | null | undefined): number {
  if (!text) return 0;
  let n = 0;
  for (const piece of text.split(/\s+/)) if (piece.length > 0) n++;
  return n;
}

/** Tokens of one message's `content` (string or array of parts). */
export function countContentTokens(content: unknown): number {
  if (content == null) return 0;
  if (typeof content === 'string') return countWords(content);
  if (Array.isArray(content)) {
    let n = 0;
    for (const part of content) {
      if (typeof part === 'string') n += countWords(part);
      else if (part && typeof part === 'object' && (part as { type?: unknown }).type === 'text') {
        n += countWords(String((part as { text?: unknown }).text ?? ''));
      } else n += NON_TEXT_PART_TOKENS;
    }
    return n;
  }
  return countWords(String(content));
}

/** prompt_tokens of a request, per the rule at the top of this file. */
export function countPromptTokens(request: Pick<ChatRequest, 'messages' | 'tools'>): number {
  let n = 0;
  for (const m of request.messages ?? []) {
    n += MESSAGE_OVERHEAD + countContentTokens(m.content);
    for (const tc of m.tool_calls ?? []) {
      n += countWords(tc.function?.name) + countWords(tc.function?.arguments);
    }
  }
  n += TOOL_DEFINITION_TOKENS * (request.tools?.length ?? 0);
  return n;
}

/** completion_tokens of ONE choice with this text and these tool calls. */
export function countCompletionTokens(
  content: string | null | undefined,
  toolCalls: ReadonlyArray<{ name: string; arguments: string }> = [],
): number {
  let n = countWords(content);
  for (const tc of toolCalls) n += countWords(tc.name) + countWords(tc.arguments);
  return n;
}

/** Text of the last `user` message (text parts joined by a space). */
export function lastUserText(request: Pick<ChatRequest, 'messages'>): string {
  const msgs = request.messages ?? [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    const m = msgs[i]!;
    if (m.role !== 'user') continue;
    return contentText(m.content);
  }
  return '';
}

function contentText(content: unknown): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) =>
        typeof p === 'string'
          ? p
          : p && typeof p === 'object' && (p as { type?: unknown }).type === 'text'
            ? String((p as { text?: unknown }).text ?? '')
            : '',
      )
      .filter((s) => s.length > 0)
      .join(' ');
  }
  return String(content);
}

/** The reply used when no script is installed. */
export function defaultReply(request: Pick<ChatRequest, 'messages'>): string {
  const t = lastUserText(request).trim();
  return t ? `${DEFAULT_REPLY_PREFIX} ${t}` : DEFAULT_REPLY_PREFIX;
}

/** Keeps the first `maxWords` words (joined by single spaces). */
export function truncateWords(text: string, maxWords: number): { text: string; truncated: boolean } {
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  if (words.length <= maxWords) return { text, truncated: false };
  return { text: words.slice(0, Math.max(0, maxWords)).join(' '), truncated: true };
}

export interface ExpectedReply {
  content: string | null;
  toolCalls: Array<{ id: string; name: string; arguments: string }>;
  finishReason: string;
  usage: ChatUsage;
}

/**
 * Computes the reply the server sends for `request` given a (resolved) script
 * reply. Exported so tests can state expectations with the same function
 * (e.g. `expectedReply(body).usage.prompt_tokens`).
 */
export function expectedReply(request: ChatRequest, reply?: ScriptReply, callNumber = 1): ExpectedReply {
  const r: ScriptReplyObject =
    reply === undefined ? { content: defaultReply(request) } : typeof reply === 'string' ? { content: reply } : reply;
  const toolCalls = (r.tool_calls ?? []).map((tc, i) => ({
    id: tc.id ?? `call_${callNumber}_${i}`,
    name: tc.name,
    arguments: typeof tc.arguments === 'string' ? tc.arguments : JSON.stringify(tc.arguments ?? {}),
  }));
  let content: string | null = r.content ?? (toolCalls.length ? null : '');
  let truncated = false;
  const limit = request.max_completion_tokens ?? request.max_tokens;
  if (typeof limit === 'number' && limit >= 0 && content) {
    const t = truncateWords(content, limit);
    content = t.text;
    truncated = t.truncated;
  }
  const n = Math.max(1, request.n ?? 1);
  const finishReason = r.finish_reason ?? (toolCalls.length ? 'tool_calls' : truncated ? 'length' : 'stop');
  const prompt = r.usage?.prompt_tokens ?? countPromptTokens(request);
  const completion = r.usage?.completion_tokens ?? n * countCompletionTokens(content, toolCalls);
  const usage: ChatUsage = {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: r.usage?.total_tokens ?? prompt + completion,
    prompt_tokens_details: { cached_tokens: r.usage?.cached_tokens ?? 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: r.usage?.reasoning_tokens ?? 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
  return { content, toolCalls, finishReason, usage };
}

/**
 * A script that walks through `steps` by conversation depth: step i is used
 * when the request already contains i assistant messages (so a tool-calling
 * agent's turns map onto steps deterministically, even across retries).
 * The last step repeats if the conversation goes deeper.
 */
export function sequenceScript(steps: ScriptReply[]): ChatScript {
  if (steps.length === 0) throw new Error('sequenceScript needs at least one step');
  return (req) => {
    const depth = (req.messages ?? []).filter((m) => m.role === 'assistant').length;
    return steps[Math.min(depth, steps.length - 1)]!;
  };
}

// ---------------------------------------------------------------- server

function sendJson(res: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
    ...extra,
  });
  res.end(data);
}

function openAIError(res: http.ServerResponse, status: number, message: string, type = 'invalid_request_error'): void {
  sendJson(res, status, { error: { message, type, param: null, code: status === 401 ? 'invalid_api_key' : null } });
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Splits text into chunks of `wordsPerChunk` words, keeping the separating whitespace so chunks concatenate back to the text. */
function chunkText(text: string, wordsPerChunk: number): string[] {
  const tokens = text.match(/\S+\s*/g) ?? [];
  const lead = text.match(/^\s*/)?.[0] ?? '';
  const out: string[] = [];
  for (let i = 0; i < tokens.length; i += wordsPerChunk) out.push(tokens.slice(i, i + wordsPerChunk).join(''));
  if (lead && out.length) out[0] = lead + out[0];
  return out;
}

export async function startOpenAIServer(opts: OpenAIServerOptions = {}): Promise<OpenAIServer> {
  let options: Omit<OpenAIServerOptions, 'port' | 'script'> = { ...opts };
  let script: ChatScript | null = opts.script ?? null;
  const calls: RecordedCall[] = [];
  let counter = 0;
  let idSeq = 0;
  const timers = new Set<NodeJS.Timeout>();
  let closing = false;
  const responses = { calls: [] as ResponsesCall[], usage: {} as ResponsesUsageScript, seq: 0 };

  const wait = (ms: number) =>
    ms > 0
      ? new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            timers.delete(t);
            resolve();
          }, ms);
          timers.add(t);
        })
      : Promise.resolve();

  const models = () => options.models ?? ['gpt-4o-mini', 'gpt-4o', 'test-model'];

  async function handleChat(req: http.IncomingMessage, res: http.ServerResponse, raw: string, path: string) {
    let body: ChatRequest;
    try {
      body = JSON.parse(raw) as ChatRequest;
    } catch {
      return openAIError(res, 400, 'We could not parse the JSON body of your request.');
    }
    if (!body || typeof body !== 'object' || !Array.isArray(body.messages)) {
      return openAIError(res, 400, "Missing required parameter: 'messages'.");
    }
    const call: RecordedCall = { path, body, headers: req.headers, at: Date.now() };
    calls.push(call);
    const callNumber = ++counter;

    let scripted: ScriptReply | undefined;
    if (script) {
      try {
        scripted = await script(body, { callNumber, headers: req.headers });
      } catch (e) {
        return openAIError(res, 500, `test script threw: ${(e as Error).message}`, 'server_error');
      }
    }
    const r: ScriptReplyObject = scripted === undefined ? {} : typeof scripted === 'string' ? { content: scripted } : scripted;
    const stream = body.stream === true;

    await wait(r.delayMs ?? options.delayMs ?? 0);
    if (closing || res.destroyed) return;

    if (r.errorStatus) {
      call.response = { status: r.errorStatus, stream, content: null, toolCalls: [], finishReason: null, usage: null };
      const type = r.errorStatus === 429 ? 'rate_limit_exceeded' : r.errorStatus >= 500 ? 'server_error' : 'invalid_request_error';
      return openAIError(res, r.errorStatus, r.errorMessage ?? `scripted error ${r.errorStatus}`, type);
    }

    const exp = expectedReply(body, scripted, callNumber);
    const id = `chatcmpl-test-${++idSeq}`;
    const created = Math.floor(call.at / 1000);
    const model = body.model ?? 'test-model';
    const n = Math.max(1, body.n ?? 1);
    const record: RecordedResponse = {
      status: 200,
      stream,
      content: exp.content,
      toolCalls: exp.toolCalls,
      finishReason: exp.finishReason,
      usage: exp.usage,
    };
    call.response = record;

    if (!stream) {
      const choices = Array.from({ length: n }, (_, index) => ({
        index,
        message: {
          role: 'assistant',
          content: exp.content,
          refusal: null,
          ...(exp.toolCalls.length
            ? {
                tool_calls: exp.toolCalls.map((tc) => ({
                  id: tc.id,
                  type: 'function',
                  function: { name: tc.name, arguments: tc.arguments },
                })),
              }
            : {}),
        },
        logprobs: null,
        finish_reason: exp.finishReason,
      }));
      return sendJson(
        res,
        200,
        { id, object: 'chat.completion', created, model, system_fingerprint: 'fp_test', choices, usage: exp.usage },
        { 'x-request-id': `req_${idSeq}` },
      );
    }

    // ---- streaming
    const includeUsage = body.stream_options?.include_usage === true;
    const interrupt = r.interrupt ?? options.interrupt;
    const chunkDelay = r.chunkDelayMs ?? options.chunkDelayMs ?? 0;
    const wordsPerChunk = Math.max(1, options.wordsPerChunk ?? 1);
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-request-id': `req_${idSeq}`,
    });
    const base = { id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_test' };
    // Each write is awaited so that an interruption happens after the data really left.
    const send = (obj: unknown) =>
      new Promise<void>((resolve) => {
        if (res.destroyed) return resolve();
        res.write(`data: ${JSON.stringify(obj)}\n\n`, () => resolve());
      });
    const cut = async (how: 'destroy' | 'end') => {
      record.interrupted = how;
      if (how === 'end') return void res.end();
      await wait(20); // let the client consume what was sent before the connection dies
      res.destroy();
    };
    const chunk = (index: number, delta: unknown, finish: string | null = null) =>
      send({
        ...base,
        choices: [{ index, delta, logprobs: null, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });

    // Deltas per choice, in order; the interruption counts these.
    const deltas: unknown[] = [];
    for (const piece of exp.content ? chunkText(exp.content, wordsPerChunk) : []) deltas.push({ content: piece });
    exp.toolCalls.forEach((tc, i) => {
      deltas.push({ tool_calls: [{ index: i, id: tc.id, type: 'function', function: { name: tc.name, arguments: '' } }] });
      if (tc.arguments) deltas.push({ tool_calls: [{ index: i, function: { arguments: tc.arguments } }] });
    });

    let sent = 0;
    for (let choice = 0; choice < n; choice++) {
      await chunk(choice, { role: 'assistant', content: exp.content === null ? null : '', refusal: null });
      for (const d of deltas) {
        if (interrupt && sent >= interrupt.afterChunks) return cut(interrupt.mode ?? 'destroy');
        await wait(chunkDelay);
        if (closing || res.destroyed) return;
        await chunk(choice, d);
        sent++;
      }
      await chunk(choice, {}, exp.finishReason);
    }
    if (interrupt) {
      // afterChunks >= all deltas: cut after the finish_reason chunk, before usage and [DONE]
      return cut(interrupt.mode ?? 'destroy');
    }
    if (includeUsage) await send({ ...base, choices: [], usage: exp.usage });
    res.write('data: [DONE]\n\n');
    res.end();
  }

  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const path = url.pathname.replace(/\/+$/, '') || '/';
      const raw = await readBody(req);
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        return openAIError(res, 401, 'Incorrect API key provided.');
      }
      if (req.method === 'POST' && (path === '/v1/chat/completions' || path === '/chat/completions')) {
        return handleChat(req, res, raw, path);
      }
      if (req.method === 'POST' && (path === '/v1/responses' || path === '/responses')) return handleResponses(res, raw, responses);
      if (req.method === 'GET' && (path === '/v1/models' || path === '/models')) {
        return sendJson(res, 200, {
          object: 'list',
          data: models().map((m) => ({ id: m, object: 'model', created: 1700000000, owned_by: 'test' })),
        });
      }
      const m = /^\/(?:v1\/)?models\/(.+)$/.exec(path);
      if (req.method === 'GET' && m) {
        const mid = decodeURIComponent(m[1]!);
        if (!models().includes(mid)) return openAIError(res, 404, `The model '${mid}' does not exist`);
        return sendJson(res, 200, { id: mid, object: 'model', created: 1700000000, owned_by: 'test' });
      }
      return openAIError(res, 404, `Unknown request URL: ${req.method} ${url.pathname}`);
    })().catch((e: unknown) => {
      if (!res.headersSent) openAIError(res, 500, String(e), 'server_error');
      else res.destroy();
    });
  });
  const loop = await listenOnLoopback(server, { port: opts.port });
  const port = loop.port;

  return {
    port,
    baseURL: `${loop.origin}/v1`,
    calls,
    callCount: () => calls.length,
    setScript(s) {
      script = s;
    },
    setOptions(o) {
      options = { ...options, ...o };
    },
    responsesCalls: responses.calls,
    setResponsesUsage(usage) {
      responses.usage = usage;
    },
    reset() {
      calls.length = 0;
      counter = 0;
      responses.calls.length = 0;
      responses.usage = {};
    },
    async close() {
      closing = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await loop.close();
    },
  };
}

// ---------------------------------------------------------------- offline tiktoken

const TIKTOKEN_URL = /^https:\/\/tiktoken\.pages\.dev\/js\/([a-z0-9_]+)\.json$/;

/**
 * Offline guard for @langchain/core's token estimator, for THIS process.
 *
 * Why: a `ChatOpenAI` with `streaming: true` called via `invoke()` (the
 * `_generate` path, also used by agents/chains) estimates tokens with
 * `getNumTokens()`, which downloads `https://tiktoken.pages.dev/js/<enc>.json`
 * through an AsyncCaller with 6 retries and exponential back-off. With no
 * internet that is ~1 minute per call (the failure is not cached). `.stream()`
 * and non-streaming `invoke()` are not affected.
 *
 * This wraps `globalThis.fetch` so those URLs are answered from the local
 * `js-tiktoken/ranks/<enc>` (a transitive dependency of @langchain/core), or
 * with a 404 if unavailable (404 is not retried; LangChain then falls back to
 * length/4 with a console.warn). Other URLs go to the real fetch. Returns an
 * uninstall function. A separate process (Flowise) needs the same trick in a
 * `--require` preload.
 */
export function installOfflineTiktoken(): () => void {
  const original = globalThis.fetch;
  const load = createRequire(__filename);
  const patched: typeof fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const m = TIKTOKEN_URL.exec(url);
    if (!m) return original(input, init);
    try {
      const mod = load(`js-tiktoken/ranks/${m[1]!}`) as { default?: unknown };
      const ranks = mod.default ?? mod;
      return new Response(JSON.stringify(ranks), { status: 200, headers: { 'content-type': 'application/json' } });
    } catch {
      return new Response('{"error":"offline"}', { status: 404, headers: { 'content-type': 'application/json' } });
    }
  };
  globalThis.fetch = patched;
  return () => {
    if (globalThis.fetch === patched) globalThis.fetch = original;
  };
}
