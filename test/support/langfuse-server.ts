/**
 * A Langfuse-compatible ingestion server on loopback, for tests (node `http` only).
 *
 * Matches what the Langfuse JS SDK v3 (langfuse / langfuse-core / langfuse-langchain
 * 3.x) sends:
 *  - `POST /api/public/ingestion`, `Authorization: Basic base64(publicKey:secretKey)`,
 *    body `{ batch: [{ id, type, timestamp, body, metadata? }], metadata: { batch_size,
 *    sdk_integration, sdk_version, sdk_variant, public_key, sdk_name } }`.
 *    Answered with 207 `{ successes: [{ id, status: 201 }], errors: [{ id, status, message }] }`
 *    like Langfuse (the SDK treats 207 with non-empty `errors` as a failure and retries).
 *    Wrong/missing credentials → 401 `{ message }`.
 *  - Event types the v3 SDK emits: trace-create, span-create, span-update,
 *    generation-create, generation-update, event-create, score-create. Also accepted:
 *    observation-create/-update (legacy), sdk-log, and the newer observation types
 *    (agent-, tool-, chain-, retriever-, evaluator-, embedding-, guardrail- -create/-update).
 *  - Nothing is called at SDK or CallbackHandler construction; the SDK only
 *    POSTs ingestion batches (every `flushAt` events or `flushInterval` ms, and on
 *    flushAsync/shutdownAsync) plus `POST /api/public/media` when an input/output
 *    contains a base64 data URI. We also answer `GET /api/public/health`,
 *    `/api/public/ready`, `/api/public/projects`, read-back of traces/observations,
 *    `POST /api/public/scores` and prompts (404) so other clients (e.g. Flowise) are happy.
 *
 * SDK delivery facts that matter for tests: requests time out after `requestTimeout`
 * (default 5000 ms); failures (network, HTTP ≥ 400, 207 with errors) are retried
 * `fetchRetryCount` (default 3) times, `fetchRetryDelay` (default 3000 ms) apart; then the
 * batch is dropped with a console.error. `flushAsync()` sends at most `flushAt` queued
 * events and does NOT wait for requests started by earlier automatic flushes;
 * `shutdownAsync()` does. Retries resend the same envelope ids, which this server
 * de-duplicates in `events()` / `traces()` (raw `batches` keep every copy).
 *
 * ─── Where LangChain run metadata lands (langfuse-langchain 3.39, read from its source
 *     and checked by test/support-servers.test.ts) ────────────────────────────────────
 * `RunnableConfig.metadata` (inherited by every child run) and a run's own metadata
 * reach Langfuse like this, for a handler created WITHOUT `root`:
 *  • TRACE (id = the ROOT run's runId; created when the root run starts):
 *      trace.metadata = { tags?: <root run tags>, ...<root run metadata>, ...<handler ctor `metadata`> }
 *      minus the keys langfusePrompt / langfuseUserId / langfuseSessionId.
 *      Only the ROOT run's metadata is used, and only at its start. For a chat model
 *      root this includes LangChain's own ls_provider, ls_model_name, ls_model_type,
 *      ls_temperature, ls_max_tokens… Metadata added on nested runs (withConfig on an
 *      inner step) never reaches the trace. trace.name = root run name; trace.input =
 *      root input; trace.sessionId/userId/tags initially from the handler constructor
 *      (`sessionId`, `userId`, `tags`; Flowise sets sessionId = chatId).
 *      When the root run ends the handler re-sends trace-create {id, output} and, ONLY if
 *      the root run is a chain/runnable (not a bare chat model), also
 *      { tags: <root run tags>, userId: metadata.langfuseUserId, sessionId:
 *      metadata.langfuseSessionId } (string values only; undefined keys are dropped
 *      by JSON, so they do not clear the constructor's values).
 *  • OBSERVATIONS (span for chains/tools/retrievers, generation for LLM/chat model runs;
 *      id = that run's runId, parentObservationId = parent runId):
 *      observation.metadata = { tags?: <run tags>, ...<run metadata> } minus the three
 *      langfuse* keys — i.e. every RunnableConfig.metadata key (inherited) plus the run's
 *      own keys (ls_* for models). The handler constructor `metadata` does NOT go on
 *      observations. Generations also get model (invocation_params.model, later
 *      response_metadata.model_name), modelParameters (temperature, max_tokens, top_p,
 *      frequency/presence_penalty, request_timeout), and at the end
 *      usage = usageDetails = { input, output, total, input_<detail>, output_<detail> }
 *      from AIMessage.usage_metadata (input/output reduced by the detail counts, e.g.
 *      input_cache_read) or else llmOutput.tokenUsage. The handler never sends
 *      costDetails — cost has to be added by someone else (e.g. our billing code via
 *      generation-update / the Langfuse client with the same observation id).
 *  • With `root` (a trace/span client) given, the handler creates NO trace; run
 *      metadata then only lands on observations (unless updateRoot: true).
 *  • `tags` in metadata are the run's LangChain tags: config tags (inherited by all
 *      children) plus internal ones such as 'seq:step:2' on sequence steps.
 *  • Observed with ChatOpenAI(temperature 0.2, maxTokens 50): ls_provider 'openai',
 *      ls_model_name, ls_model_type 'chat', ls_temperature 0.2, ls_max_tokens 50
 *      (ls_stop when stop is set) on the generation, and on the trace iff the model is
 *      the root run.
 *  • The handler keeps ONE current traceId: a new root run on the same handler
 *      starts a new trace; concurrent root runs on one handler instance get mixed up.
 */
