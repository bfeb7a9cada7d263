/**
 * The OpenAI Responses API (`POST /v1/responses`) for the loopback OpenAI server
 * (openai-server.ts routes it here): the documented response object, and the
 * documented server-sent events when `stream: true` (`response.created`,
 * `response.in_progress`, the output item and text events, then
 * `response.completed`, the only event carrying `usage`).
 *
 * It refuses what the real API refuses for requests tests could get wrong: a wrong
 * key (401, checked by the server before routing), a body that is not JSON, no
 * `model`, no `input` (400 invalid_request_error), a `max_output_tokens` below 16.
 *
 * TOKEN-COUNT RULE: words(s) = whitespace-separated pieces of s.
 *  - input_tokens  = words(instructions) + Σ over input messages of (RESPONSES_MESSAGE_OVERHEAD
 *                    + words(their text)); a string `input` is one user message;
 *  - output_tokens = words(reply) + reasoning tokens; the reply is `echo: <last user text>`,
 *                    cut to max_output_tokens words (as the real API, output_tokens includes
 *                    the reasoning tokens, reported again in output_tokens_details);
 *  - `setUsage({ cachedTokens })` reports that many of the input tokens as
 *    `input_tokens_details.cached_tokens` (a part of input_tokens, as the real API's);
 *  - `setUsage({ omitUsage: true })` answers with `usage: null` (as some compatible servers do).
 */
import type * as http from 'node:http';

const countWords = (s: string): number => s.split(/\s+/).filter(Boolean).length;

export const RESPONSES_MESSAGE_OVERHEAD = 4;

export interface ResponsesUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

export interface ResponsesCall {
  stream: boolean;
  model: string;
  body: Record<string, unknown>;
  usage: ResponsesUsage | null;
  reply: string;
}

export interface ResponsesUsageScript {
  cachedTokens?: number;
  reasoningTokens?: number;
  omitUsage?: boolean;
}

export interface ResponsesState {
  calls: ResponsesCall[];
  usage: ResponsesUsageScript;
  seq: number;
}

function partText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((p) => (p && typeof p === 'object' && typeof (p as { text?: unknown }).text === 'string' ? (p as { text: string }).text : ''))
    .filter(Boolean)
    .join(' ');
}

type Item = { type?: unknown; role?: unknown; content?: unknown };

/** The input as messages (role, text); function-call items and outputs count as their JSON text. */
function inputMessages(input: unknown): Array<{ role: string; text: string }> {
  if (typeof input === 'string') return [{ role: 'user', text: input }];
  return (input as Item[]).map((i) =>
    i && (i.type === undefined || i.type === 'message') ? { role: String(i.role ?? 'user'), text: partText(i.content) } : { role: 'item', text: JSON.stringify(i) },
  );
}

export function countResponsesInputTokens(body: { instructions?: unknown; input?: unknown }): number {
  const instructions = typeof body.instructions === 'string' ? countWords(body.instructions) : 0;
  return instructions + inputMessages(body.input).reduce((n, m) => n + RESPONSES_MESSAGE_OVERHEAD + countWords(m.text), 0);
}

function error(res: http.ServerResponse, status: number, message: string, param: string | null = null): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', param, code: null } }));
}

export function handleResponses(res: http.ServerResponse, raw: string, state: ResponsesState): void {
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    return error(res, 400, 'We could not parse the JSON body of your request.');
  }
  if (!body || typeof body !== 'object') return error(res, 400, 'We could not parse the JSON body of your request.');
  if (typeof body.model !== 'string' || !body.model) return error(res, 400, "Missing required parameter: 'model'.", 'model');
  if (typeof body.input !== 'string' && !Array.isArray(body.input)) return error(res, 400, "Missing required parameter: 'input'.", 'input');
  const max = body.max_output_tokens;
  if (max != null && (!Number.isSafeInteger(max) || (max as number) < 16)) {
    return error(res, 400, `Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got ${String(max)} instead.`, 'max_output_tokens');
  }
  const messages = inputMessages(body.input);
  const lastUser = [...messages].reverse().find((m) => m.role === 'user');
  const words = ['echo:', ...(lastUser?.text ?? '').split(/\s+/).filter(Boolean)].slice(0, typeof max === 'number' ? max : undefined);
  const reply = words.join(' ');
  const input = countResponsesInputTokens(body);
  const reasoning = Math.max(0, state.usage.reasoningTokens ?? 0);
  const output = words.length + reasoning;
  const usage: ResponsesUsage | null = state.usage.omitUsage
    ? null
    : {
        input_tokens: input,
        input_tokens_details: { cached_tokens: Math.min(input, Math.max(0, state.usage.cachedTokens ?? 0)) },
        output_tokens: output,
        output_tokens_details: { reasoning_tokens: reasoning },
        total_tokens: input + output,
      };
  const stream = body.stream === true;
  state.calls.push({ stream, model: body.model, body, usage, reply });

  const n = ++state.seq;
  const msgId = `msg_${n}`;
  const text = { type: 'output_text', text: reply, annotations: [] as unknown[] };
  const message = { id: msgId, type: 'message', status: 'completed', role: 'assistant', content: [text] };
  const reasoningItem = reasoning ? [{ id: `rs_${n}`, type: 'reasoning', summary: [] as unknown[] }] : [];
  const response = (status: 'in_progress' | 'completed', output: unknown[], u: ResponsesUsage | null) => ({
    id: `resp_${n}`,
    object: 'response',
    created_at: Math.floor(Date.now() / 1000),
    status,
    error: null,
    incomplete_details: null,
    instructions: body.instructions ?? null,
    max_output_tokens: max ?? null,
    model: body.model,
    output,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: true,
    temperature: 1,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: [],
    top_p: 1,
    truncation: 'disabled',
    usage: u,
    user: null,
    metadata: {},
  });
  if (!stream) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(response('completed', [...reasoningItem, message], usage)));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  let sequence = 0;
  const send = (type: string, data: Record<string, unknown>) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data, sequence_number: sequence++ })}\n\n`);
  send('response.created', { response: response('in_progress', [], null) });
  send('response.in_progress', { response: response('in_progress', [], null) });
  const index = reasoningItem.length;
  if (reasoning) {
    send('response.output_item.added', { output_index: 0, item: reasoningItem[0] });
    send('response.output_item.done', { output_index: 0, item: reasoningItem[0] });
  }
  send('response.output_item.added', { output_index: index, item: { id: msgId, type: 'message', status: 'in_progress', role: 'assistant', content: [] } });
  send('response.content_part.added', { item_id: msgId, output_index: index, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } });
  for (const [i, w] of words.entries()) {
    send('response.output_text.delta', { item_id: msgId, output_index: index, content_index: 0, delta: i === 0 ? w : ` ${w}`, logprobs: [] });
  }
  send('response.output_text.done', { item_id: msgId, output_index: index, content_index: 0, text: reply, logprobs: [] });
  send('response.content_part.done', { item_id: msgId, output_index: index, content_index: 0, part: text });
  send('response.output_item.done', { output_index: index, item: message });
  send('response.completed', { response: response('completed', [...reasoningItem, message], usage) });
  res.end();
}
