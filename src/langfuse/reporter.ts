import { inspect } from 'node:util';
import type { Langfuse as LangfuseClient } from 'langfuse';
import { z } from 'zod';
import { ValidationError } from '../errors';
import { formatUsd, type Nanos } from '../money';
import type { TokenQuote } from '../pricing/price';

/**
 * Reports settled charges into Langfuse traces with the real `langfuse` SDK.
 *
 * Billing never depends on the observer (DESIGN invariant 5):
 *  - the ledger write happens first; `report()` is called only with a charge the
 *    ledger already holds, and does nothing but push onto an in-memory queue
 *    (bounded: past `maxQueue` the oldest reports are dropped and counted);
 *  - the queue is handed to the SDK on a later turn of the event loop, and the
 *    SDK posts batches in the background (its timers are unref'd);
 *  - `flush(timeoutMs)` / `shutdown(timeoutMs)` never wait longer than the timeout,
 *    whether Langfuse is down, slow or answering 500, and resolve true only when
 *    every report made since the previous flush has reached Langfuse.
 * Reports carry deterministic observation ids derived from the ledger charge id,
 * so a repeated report upserts the same observation instead of adding cost twice.
 * The ledger stays the source of truth: each charge's metadata keeps the trace
 * and observation ids, so a reconciler can re-send what Langfuse never received.
 */

export const langfuseCredentialsSchema = z
  .object({
    publicKey: z.string().min(1),
    secretKey: z.string().min(1),
    // The SDK posts to it with fetch: any other scheme only fails later, in the background, unseen.
    baseUrl: z
      .string()
      .url()
      .refine((u) => /^https?:$/.test(new URL(u).protocol), 'baseUrl must be an http:// or https:// URL'),
    /** Events per ingestion request (default 20). */
    flushAt: z.number().int().positive().max(1000).optional(),
    /** Background flush interval (default 1000 ms). */
    flushIntervalMs: z.number().int().positive().max(600_000).optional(),
    /** Per-request timeout of the SDK (default 3000 ms). */
    requestTimeoutMs: z.number().int().positive().max(60_000).optional(),
    /** SDK retries per batch (default 2). */
    fetchRetryCount: z.number().int().min(0).max(10).optional(),
    /** Reports kept while waiting for the SDK (default 10,000). */
    maxQueue: z.number().int().positive().max(1_000_000).optional(),
  })
  .strict();
export type LangfuseCredentials = z.input<typeof langfuseCredentialsSchema>;

/**
 * The credentials as console.log / util.inspect / JSON.stringify show them: without the secret key. What a
 * handler keeps (its public `options.langfuse`) is sealed so: logging `handler.options` printed the key.
 * The key stays readable (and a spread copy keeps it, unsealed).
 */
export function sealLangfuseCredentials<T extends { readonly secretKey: string }>(c: T): T {
  const shown = () => ({ ...c, secretKey: '[redacted]' });
  const out = { ...c };
  Object.defineProperty(out, inspect.custom, { value: shown, enumerable: false });
  Object.defineProperty(out, 'toJSON', { value: shown, enumerable: false });
  return out;
}

const nanosToUsdNumber = (n: Nanos): number => Number(formatUsd(n));

export interface ChargeReport {
  /**
   * The Langfuse trace: the root LangChain run id. Absent when the handler only
   * saw a nested run: the cost then updates the generation Langfuse's own
   * handler created for that run, in whatever trace it belongs to.
   */
  readonly traceId?: string;
  /** The observation that carries the cost (an LLM run id, or `billing-<chargeId>`). */
  readonly observationId: string;
  readonly parentObservationId?: string;
  readonly name: string;
  readonly model?: string;
  readonly startTime?: Date;
  readonly endTime?: Date;
  /**
   * What the ledger took; split when the charge priced tokens: `input` (uncached), `cacheRead`,
   * `cacheWrite`, `output`.
   */
  readonly cost: { readonly total: Nanos; readonly input?: Nanos; readonly cacheRead?: Nanos; readonly cacheWrite?: Nanos; readonly output?: Nanos };
  readonly metadata: Record<string, unknown>;
}

/** A token charge's cost by kind of token, as priced; cache parts only when the call had cached tokens. */
export function tokenCostSplit(q: TokenQuote): Pick<ChargeReport['cost'], 'input' | 'cacheRead' | 'cacheWrite' | 'output'> {
  return {
    input: q.inputAmount,
    ...(q.cacheReadTokens ? { cacheRead: q.cacheReadAmount } : {}),
    ...(q.cacheWriteTokens ? { cacheWrite: q.cacheWriteAmount } : {}),
    output: q.outputAmount,
  };
}

export interface TraceMetadataReport {
  readonly traceId: string;
  readonly timestamp?: Date;
  readonly metadata: Record<string, unknown>;
}

type Item = { kind: 'charge'; r: ChargeReport } | { kind: 'trace'; r: TraceMetadataReport };

export class LangfuseCostReporter {
  private readonly client: LangfuseClient;
  private readonly maxQueue: number;
  private queue: Item[] = [];
  private scheduled = false;
  /** Reports dropped because the queue was full. */
  dropped = 0;
  /** Reports handed to the SDK. */
  sent = 0;
  /** Ingestion requests that failed for good (after the SDK's retries) since the last flush. */
  private failedRequests = 0;