import * as http from 'node:http';
import { listenOnLoopback } from './loopback';
import { randomUUID } from 'node:crypto';

/** `echo500`: a 500 whose body reflects the request's headers, as some gateways and debugging proxies answer. */
export type LangfuseMode = 'ok' | 'error500' | 'echo500' | 'slow' | 'down';

export interface LangfuseServerOptions {
  port?: number;
  publicKey?: string;
  secretKey?: string;
  mode?: LangfuseMode;
  /** Response delay in 'slow' mode (default 7000 ms, above the SDK's 5 s request timeout). */
  slowMs?: number;
}

export interface IngestionEvent {
  id: string;
  type: string;
  timestamp: string;
  body: any;
  metadata?: unknown;
}

export interface RequestLogEntry {
  method: string;
  path: string;
  status: number | 'dropped';
  at: number;
  headers: http.IncomingHttpHeaders;
}

export interface MergedTrace {
  id: string;
  name?: string;
  timestamp?: string;
  userId?: string;
  sessionId?: string;
  release?: string;
  version?: string;
  environment?: string;
  input?: unknown;
  output?: unknown;
  metadata: Record<string, unknown>;
  tags: string[];
  public?: boolean;
  /** true when only observations referenced it (no trace-create seen). */
  implicit?: boolean;
  [key: string]: unknown;
}

export interface MergedObservation {
  id: string;
  /** SPAN | GENERATION | EVENT | AGENT | TOOL | … (upper-case, like Langfuse). */
  type: string;
  traceId?: string;
  parentObservationId?: string;
  name?: string;
  startTime?: string;
  endTime?: string;
  completionStartTime?: string;
  model?: string;
  modelParameters?: Record<string, unknown>;
  input?: unknown;
  output?: unknown;
  metadata: Record<string, unknown>;
  level?: string;
  statusMessage?: string;
  version?: string;
  /** As last sent by the SDK (legacy field). */
  usage?: Record<string, unknown>;
  /** usageDetails as sent, else normalised from `usage` ({input, output, total, …}). */
  usageDetails?: Record<string, number>;
  costDetails?: Record<string, number>;
  promptName?: string;
  promptVersion?: number;
  /** Envelope types seen for this id, in merge order (e.g. ['generation-create','generation-update']). */
  eventTypes: string[];
  [key: string]: unknown;
}

export interface TraceView {
  trace: MergedTrace;
  /** Sorted by startTime, then merge order. */
  observations: MergedObservation[];
  scores: any[];
}

