/**
 * A deterministic Anthropic Messages API server on loopback, for tests: the
 * part of `POST /v1/messages` that @langchain/anthropic's ChatAnthropic uses,
 * streaming (server-sent events, in the documented order) and not.
 *
 * It refuses what the real API refuses for the requests tests could get wrong:
 * no or wrong `x-api-key` (401 authentication_error), no `anthropic-version`
 * header, a missing `model`, a `max_tokens` that is not a positive integer, and
 * `messages` that are not a non-empty list of user/assistant turns (400
 * invalid_request_error).
 *
 * TOKEN-COUNT RULE: words(s) = whitespace-separated pieces of s.
 *  - input_tokens  = words(system) + Σ over messages of (MESSAGE_OVERHEAD + words(its text));
 *  - output_tokens = words(reply); the reply is `echo: <last user text>`, cut to max_tokens words.
 * Streamed, as the real API does: `message_start` carries the input tokens and
 * `output_tokens: 1`; the final `message_delta` carries the cumulative usage
 * (input and cache counts repeated, output tokens final).
 *
 * PROMPT CACHE (`setCache`): of the input tokens counted above, `read` are
 * reported as read from the cache and `write` as written to it (each cut to
 * what is left). As the real API does, `input_tokens` then counts only the rest,
 * and the cache counts are `cache_read_input_tokens` / `cache_creation_input_tokens`
 * (in `message_start`, `message_delta` and the non-streamed answer).
 */
import * as http from 'node:http';
import { listenOnLoopback } from './loopback';

export const ANTHROPIC_KEY = 'sk-ant-test';
export const MESSAGE_OVERHEAD = 3;

export interface AnthropicUsage {
  /** Input tokens neither read from nor written to the cache (the API's meaning). */
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
  cache_creation_input_tokens: number;
}

export interface AnthropicCall {
  stream: boolean;
  model: string;
  usage: AnthropicUsage;
  reply: string;
}

export interface AnthropicServer {
  readonly baseURL: string;
  readonly calls: AnthropicCall[];
  /** The next streamed answer is cut (the connection destroyed) after this many text deltas. */
  cutNextStreamAfter(deltas: number): void;
  /** Report this many of every call's input tokens as cache reads / cache writes (null: no cache; reset clears it). */
  setCache(cache: { read?: number; write?: number } | null): void;
  reset(): void;
  close(): Promise<void>;
}

const words = (s: string): string[] => s.split(/\s+/).filter(Boolean);

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (b && typeof b === 'object' && (b as { type?: unknown }).type === 'text' ? String((b as { text?: unknown }).text ?? '') : '')).join(' ');
}

type Body = { model?: unknown; max_tokens?: unknown; messages?: unknown; system?: unknown; stream?: unknown };

/** The real API's refusal for a request, or null when it would answer. */
function refusal(req: http.IncomingMessage, body: Body | null): { status: number; type: string; message: string } | null {
  if (req.headers['x-api-key'] !== ANTHROPIC_KEY) return { status: 401, type: 'authentication_error', message: 'invalid x-api-key' };
  if (!req.headers['anthropic-version']) return { status: 400, type: 'invalid_request_error', message: 'anthropic-version: header is required' };
  if (!body) return { status: 400, type: 'invalid_request_error', message: 'the request body is not valid JSON' };
  if (typeof body.model !== 'string' || !body.model) return { status: 400, type: 'invalid_request_error', message: 'model: Field required' };
  if (!Number.isSafeInteger(body.max_tokens) || (body.max_tokens as number) < 1) return { status: 400, type: 'invalid_request_error', message: 'max_tokens: Field required' };
  const msgs = body.messages;
  if (!Array.isArray(msgs) || msgs.length === 0) return { status: 400, type: 'invalid_request_error', message: 'messages: at least one message is required' };
  for (const m of msgs) {
    const role = (m as { role?: unknown })?.role;
    if (role !== 'user' && role !== 'assistant') return { status: 400, type: 'invalid_request_error', message: `messages: Unexpected role "${String(role)}"` };
  }
  return null;
}

export async function startAnthropicServer(): Promise<AnthropicServer> {
  const calls: AnthropicCall[] = [];
  let n = 0;
  let cutAfter: number | null = null;
  let cache: { read?: number; write?: number } | null = null;
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      let body: Body | null = null;
      try {
        body = JSON.parse(raw) as Body;
      } catch {
        body = null;
      }
      const bad = req.method === 'POST' && req.url === '/v1/messages' ? refusal(req, body) : { status: 404, type: 'not_found_error', message: 'Not found' };
      if (bad) {
        res.writeHead(bad.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ type: 'error', error: { type: bad.type, message: bad.message } }));
        return;
      }
      const b = body!;
      const msgs = b.messages as Array<{ role: string; content: unknown }>;
      const system = typeof b.system === 'string' ? b.system : textOf(b.system);
      const prompt = words(system).length + msgs.reduce((s, m) => s + MESSAGE_OVERHEAD + words(textOf(m.content)).length, 0);
      const read = Math.min(cache?.read ?? 0, prompt);
      const written = Math.min(cache?.write ?? 0, prompt - read);
      const input = prompt - read - written;
      const lastUser = [...msgs].reverse().find((m) => m.role === 'user');
      const replyWords = ['echo:', ...words(textOf(lastUser?.content))].slice(0, b.max_tokens as number);
      const reply = replyWords.join(' ');
      const id = `msg_${++n}`;
      const cacheUsage = { cache_creation_input_tokens: written, cache_read_input_tokens: read };
      const usage: AnthropicUsage = { input_tokens: input, output_tokens: replyWords.length, ...cacheUsage };
      const stream = b.stream === true;
      calls.push({ stream, model: b.model as string, usage, reply });
      const message = { id, type: 'message', role: 'assistant', model: b.model, stop_sequence: null };
      if (!stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ...message, content: [{ type: 'text', text: reply }], stop_reason: 'end_turn', usage }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      send('message_start', { type: 'message_start', message: { ...message, content: [], stop_reason: null, usage: { input_tokens: input, output_tokens: 1, ...cacheUsage } } });
      send('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
      send('ping', { type: 'ping' });
      const cut = cutAfter;
      cutAfter = null;
      for (const [i, w] of replyWords.entries()) {
        if (cut !== null && i === cut) {
          // After the client has read what was sent: a connection lost midway, not a refused request.
          setTimeout(() => res.socket?.destroy(), 50);
          return;
        }
        send('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: i === 0 ? w : ` ${w}` } });
      }
      send('content_block_stop', { type: 'content_block_stop', index: 0 });
      send('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { input_tokens: input, output_tokens: replyWords.length, ...cacheUsage } });
      send('message_stop', { type: 'message_stop' });
      res.end();
    });
  });
  const lb = await listenOnLoopback(server);
  return {
    baseURL: lb.origin,
    calls,
    cutNextStreamAfter: (deltas: number) => void (cutAfter = deltas),
    setCache: (c) => void (cache = c),
    reset: () => {
      calls.length = 0;
      cutAfter = null;
      cache = null;
    },
    close: () => lb.close(),
  };
}