  constructor(credentials: LangfuseCredentials) {
    const parsed = langfuseCredentialsSchema.safeParse(credentials);
    if (!parsed.success) throw ValidationError.fromZod('Langfuse credentials', parsed.error);
    const c = parsed.data;
    this.maxQueue = c.maxQueue ?? 10_000;
    // Loaded lazily so the engine never pays for the SDK unless costs are reported.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Langfuse } = require('langfuse') as typeof import('langfuse');
    const sdk = Langfuse.prototype as unknown as Partial<SdkRequests>;
    const authorizeOutside = typeof sdk.constructAuthorizationHeader === 'function' && typeof sdk.fetch === 'function' && typeof sdk.flush === 'function';
    this.client = new Langfuse({
      publicKey: c.publicKey,
      // With the credentials added in fetch (below), the SDK client never holds the secret.
      secretKey: authorizeOutside ? SECRET_HELD_OUTSIDE : c.secretKey,
      baseUrl: c.baseUrl,
      flushAt: c.flushAt ?? 20,
      flushInterval: c.flushIntervalMs ?? 1000,
      requestTimeout: c.requestTimeoutMs ?? 3000,
      fetchRetryCount: c.fetchRetryCount ?? 2,
      fetchRetryDelay: 500,
      sdkIntegration: 'flowise-billing',
    });
    if (authorizeOutside) keepCredentialsOutOfSdk(this.client as unknown as SdkRequests, c);
    // The SDK's own 'error' events (bad event bodies, configuration) are logged by the SDK; a billing run never sees them.
    this.client.on('error', () => undefined);
    // A request that failed for good is announced as a 'warning' carrying the Error (other warnings are strings).
    this.client.on('warning', (e: unknown) => {
      if (e instanceof Error) this.failedRequests++;
    });
  }

  /** console.log / util.inspect: never the SDK client (it keeps the secret key). */
  [inspect.custom](): object {
    return { pending: this.pending, sent: this.sent, dropped: this.dropped };
  }

  /** Queues the cost of one settled ledger charge. Never throws, never waits. */
  reportCharge(r: ChargeReport): void {
    this.push({ kind: 'charge', r });
  }

  /** Queues metadata for a trace (merged into what other handlers wrote). */
  reportTraceMetadata(r: TraceMetadataReport): void {
    this.push({ kind: 'trace', r });
  }

  get pending(): number {
    return this.queue.length;
  }

  private push(item: Item): void {
    if (this.queue.length >= this.maxQueue) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    this.scheduled = false;
    const items = this.queue;
    this.queue = [];
    for (const item of items) {
      try {
        if (item.kind === 'charge') this.sendCharge(item.r);
        else this.client.trace({ id: item.r.traceId, timestamp: item.r.timestamp, metadata: item.r.metadata });
        this.sent++;
      } catch {
        // The SDK enqueues synchronously; a failure here is a bug in a report, never a reason to fail billing.
      }
    }
  }

  private sendCharge(r: ChargeReport): void {
    const costDetails: Record<string, number> = { total: nanosToUsdNumber(r.cost.total) };
    if (r.cost.input !== undefined) costDetails.input = nanosToUsdNumber(r.cost.input);
    // The keys langfuse-langchain gives the same tokens in usageDetails (input_<LangChain input_token_details key>).
    if (r.cost.cacheRead !== undefined) costDetails.input_cache_read = nanosToUsdNumber(r.cost.cacheRead);
    if (r.cost.cacheWrite !== undefined) costDetails.input_cache_creation = nanosToUsdNumber(r.cost.cacheWrite);
    if (r.cost.output !== undefined) costDetails.output = nanosToUsdNumber(r.cost.output);
    if (r.traceId === undefined) {
      // generation-update upserts by observation id; unlike generation() it creates no trace.
      (this.client as unknown as { updateGenerationStateless(b: Record<string, unknown>): string }).updateGenerationStateless({
        id: r.observationId,
        costDetails,
        metadata: r.metadata,
      });
      return;
    }
    this.client.generation({
      id: r.observationId,
      traceId: r.traceId,
      parentObservationId: r.parentObservationId,
      name: r.name,
      model: r.model,
      startTime: r.startTime,
      endTime: r.endTime,
      costDetails,
      metadata: r.metadata,
    });
  }

  /**
   * Hands queued reports to the SDK and waits for their delivery, at most `timeoutMs`. Resolves true when
   * every report since the previous flush reached Langfuse in time; false when the time ran out or a request failed.
   */
  async flush(timeoutMs = 2000): Promise<boolean> {
    this.drain();
    return withTimeout(this.deliver(), timeoutMs);
  }

  /** Flushes (as `flush`) and stops the SDK's timers, at most `timeoutMs`. */
  async shutdown(timeoutMs = 2000): Promise<boolean> {
    this.drain();
    return withTimeout(
      this.deliver().then(async (ok) => {
        await this.client.shutdownAsync();
        return ok;
      }),
      timeoutMs,
    );
  }