export interface LangfuseServer {
  port: number;
  /** e.g. `http://127.0.0.1:PORT` — the SDK's `baseUrl` / Flowise `langFuseEndpoint`. */
  baseUrl: string;
  publicKey: string;
  secretKey: string;
  /** Every accepted ingestion request body, raw, in arrival order (includes retried duplicates). */
  batches: any[];
  /** Every request seen (including rejected / failed ones). */
  requests: RequestLogEntry[];
  /** All accepted events, de-duplicated by envelope id, in arrival order. */
  events(): IngestionEvent[];
  eventsOfType(type: string): IngestionEvent[];
  /** Final traces keyed by trace id, create/update events merged (see `mergeEvents`). */
  traces(): Map<string, TraceView>;
  /** Final observations keyed by observation id. */
  observations(): Map<string, MergedObservation>;
  setMode(mode: LangfuseMode): void;
  mode(): LangfuseMode;
  /** Polls until `predicate()` is truthy (default timeout 10 s); returns its value. */
  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs?: number): Promise<T>;
  reset(): void;
  close(): Promise<void>;
}

const OBSERVATION_KINDS = new Set([
  'span',
  'generation',
  'event',
  'agent',
  'tool',
  'chain',
  'retriever',
  'evaluator',
  'embedding',
  'guardrail',
]);

/** Accepted envelope types. */
export function isKnownEventType(type: string): boolean {
  if (type === 'trace-create' || type === 'score-create' || type === 'sdk-log') return true;
  if (type === 'observation-create' || type === 'observation-update') return true;
  const m = /^([a-z]+)-(create|update)$/.exec(type);
  return !!m && OBSERVATION_KINDS.has(m[1]!) && !(m[1] === 'event' && m[2] === 'update');
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Normalises the SDK's `usage` ({input,output,total,unit} or {promptTokens,…}) into usageDetails. */
export function usageToDetails(usage: unknown): Record<string, number> | undefined {
  if (!isPlainObject(usage)) return undefined;
  const out: Record<string, number> = {};
  const pick = (k: string, ...names: string[]) => {
    for (const n of names) {
      const v = usage[n];
      if (typeof v === 'number') {
        out[k] = v;
        return;
      }
    }
  };
  pick('input', 'input', 'promptTokens');
  pick('output', 'output', 'completionTokens');
  pick('total', 'total', 'totalTokens');
  for (const [k, v] of Object.entries(usage)) {
    if (typeof v === 'number' && !['input', 'output', 'total', 'promptTokens', 'completionTokens', 'totalTokens'].includes(k)) {
      out[k] = v;
    }
  }
  return Object.keys(out).length ? out : undefined;
}

function numericRecord(v: unknown): Record<string, number> | undefined {
  if (!isPlainObject(v)) return undefined;
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v)) if (typeof x === 'number') out[k] = x;
  return out;
}

/**
 * Merges create/update events into final traces, observations and scores, the
 * way Langfuse does it closely enough for tests:
 *  - de-duplicated by envelope id; all *-create events (incl. trace-create, which the
 *    SDK also uses as "update trace") are applied before all *-update events; within
 *    each group by time (trace-create: body.timestamp; others: envelope timestamp),
 *    then arrival order. Arrival order alone is unreliable: with flushAt 1 every event
 *    is its own concurrent request, and a generation-update can arrive before its
 *    generation-create;
 *  - a later event's defined fields override earlier ones; `metadata` objects are
 *    merged key by key (later wins); trace `tags` are unioned;
 *  - an observation's type comes from its create event (span/generation/…, or
 *    body.type for observation-create); an update seen without a create keeps the
 *    kind named by its own type;
 *  - a trace referenced only by observations/scores appears with `implicit: true`.
 */