  /**
   * The SDK's flushAsync() sends ONE request of at most `flushAt` events, does not wait for the requests
   * its own background flushes started, and resolves even when its request failed: alone, it said
   * "delivered" while most costs were still queued or lost. So: send until the SDK's queue is empty,
   * wait for every request in flight, and count the failures.
   */
  private async deliver(): Promise<boolean> {
    const sdk = this.client as unknown as SdkQueue;
    let stuck = false;
    for (let before = Infinity; ; ) {
      this.drain();
      await this.client.flushAsync();
      const inFlight = Object.values(sdk.pendingIngestionPromises ?? {});
      const queued = sdk.getPersistedProperty?.('queue')?.length ?? 0;
      if (!inFlight.length && !queued && this.queue.length === 0) break;
      // Nothing sent and nothing on its way: the SDK keeps events it cannot send; looping would spin.
      if (!inFlight.length && queued >= before) {
        stuck = true;
        break;
      }
      before = queued;
      await Promise.all(inFlight);
    }
    const failed = this.failedRequests;
    this.failedRequests = 0;
    return failed === 0 && !stuck;
  }
}

/** The SDK's request path (langfuse-core 3.x) that keepCredentialsOutOfSdk replaces on one client. */
interface SdkRequests {
  constructAuthorizationHeader(publicKey: string, secretKey: string): Record<string, string>;
  fetch(url: string, options: RequestInit): Promise<Response>;
  flush(callback?: (err?: unknown) => void): void;
  flushAsync(): Promise<unknown>;
  readonly pendingEventProcessingPromises?: Record<string, Promise<unknown>>;
}

/** What the SDK client is given as its secret key when the real one is added in fetch (it must be non-empty, or the SDK disables itself). */
const SECRET_HELD_OUTSIDE = 'held-by-flowise-billing';

/**
 * The SDK builds `Authorization: Basic base64(publicKey:secretKey)` into the options object of each request,
 * and that object is what its 'retry' event carries (`JSON.stringify(options)`, on every retried request) to
 * whoever listens: its debug mode prints every event, and so would any '*' listener. And its flushAsync()
 * prints a failed request with the response body (console.error), which echoes the request headers behind a
 * proxy or gateway that reflects them. On this reporter's client:
 *  - the header is added at the last moment, in the client's fetch, for requests to this Langfuse's own API
 *    only (a media upload goes to a presigned storage URL that must not get it); no object the SDK keeps,
 *    emits or logs holds it, and the client itself holds only a placeholder secret;
 *  - flushAsync() sends as the SDK does but logs nothing: a failed request is counted through the SDK's
 *    'warning' event, and flush() answers false.
 */
function keepCredentialsOutOfSdk(client: SdkRequests, c: { publicKey: string; secretKey: string; baseUrl: string }): void {
  const authorization = `Basic ${Buffer.from(`${c.publicKey}:${c.secretKey}`).toString('base64')}`;
  const api = `${c.baseUrl.replace(/\/+$/, '')}/api/`;
  client.constructAuthorizationHeader = () => ({});
  client.fetch = (url, options) =>
    fetch(url, url.startsWith(api) ? { ...options, headers: { ...(options.headers as Record<string, string> | undefined), Authorization: authorization } } : options);
  client.flushAsync = async () => {
    // As the SDK's: events still being processed (media) are queued first.
    await Promise.all(Object.values(client.pendingEventProcessingPromises ?? {})).catch(() => undefined);
    await new Promise<void>((resolve) => {
      try {
        client.flush(() => resolve());
      } catch {
        resolve();
      }
    });
  };
}

/** What `deliver` reads of the SDK's state (langfuse-core 3.x; absent fields make it stop after one flush). */
interface SdkQueue {
  readonly pendingIngestionPromises?: Record<string, Promise<unknown>>;
  getPersistedProperty?(key: 'queue'): unknown[] | undefined;
}

async function withTimeout(p: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([p.catch(() => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const shared = new Map<string, LangfuseCostReporter>();

/**
 * One reporter (one SDK client) per Langfuse project, endpoint and delivery settings, shared
 * by every handler in the process: Flowise creates a handler per request, and an SDK client
 * per request would leak timers and connections. The settings are part of the key: a handler
 * given other ones (flushAt, timeouts, retries, queue size) got the first handler's client
 * and its settings were silently ignored.
 */
export function langfuseReporterFor(credentials: LangfuseCredentials): LangfuseCostReporter {
  const c = credentials;
  const key = [c.baseUrl, c.publicKey, c.secretKey, c.flushAt, c.flushIntervalMs, c.requestTimeoutMs, c.fetchRetryCount, c.maxQueue].join('\u0000');
  let r = shared.get(key);
  if (!r) {
    r = new LangfuseCostReporter(credentials);
    shared.set(key, r);
  }
  return r;
}

/** Flushes and shuts down every shared reporter (for process exit and tests). */
export async function shutdownLangfuseReporters(timeoutMs = 2000): Promise<void> {
  const all = [...shared.values()];
  shared.clear();
  await Promise.all(all.map((r) => r.shutdown(timeoutMs)));
}