export function mergeEvents(events: IngestionEvent[]): {
  traces: Map<string, TraceView>;
  observations: Map<string, MergedObservation>;
} {
  const seen = new Set<string>();
  const unique: Array<{ e: IngestionEvent; i: number }> = [];
  events.forEach((e, i) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    unique.push({ e, i });
  });
  // Delivery order is not event order (see the doc comment above), so sort first.
  const rank = (t: string) => (t.endsWith('-update') ? 1 : 0);
  const time = (e: IngestionEvent) => {
    const b = isPlainObject(e.body) ? e.body : {};
    // trace-create bodies carry the time of the SDK call; envelope timestamps are taken
    // later, after async media processing, so they can be out of order.
    const t = e.type === 'trace-create' && typeof b.timestamp === 'string' ? Date.parse(b.timestamp) : NaN;
    return Number.isNaN(t) ? Date.parse(e.timestamp) || 0 : t;
  };
  unique.sort((a, b) => rank(a.e.type) - rank(b.e.type) || time(a.e) - time(b.e) || a.i - b.i);

  const traces = new Map<string, MergedTrace>();
  const observations = new Map<string, MergedObservation>();
  const order = new Map<string, number>();
  const scores: any[] = [];

  const applyFields = (target: Record<string, unknown>, body: Record<string, unknown>, skip: string[]) => {
    for (const [k, v] of Object.entries(body)) {
      if (v === undefined || v === null || skip.includes(k)) continue;
      target[k] = v;
    }
    if (isPlainObject(body.metadata)) {
      target.metadata = { ...(target.metadata as Record<string, unknown>), ...body.metadata };
    }
  };

  for (const { e } of unique) {
    const body = isPlainObject(e.body) ? e.body : {};
    if (e.type === 'trace-create') {
      const id = String(body.id ?? '');
      if (!id) continue;
      const t = traces.get(id) ?? { id, metadata: {}, tags: [] };
      delete t.implicit;
      applyFields(t, body, ['metadata', 'tags']);
      if (Array.isArray(body.tags)) for (const tag of body.tags) if (!t.tags.includes(String(tag))) t.tags.push(String(tag));
      traces.set(id, t);
    } else if (e.type === 'score-create') {
      scores.push(body);
    } else if (e.type === 'sdk-log') {
      continue;
    } else {
      const m = /^([a-z]+)-(create|update)$/.exec(e.type);
      if (!m) continue;
      const id = String(body.id ?? '');
      if (!id) continue;
      let o = observations.get(id);
      const kind =
        m[1] === 'observation' ? String(body.type ?? 'SPAN').toUpperCase() : m[1]!.toUpperCase();
      if (!o) {
        o = { id, type: kind, metadata: {}, eventTypes: [] };
        observations.set(id, o);
        order.set(id, order.size);
      } else if (m[2] === 'create' && o.eventTypes.every((t) => t.endsWith('-update'))) {
        o.type = kind;
      }
      o.eventTypes.push(e.type);
      applyFields(o, body, ['metadata', 'type', 'usage', 'usageDetails', 'costDetails']);
      if (isPlainObject(body.usage)) {
        o.usage = body.usage;
        if (!isPlainObject(body.usageDetails)) o.usageDetails = usageToDetails(body.usage);
      }
      if (isPlainObject(body.usageDetails)) o.usageDetails = numericRecord(body.usageDetails);
      if (isPlainObject(body.costDetails)) o.costDetails = numericRecord(body.costDetails);
    }
  }

  const views = new Map<string, TraceView>();
  const view = (traceId: string): TraceView => {
    let v = views.get(traceId);
    if (!v) {
      const trace = traces.get(traceId) ?? { id: traceId, metadata: {}, tags: [], implicit: true };
      v = { trace, observations: [], scores: [] };
      views.set(traceId, v);
    }
    return v;
  };
  for (const id of traces.keys()) view(id);
  for (const o of observations.values()) if (o.traceId) view(o.traceId).observations.push(o);
  for (const s of scores) if (typeof s.traceId === 'string') view(s.traceId).scores.push(s);
  for (const v of views.values()) {
    v.observations.sort(
      (a, b) =>
        (Date.parse(a.startTime ?? '') || 0) - (Date.parse(b.startTime ?? '') || 0) ||
        (order.get(a.id) ?? 0) - (order.get(b.id) ?? 0),
    );
  }
  return { traces: views, observations };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

/** Shape of GET /api/public/traces/:id (trimmed to what tests need). */
function traceToApi(v: TraceView): Record<string, unknown> {
  return {
    ...v.trace,
    observations: v.observations.map((o) => ({ ...o, usageDetails: o.usageDetails ?? {}, costDetails: o.costDetails ?? {} })),
    scores: v.scores,
  };
}

export async function startLangfuseServer(opts: LangfuseServerOptions = {}): Promise<LangfuseServer> {
  const publicKey = opts.publicKey ?? 'pk-lf-test';
  const secretKey = opts.secretKey ?? 'sk-lf-test';
  const slowMs = opts.slowMs ?? 7000;
  let mode: LangfuseMode = opts.mode ?? 'ok';
  const batches: any[] = [];
  const requests: RequestLogEntry[] = [];
  let accepted: IngestionEvent[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let closing = false;
  const expectedBasic = 'Basic ' + Buffer.from(`${publicKey}:${secretKey}`).toString('base64');

  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  const authorized = (req: http.IncomingMessage) => req.headers.authorization === expectedBasic;

  function ingest(raw: string): { status: number; body: unknown } {
    let parsed: any;
    try {
      parsed = JSON.parse(raw);
    } catch {
      return { status: 400, body: { message: 'Invalid JSON body' } };
    }
    if (!isPlainObject(parsed) || !Array.isArray(parsed.batch)) {
      return { status: 400, body: { message: 'Invalid request data', error: 'batch must be an array' } };
    }
    batches.push(parsed);
    const successes: Array<{ id: string; status: number }> = [];
    const errors: Array<{ id: string; status: number; message: string; error?: string }> = [];
    for (const ev of parsed.batch as unknown[]) {
      const id = isPlainObject(ev) && typeof ev.id === 'string' ? ev.id : '';
      if (!isPlainObject(ev) || !id || typeof ev.type !== 'string' || !isPlainObject(ev.body)) {
        errors.push({ id, status: 400, message: 'Invalid request data', error: 'event needs id, type, timestamp and body' });
        continue;
      }
      if (!isKnownEventType(ev.type)) {
        errors.push({ id, status: 400, message: 'Invalid request data', error: `unknown event type ${ev.type}` });
        continue;
      }
      if (ev.type.endsWith('-update') && typeof ev.body.id !== 'string') {
        errors.push({ id, status: 400, message: 'Invalid request data', error: 'update events need body.id' });
        continue;
      }
      accepted.push({
        id,
        type: ev.type,
        timestamp: typeof ev.timestamp === 'string' ? ev.timestamp : new Date().toISOString(),
        body: ev.body,
        metadata: ev.metadata,
      });
      successes.push({ id, status: 201 });
    }
    return { status: 207, body: { successes, errors } };
  }

  function dedup(): IngestionEvent[] {
    const seen = new Set<string>();
    return accepted.filter((e) => (seen.has(e.id) ? false : (seen.add(e.id), true)));
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const raw = await readBody(req);
    const log: RequestLogEntry = { method: req.method ?? '', path, status: 0, at: Date.now(), headers: req.headers };
    requests.push(log);
    const reply = (status: number, body: unknown) => {
      log.status = status;
      if (!res.destroyed) sendJson(res, status, body);
    };

    if (mode === 'error500') return reply(500, { message: 'Internal Server Error', error: 'test server in error500 mode' });
    if (mode === 'echo500') return reply(500, { message: 'Bad gateway', request: { method: req.method, url: req.url, headers: req.headers } });

    const delay = mode === 'slow' ? slowMs : 0;
    const respond = async (status: number, body: unknown) => {
      if (delay) await wait(delay);
      if (closing) return;
      reply(status, body);
    };

    if (req.method === 'GET' && (path === '/api/public/health' || path === '/api/public/ready')) {
      return respond(200, { status: 'OK', version: '3.0.0-test' });
    }
    if (!path.startsWith('/api/public/')) return respond(404, { message: 'Not Found' });
    if (!authorized(req)) {
      return respond(401, {
        message: 'Invalid credentials. Confirm that you have used the correct host, public key and secret key.',
        error: 'Unauthorized',
      });
    }

    if (req.method === 'POST' && path === '/api/public/ingestion') {
      // Recorded on arrival, like a real server that queues before answering; in
      // 'slow' mode the SDK may time out and resend the same envelopes.
      const r = ingest(raw);
      return respond(r.status, r.body);
    }
    if (req.method === 'GET' && path === '/api/public/projects') {
      return respond(200, { data: [{ id: 'test-project', name: 'test-project', metadata: {} }] });
    }
    if (req.method === 'POST' && path === '/api/public/scores') {
      let body: any = {};
      try {
        body = JSON.parse(raw);
      } catch {
        return respond(400, { message: 'Invalid JSON body' });
      }
      const id = typeof body.id === 'string' ? body.id : randomUUID();
      accepted.push({ id: randomUUID(), type: 'score-create', timestamp: new Date().toISOString(), body: { ...body, id } });
      return respond(200, { id });
    }
    if (req.method === 'POST' && path === '/api/public/media') {
      // No upload URL = "already uploaded"; the SDK then just references the media id.
      return respond(200, { mediaId: randomUUID(), uploadUrl: null });
    }
    if (req.method === 'PATCH' && path.startsWith('/api/public/media/')) return respond(204, {});
    const merged = () => mergeEvents(dedup());
    let m = /^\/api\/public\/traces\/([^/]+)$/.exec(path);
    if (req.method === 'GET' && m) {
      const v = merged().traces.get(decodeURIComponent(m[1]!));
      return v ? respond(200, traceToApi(v)) : respond(404, { message: 'Trace not found', error: 'LangfuseNotFoundError' });
    }
    if (req.method === 'GET' && path === '/api/public/traces') {
      const data = [...merged().traces.values()].map(traceToApi);
      return respond(200, { data, meta: { page: 1, limit: data.length, totalItems: data.length, totalPages: 1 } });
    }
    m = /^\/api\/public\/observations\/([^/]+)$/.exec(path);
    if (req.method === 'GET' && m) {
      const o = merged().observations.get(decodeURIComponent(m[1]!));
      return o ? respond(200, o) : respond(404, { message: 'Observation not found', error: 'LangfuseNotFoundError' });
    }
    if (req.method === 'GET' && path === '/api/public/observations') {
      const data = [...merged().observations.values()];
      return respond(200, { data, meta: { page: 1, limit: data.length, totalItems: data.length, totalPages: 1 } });
    }
    if (req.method === 'GET' && path.startsWith('/api/public/v2/prompts/')) {
      return respond(404, { message: 'Prompt not found', error: 'LangfuseNotFoundError' });
    }
    return respond(404, { message: `Not Found: ${req.method} ${path}`, error: 'NotFound' });
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { message: String(e) });
      else res.destroy();
    });
  });
  const loop = await listenOnLoopback(server, {
    port: opts.port,
    accept(s) {
      if (mode !== 'down') return true;
      // Simulates an unreachable Langfuse: the connection is reset before any response.
      requests.push({ method: '', path: '', status: 'dropped', at: Date.now(), headers: {} });
      s.destroy();
      return false;
    },
  });
  const port = loop.port;

  return {
    port,
    baseUrl: loop.origin,
    publicKey,
    secretKey,
    batches,
    requests,
    events: dedup,
    eventsOfType: (type) => dedup().filter((e) => e.type === type),
    traces: () => mergeEvents(dedup()).traces,
    observations: () => mergeEvents(dedup()).observations,
    setMode(m) {
      mode = m;
      if (m === 'down') loop.dropConnections();
    },
    mode: () => mode,
    async waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 10_000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = predicate();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`langfuse-server waitFor timed out after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    reset() {
      batches.length = 0;
      requests.length = 0;
      accepted = [];
    },
    async close() {
      closing = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await loop.close();
    },
  };
}
