/**
 * A Stripe API test double on loopback, for driving the real `stripe` SDK:
 *
 *   const server = await startStripeServer();
 *   const stripe = new Stripe(server.secretKey, { ...server.sdkConfig, maxNetworkRetries: 2 });
 *
 * It rejects what the real API rejects (bad key, wrong content type, unknown or
 * missing params, idempotency-key reuse with other params, duplicate meter-event
 * identifiers, timestamps outside the 35-day window, …) with Stripe's error
 * shapes, so code that passes here should not fail differently against Stripe.
 * Where Stripe validates asynchronously (meter-event customer and value), this
 * double rejects synchronously: in production those events would be silently
 * dropped, which is worse, so a test should see them fail loudly.
 *
 * Rules of the live API it also keeps (https://docs.stripe.com/api/idempotent_requests,
 * https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits):
 * - a 500 from a request that began executing is saved under its idempotency
 *   key and replayed for that key for 24 h (`Stripe-Should-Retry: false`);
 * - one concurrent meter-event call per customer and meter: a second one while
 *   the first is in flight gets 429 `rate_limit` (not saved under its key);
 * - meter event summaries are eventually consistent (`summaryDelayMs`).
 */
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { listenOnLoopback, type Loopback } from './loopback';

// ---------------------------------------------------------------------------
// Public types

export interface StripeServerOptions {
  secretKey?: string;
  webhookSecret?: string;
  /** Clock in milliseconds; lets tests move past the 24 h / 35 day windows. */
  now?: () => number;
  /** How long a meter-event POST takes to process (default 0); the per-customer rule only bites while one is in flight. */
  meterEventLatencyMs?: number;
  /** Stripe's "one concurrent call per customer per meter" on POST /v1/billing/meter_events (default true). */
  oneCallPerCustomerMeter?: boolean;
  /** `Retry-After` (seconds) sent with the rule's 429s; omitted by default, as Stripe does not promise one. */
  retryAfterSeconds?: number;
  /** A meter event shows in event summaries only this long after it was accepted (default 0). */
  summaryDelayMs?: number;
}

export type FaultKind =
  /** 429 `rate_limit`; the SDK does not retry it (by design), callers must. */
  | 'rate_limit'
  /** 429 `lock_timeout` with `Stripe-Should-Retry: true`; the SDK retries it. */
  | 'lock_timeout'
  /** 500 `api_error`; the SDK retries it. */
  | 'server_error'
  /** Hold the response until `hangMs` (or forever), so the client times out. */
  | 'hang'
  /** Destroy the socket without answering (ECONNRESET on the client). */
  | 'reset';

export interface FaultSpec {
  kind: FaultKind;
  /** How many matching requests get the fault; default 1. */
  count?: number;
  /** Fault only every Nth matching request (default 1: each), spreading faults over a run instead of an outage. */
  every?: number;
  /** Only requests whose path starts with this string (or matches the RegExp). */
  path?: string | RegExp;
  method?: 'GET' | 'POST';
  /**
   * Execute the request first and then fail the response: Stripe did the work
   * but the client never heard. The idempotency store keeps the real result.
   */
  afterProcessing?: boolean;
  /** For `hang`: answer normally after this many ms instead of never. */
  hangMs?: number;
  /**
   * For `server_error`: whether Stripe had begun executing, so the 500 is saved
   * under the request's idempotency key and replayed for it (default true, as
   * the API documents; false models a failure in front of the API).
   */
  saved?: boolean;
}

export type PaymentOutcome = 'succeed' | 'card_declined' | 'insufficient_funds';

export interface RecordedRequest {
  id: string;
  method: string;
  path: string;
  query: FormObject;
  headers: http.IncomingHttpHeaders;
  rawBody: string;
  params: FormObject;
  idempotencyKey: string | null;
  replayed: boolean;
  status: number | null;
  fault: FaultKind | null;
  /** Refused by the one-call-per-customer-and-meter rule (429). */
  concurrencyLimited: boolean;
  /** Arrival time (ms, the server's clock). */
  at: number;
  /** When the answer was written, or null (reset, hang). */
  answeredAt: number | null;
}

export type FormValue = string | FormObject;
export interface FormObject {
  [key: string]: FormValue;
}

export interface StripeErrorBody {
  type: 'invalid_request_error' | 'card_error' | 'api_error' | 'idempotency_error';
  message: string;
  code?: string;
  param?: string;
  decline_code?: string;
  doc_url?: string;
  charge?: string;
  payment_intent?: PaymentIntent;
}

export interface Customer {
  id: string;
  object: 'customer';
  created: number;
  email: string | null;
  name: string | null;
  description: string | null;
  phone: string | null;
  metadata: Record<string, string>;
  invoice_settings: { default_payment_method: string | null };
  balance: number;
  currency: string | null;
  delinquent: boolean;
  livemode: false;
}

export interface LastPaymentError {
  type: 'card_error';
  code: string;
  decline_code: string;
  message: string;
  charge: string;
}

export interface PaymentIntent {
  id: string;
  object: 'payment_intent';
  amount: number;
  amount_received: number;
  currency: string;
  customer: string | null;
  payment_method: string | null;
  status: 'requires_payment_method' | 'requires_confirmation' | 'succeeded';
  latest_charge: string | null;
  last_payment_error: LastPaymentError | null;
  description: string | null;
  metadata: Record<string, string>;
  client_secret: string;
  capture_method: 'automatic';
  confirmation_method: 'automatic';
  payment_method_types: string[];
  setup_future_usage: string | null;
  created: number;
  livemode: false;
}

export interface Charge {
  id: string;
  object: 'charge';
  amount: number;
  amount_captured: number;
  amount_refunded: number;
  currency: string;
  customer: string | null;
  payment_intent: string;
  payment_method: string;
  paid: boolean;
  captured: boolean;
  refunded: boolean;
  status: 'succeeded' | 'failed';
  failure_code: string | null;
  failure_message: string | null;
  balance_transaction: string | null;
  metadata: Record<string, string>;
  created: number;
  livemode: false;
}

export interface Refund {
  id: string;
  object: 'refund';
  amount: number;
  charge: string;
  payment_intent: string;
  currency: string;
  reason: string | null;
  status: 'succeeded';
  metadata: Record<string, string>;
  balance_transaction: string;
  created: number;
}

export interface InvoiceItem {
  id: string;
  object: 'invoiceitem';
  /** Integer minor units: `amount`, or quantity × unit_amount_decimal rounded half-up. */
  amount: number;
  currency: string;
  customer: string;
  date: number;
  description: string | null;
  discountable: boolean;
  invoice: string | null;
  livemode: false;
  metadata: Record<string, string>;
  period: { start: number; end: number };
  proration: false;
  quantity: number;
  unit_amount_decimal: string;
}

export interface Transfer {
  id: string;
  object: 'transfer';
  amount: number;
  amount_reversed: number;
  currency: string;
  destination: string;
  description: string | null;
  metadata: Record<string, string>;
  source_transaction: string | null;
  transfer_group: string | null;
  reversed: boolean;
  balance_transaction: string;
  created: number;
  livemode: false;
}

export type MeterFormula = 'count' | 'last' | 'sum';

export interface Meter {
  id: string;
  object: 'billing.meter';
  created: number;
  updated: number;
  display_name: string;
  event_name: string;
  default_aggregation: { formula: MeterFormula };
  customer_mapping: { event_payload_key: string; type: 'by_id' };
  value_settings: { event_payload_key: string };
  event_time_window: 'day' | 'hour' | null;
  status: 'active' | 'inactive';
  status_transitions: { deactivated_at: number | null };
  livemode: false;
}

export interface MeterEventRecord {
  identifier: string;
  event_name: string;
  payload: Record<string, string>;
  timestamp: number;
  created: number;
  /** The active meter for `event_name` at ingestion, or null (Stripe drops such events). */
  meter: string | null;
  /** Accepted at (ms, the server's clock); summaries include it from `createdMs + summaryDelayMs`. */
  createdMs: number;
  customer: string;
  value: string;
}

export interface CheckoutSession {
  id: string;
  object: 'checkout.session';
  mode: 'payment' | 'setup' | 'subscription';
  status: 'open' | 'complete' | 'expired';
  payment_status: 'paid' | 'unpaid' | 'no_payment_required';
  amount_total: number | null;
  currency: string | null;
  customer: string | null;
  customer_email: string | null;
  client_reference_id: string | null;
  metadata: Record<string, string>;
  payment_intent: string | null;
  success_url: string | null;
  cancel_url: string | null;
  url: string;
  created: number;
  expires_at: number;
  livemode: false;
}

export interface StripeEvent {
  id: string;
  object: 'event';
  api_version: string;
  created: number;
  data: { object: unknown };
  livemode: false;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  type: string;
}

export interface WebhookDelivery {
  status: number;
  body: string;
}

// ---------------------------------------------------------------------------
// Webhook signing (https://docs.stripe.com/webhooks#verify-manually)

/** A `Stripe-Signature` header value for `payload`: `t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">`. */
export function signPayload(payload: string, secret: string, timestamp?: number): string {
  const t = timestamp ?? Math.floor(Date.now() / 1000);
  const v1 = crypto.createHmac('sha256', secret).update(`${t}.${payload}`, 'utf8').digest('hex');
  return `t=${t},v1=${v1}`;
}

/** POSTs `event` to `url` the way Stripe delivers webhooks, signed with `secret`. */
export async function sendWebhook(
  url: string,
  event: unknown,
  secret: string,
  opts: { timestamp?: number } = {},
): Promise<WebhookDelivery> {
  const payload = JSON.stringify(event, null, 2);
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json; charset=utf-8',
      'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
      'Stripe-Signature': signPayload(payload, secret, opts.timestamp),
    },
    body: payload,
  });
  return { status: response.status, body: await response.text() };
}

// ---------------------------------------------------------------------------
// Errors

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: StripeErrorBody,
    /** Stripe only saves idempotent results for requests that began executing. */
    readonly replayable = false,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.message);
  }
}

const docUrl = (code: string): string => `https://stripe.com/docs/error-codes/${code.replace(/_/g, '-')}`;

function invalid(
  message: string,
  opts: { param?: string; code?: string; status?: number; headers?: Record<string, string> } = {},
): ApiError {
  const body: StripeErrorBody = { type: 'invalid_request_error', message };
  if (opts.code) {
    body.code = opts.code;
    body.doc_url = docUrl(opts.code);
  }
  if (opts.param) body.param = opts.param;
  return new ApiError(opts.status ?? 400, body, false, opts.headers);
}

const missingParam = (param: string): ApiError =>
  invalid(`Missing required param: ${param}.`, { param, code: 'parameter_missing' });

const noSuch = (kind: string, id: string, param: string, status = 400): ApiError =>
  invalid(`No such ${kind}: '${id}'`, { param, code: 'resource_missing', status });

// ---------------------------------------------------------------------------
// Form bodies: Stripe's bracket notation (a[b]=1, a[0]=x, a[]=y)

function decodeComponent(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    throw invalid(`Invalid URL encoding: ${raw}`);
  }
}

function splitKey(key: string): string[] {
  const open = key.indexOf('[');
  if (open <= 0) return [key];
  const segments = [key.slice(0, open)];
  const bracket = /\[([^[\]]*)\]/y;
  let at = open;
  while (at < key.length) {
    bracket.lastIndex = at;
    const m = bracket.exec(key);
    // Malformed brackets: keep the key literal so it is reported as unknown.
    if (!m) return [key];
    segments.push(m[1] ?? '');
    at = bracket.lastIndex;
  }
  return segments;
}

const newFormObject = (): FormObject => Object.create(null) as FormObject;

export function parseForm(raw: string): FormObject {
  const root = newFormObject();
  for (const pair of raw.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = decodeComponent(eq === -1 ? pair : pair.slice(0, eq));
    const value = decodeComponent(eq === -1 ? '' : pair.slice(eq + 1));
    const segments = splitKey(key);
    let node = root;
    segments.forEach((segment, i) => {
      const name = segment === '' ? String(Object.keys(node).length) : segment;
      const existing = node[name];
      const param = formatParam(segments.slice(0, i + 1));
      if (i === segments.length - 1) {
        if (existing !== undefined && typeof existing !== 'string') throw invalid('Invalid string', { param });
        node[name] = value;
        return;
      }
      if (typeof existing === 'string') throw invalid('Invalid hash', { param });
      const child = existing ?? newFormObject();
      node[name] = child;
      node = child;
    });
  }
  return root;
}

function formatParam(path: readonly string[]): string {
  const [head, ...rest] = path;
  return (head ?? '') + rest.map((p) => `[${p}]`).join('');
}

// ---------------------------------------------------------------------------
// Parameter shapes: what each endpoint accepts, so unknown params are refused

class ListOf {
  constructor(readonly item: Shape) {}
}
type Shape = 'string' | 'map' | 'any' | ListOf | Fields;
interface Fields {
  readonly [key: string]: Shape;
}
const list = (item: Shape): ListOf => new ListOf(item);
const S = 'string' as const;
const MAP = 'map' as const;
const ANY = 'any' as const;
const PAGINATION: Fields = { limit: S, starting_after: S, ending_before: S };

function checkShape(value: FormValue, shape: Shape, path: string[]): void {
  const param = formatParam(path);
  if (shape === 'any') return;
  if (shape === 'string') {
    if (typeof value !== 'string') throw invalid('Invalid string', { param });
    return;
  }
  // An empty string unsets a hash (e.g. `metadata=`), which Stripe allows.
  if (typeof value === 'string') {
    if (value === '' && !(shape instanceof ListOf)) return;
    throw invalid(shape instanceof ListOf ? 'Invalid array' : 'Invalid hash', { param });
  }
  if (shape === 'map') {
    for (const [key, item] of Object.entries(value)) {
      if (typeof item !== 'string') throw invalid('Invalid string', { param: formatParam([...path, key]) });
    }
    return;
  }
  if (shape instanceof ListOf) {
    for (const [key, item] of Object.entries(value)) {
      if (!/^\d+$/.test(key)) throw invalid('Invalid array', { param });
      checkShape(item, shape.item, [...path, key]);
    }
    return;
  }
  for (const [key, item] of Object.entries(value)) {
    const fieldShape = shape[key];
    if (fieldShape === undefined) {
      const unknown = formatParam([...path, key]);
      throw invalid(`Received unknown parameter: ${unknown}`, { param: unknown, code: 'parameter_unknown' });
    }
    checkShape(item, fieldShape, [...path, key]);
  }
}

function getIn(params: FormObject, path: readonly string[]): FormValue | undefined {
  let node: FormValue | undefined = params;
  for (const key of path) {
    if (node === undefined || typeof node === 'string') return undefined;
    node = node[key];
  }
  return node;
}

function optString(params: FormObject, ...path: string[]): string | undefined {
  const value = getIn(params, path);
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function requireString(params: FormObject, ...path: string[]): string {
  const value = getIn(params, path);
  const param = formatParam(path);
  if (value === undefined) throw missingParam(param);
  if (value === '') {
    throw invalid(
      `You passed an empty string for '${param}'. We assume empty values are an attempt to unset a parameter; ` +
        `however '${param}' cannot be unset. You should remove '${param}' from your request or supply a non-empty value.`,
      { param, code: 'parameter_invalid_empty' },
    );
  }
  if (typeof value !== 'string') throw invalid('Invalid string', { param });
  return value;
}

function toInteger(value: string, param: string, min?: number, max?: number): number {
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw invalid(`Invalid integer: ${value}`, { param, code: 'parameter_invalid_integer' });
  }
  const n = Number(value);
  if (min !== undefined && n < min) {
    throw invalid(`This value must be greater than or equal to ${min}.`, { param, code: 'parameter_invalid_integer' });
  }
  if (max !== undefined && n > max) {
    throw invalid(`This value must be less than or equal to ${max}.`, { param, code: 'parameter_invalid_integer' });
  }
  return n;
}

function optBoolean(params: FormObject, name: string): boolean | undefined {
  const value = optString(params, name);
  if (value === undefined) return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw invalid(`Invalid boolean: ${value}`, { param: name });
}

function toEnum<T extends string>(value: string, param: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  const names = [...allowed].sort();
  const options = names.length > 2 ? `${names.slice(0, -1).join(', ')}, or ${names.at(-1)}` : names.join(' or ');
  throw invalid(`Invalid ${param}: must be one of ${options}`, { param });
}

function stringMap(value: FormValue | undefined): Record<string, string> {
  if (value === undefined || typeof value === 'string') return {};
  return Object.fromEntries(Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** Stripe metadata limits: 50 keys, keys ≤ 40 chars, values ≤ 500 chars. */
function metadataParam(params: FormObject, current: Record<string, string> = {}): Record<string, string> {
  const raw = params.metadata;
  if (raw === undefined) return current;
  if (raw === '') return {};
  const merged = { ...current };
  for (const [key, value] of Object.entries(stringMap(raw))) {
    if (key.length > 40) {
      throw invalid(`Metadata keys can have up to 40 characters, but you passed in a key that is ${key.length} characters.`, {
        param: `metadata[${key}]`,
      });
    }
    if (value.length > 500) {
      throw invalid(
        `Metadata values can have up to 500 characters, but you passed in a value that is ${value.length} characters.`,
        { param: `metadata[${key}]` },
      );
    }
    if (value === '') delete merged[key];
    else merged[key] = value;
  }
  if (Object.keys(merged).length > 50) {
    throw invalid('You can have up to 50 metadata keys.', { param: 'metadata' });
  }
  return merged;
}

/** Deterministic serialisation, so reordered params compare equal for idempotency. */
function canonical(value: FormValue): string {
  if (typeof value === 'string') return JSON.stringify(value);
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k] ?? '')}`).join(',')}}`;
}

// ---------------------------------------------------------------------------
// Money rules

/** Minimum charge amounts in the smallest unit (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts). */
const MINIMUM_CHARGE: Readonly<Record<string, number>> = {
  usd: 50, eur: 50, gbp: 30, cad: 50, aud: 50, chf: 50, jpy: 50, nzd: 50, sgd: 50,
};
const MAXIMUM_CHARGE = 99_999_999;
const ZERO_DECIMAL = new Set(['jpy', 'krw', 'vnd', 'clp', 'pyg', 'xof', 'xaf', 'ugx', 'rwf']);

function formatMoney(amount: number, currency: string): string {
  const major = ZERO_DECIMAL.has(currency) ? String(amount) : (amount / 100).toFixed(2);
  return currency === 'usd' ? `$${major}` : `${major} ${currency}`;
}

/** quantity × a decimal of minor units, rounded half-up (away from zero) to an integer, exactly (no floats). */
function roundHalfUp(decimal: string, quantity: number): number {
  const negative = decimal.startsWith('-');
  const [whole, frac = ''] = decimal.replace(/^-/, '').split('.');
  const scale = 10n ** BigInt(frac.length);
  const units = (BigInt(whole!) * scale + BigInt(frac || '0')) * BigInt(quantity);
  const rounded = (units * 2n + scale) / (2n * scale);
  return Number(negative ? -rounded : rounded);
}

function requireAmount(params: FormObject, name = 'amount'): number {
  return toInteger(requireString(params, name), name, 1);
}

function requireCurrency(params: FormObject): string {
  const currency = requireString(params, 'currency').toLowerCase();
  if (!/^[a-z]{3}$/.test(currency)) throw invalid(`Invalid currency: ${currency}.`, { param: 'currency' });
  return currency;
}

function checkChargeAmount(amount: number, currency: string): void {
  const minimum = MINIMUM_CHARGE[currency];
  if (minimum !== undefined && amount < minimum) {
    throw invalid(`Amount must be at least ${formatMoney(minimum, currency)} ${currency}`, {
      param: 'amount',
      code: 'amount_too_small',
    });
  }
  if (amount > MAXIMUM_CHARGE) {
    throw invalid(`Amount must be no more than ${formatMoney(MAXIMUM_CHARGE, currency)}`, {
      param: 'amount',
      code: 'amount_too_large',
    });
  }
}

// ---------------------------------------------------------------------------
// Stripe's card test tokens (https://docs.stripe.com/testing#declined-payments)

const DECLINING_TEST_METHODS: Readonly<Record<string, PaymentOutcome>> = {
  pm_card_chargeDeclined: 'card_declined',
  pm_card_visa_chargeDeclined: 'card_declined',
  pm_card_chargeDeclinedInsufficientFunds: 'insufficient_funds',
  pm_card_visa_chargeDeclinedInsufficientFunds: 'insufficient_funds',
};

const DECLINE_MESSAGES: Readonly<Record<Exclude<PaymentOutcome, 'succeed'>, string>> = {
  card_declined: 'Your card was declined.',
  insufficient_funds: 'Your card has insufficient funds.',
};

// ---------------------------------------------------------------------------
// The server

interface Reply {
  status: number;
  body: unknown;
  headers: Record<string, string>;
}

interface Ctx {
  params: FormObject;
  ids: string[];
  request: RecordedRequest;
}

interface Route {
  method: 'GET' | 'POST';
  pattern: RegExp;
  shape: Fields;
  handle: (ctx: Ctx) => unknown;
}

interface StoredIdempotentResult {
  fingerprint: string;
  endpoint: string;
  reply: Reply;
  requestId: string;
  createdAt: number;
}

interface ActiveFault {
  spec: FaultSpec;
  remaining: number;
  /** Matching requests seen, for `every`. */
  seen: number;
}

const DAY_MS = 86_400_000;
const IDEMPOTENCY_TTL_MS = DAY_MS;
const IDENTIFIER_TTL_MS = DAY_MS;
const METER_EVENT_MAX_AGE_S = 35 * 86_400;
const METER_EVENT_MAX_FUTURE_S = 5 * 60;
const DEFAULT_API_VERSION = '2026-08-26.dahlia';
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function randomId(prefix: string, length = 24): string {
  const bytes = crypto.randomBytes(length);
  let out = '';
  for (const b of bytes) out += BASE62[b % 62];
  return `${prefix}_${out}`;
}

function redactKey(key: string): string {
  const prefix = /^[a-z]+_(test|live)_/.exec(key)?.[0] ?? '';
  if (key.length <= prefix.length + 4) return key;
  return prefix + '*'.repeat(key.length - prefix.length - 4) + key.slice(-4);
}

export class StripeTestServer {
  readonly secretKey: string;
  readonly webhookSecret: string;
  /** Every request received, in arrival order, including faulted ones. */
  readonly requests: RecordedRequest[] = [];
  /** Exceptions thrown by this double itself (answered as 500); should stay empty. */
  readonly internalErrors: unknown[] = [];

  private readonly now: () => number;
  private readonly server: http.Server;
  private readonly routes: Route[];
  private portNumber = 0;
  private loop?: Loopback;
  private faults: ActiveFault[] = [];
  private readonly pendingTimers = new Set<NodeJS.Timeout>();
  private readonly meterEventLatencyMs: number;
  private readonly oneCallPerCustomerMeter: boolean;
  private readonly retryAfterSeconds: number | undefined;
  private readonly summaryDelayMs: number;
  /** customer + event name → meter-event calls in flight. */
  private readonly meterCallsInFlight = new Map<string, number>();
  /** The most meter-event calls ever in flight at once for one customer and meter (counting refused ones). */
  maxMeterCallsPerCustomerMeter = 0;

  private readonly customerStore = new Map<string, Customer>();
  private readonly paymentIntentStore = new Map<string, PaymentIntent>();
  private readonly chargeStore = new Map<string, Charge>();
  private readonly refundStore = new Map<string, Refund>();
  private readonly transferStore = new Map<string, Transfer>();
  private readonly invoiceItemStore = new Map<string, InvoiceItem>();
  private readonly meterStore = new Map<string, Meter>();
  private readonly checkoutStore = new Map<string, CheckoutSession>();
  private readonly meterEventLog: MeterEventRecord[] = [];
  private readonly identifiersSeen = new Map<string, number>();
  private readonly idempotency = new Map<string, StoredIdempotentResult>();
  private readonly eventLog: StripeEvent[] = [];
  private readonly outcomes = new Map<string, PaymentOutcome>();
  private readonly connectedAccounts = new Set<string>();
  private readonly available = new Map<string, number>();

  constructor(opts: StripeServerOptions = {}) {
    this.secretKey = opts.secretKey ?? randomId('sk_test', 32);
    this.webhookSecret = opts.webhookSecret ?? randomId('whsec', 32);
    this.now = opts.now ?? Date.now;
    this.meterEventLatencyMs = opts.meterEventLatencyMs ?? 0;
    this.oneCallPerCustomerMeter = opts.oneCallPerCustomerMeter ?? true;
    this.retryAfterSeconds = opts.retryAfterSeconds;
    this.summaryDelayMs = opts.summaryDelayMs ?? 0;
    this.routes = this.buildRoutes();
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.internalErrors.push(err);
        if (!res.headersSent) res.destroy();
      });
    });
  }

  async listen(): Promise<void> {
    this.loop = await listenOnLoopback(this.server);
    this.portNumber = this.loop.port;
  }

  get port(): number {
    return this.portNumber;
  }

  get url(): string {
    return `http://127.0.0.1:${this.portNumber}`;
  }

  /** Spread into `new Stripe(key, { ...server.sdkConfig })`. */
  get sdkConfig(): { host: string; port: number; protocol: 'http' } {
    return { host: '127.0.0.1', port: this.portNumber, protocol: 'http' };
  }

  async close(): Promise<void> {
    for (const timer of this.pendingTimers) clearTimeout(timer);
    this.pendingTimers.clear();
    await this.loop?.close();
  }

  // --- inspection ----------------------------------------------------------

  meterEvents(): MeterEventRecord[] {
    return [...this.meterEventLog];
  }
  get customers(): Customer[] {
    return [...this.customerStore.values()];
  }
  get paymentIntents(): PaymentIntent[] {
    return [...this.paymentIntentStore.values()];
  }
  get charges(): Charge[] {
    return [...this.chargeStore.values()];
  }
  get refunds(): Refund[] {
    return [...this.refundStore.values()];
  }
  get transfers(): Transfer[] {
    return [...this.transferStore.values()];
  }
  get invoiceItems(): InvoiceItem[] {
    return [...this.invoiceItemStore.values()];
  }
  get meters(): Meter[] {
    return [...this.meterStore.values()];
  }
  get checkoutSessions(): CheckoutSession[] {
    return [...this.checkoutStore.values()];
  }
  /** Events Stripe would have sent to webhook endpoints, oldest first. */
  get events(): StripeEvent[] {
    return [...this.eventLog];
  }
  /** Idempotency keys with a saved result, oldest first. */
  idempotencyKeys(): string[] {
    return [...this.idempotency.keys()];
  }
  /** Available balance per currency (grows with successful charges). */
  balance(currency: string): number {
    return this.available.get(currency) ?? 0;
  }

  // --- test controls -------------------------------------------------------

  injectFaults(spec: FaultSpec): void {
    this.faults.push({ spec, remaining: spec.count ?? 1, seen: 0 });
  }

  clearFaults(): void {
    this.faults = [];
  }

  /** Overrides the card outcome for every payment confirmed for this customer. */
  setPaymentOutcome(customerId: string, outcome: PaymentOutcome): void {
    this.outcomes.set(customerId, outcome);
  }

  /** Registers a Connect account so transfers to it are accepted. */
  addConnectedAccount(id: string = randomId('acct', 16)): string {
    this.connectedAccounts.add(id);
    return id;
  }

  addBalance(currency: string, amount: number): void {
    this.available.set(currency, this.balance(currency) + amount);
  }

  /** Pays an open payment-mode Checkout Session, as the hosted page would. */
  completeCheckoutSession(id: string): StripeEvent {
    const session = this.checkoutStore.get(id);
    if (!session) throw new Error(`No such checkout session: ${id}`);
    if (session.status !== 'open') throw new Error(`Checkout session ${id} is ${session.status}`);
    if (session.mode === 'payment' && session.amount_total !== null && session.currency !== null) {
      const pi = this.newPaymentIntent({
        amount: session.amount_total,
        currency: session.currency,
        customer: session.customer,
        paymentMethod: 'pm_card_visa',
        metadata: session.metadata,
        description: null,
        setupFutureUsage: null,
      });
      this.confirmPaymentIntent(pi, 'pm_card_visa', null);
      session.payment_intent = pi.id;
    }
    session.status = 'complete';
    session.payment_status = session.mode === 'setup' ? 'no_payment_required' : 'paid';
    return this.emit('checkout.session.completed', session, null);
  }

  sendWebhook(url: string, event: unknown, opts: { timestamp?: number } = {}): Promise<WebhookDelivery> {
    return sendWebhook(url, event, this.webhookSecret, opts);
  }

  // --- request pipeline ----------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const idempotencyHeader = req.headers['idempotency-key'];
    const record: RecordedRequest = {
      id: randomId('req', 14),
      method: req.method ?? 'GET',
      path: url.pathname,
      query: newFormObject(),
      headers: req.headers,
      rawBody,
      params: newFormObject(),
      idempotencyKey: typeof idempotencyHeader === 'string' ? idempotencyHeader : null,
      replayed: false,
      status: null,
      fault: null,
      concurrencyLimited: false,
      at: this.now(),
      answeredAt: null,
    };
    this.requests.push(record);
    // Parsed leniently up front so requests answered before the endpoint runs (limits, faults) still show their params.
    try {
      if (record.method === 'POST') record.params = parseForm(rawBody);
    } catch {
      // process() reports the encoding error
    }

    const lane = record.method === 'POST' && record.path === '/v1/billing/meter_events' ? meterLane(rawBody) : null;
    if (lane !== null) {
      const inFlight = (this.meterCallsInFlight.get(lane) ?? 0) + 1;
      this.maxMeterCallsPerCustomerMeter = Math.max(this.maxMeterCallsPerCustomerMeter, inFlight);
      if (inFlight > 1 && this.oneCallPerCustomerMeter) {
        // The concurrency limiter answers before the endpoint runs: nothing is saved under the key.
        record.concurrencyLimited = true;
        const headers: Record<string, string> = this.retryAfterSeconds === undefined ? {} : { 'Retry-After': String(this.retryAfterSeconds) };
        this.send(record, res, this.errorReply(invalid(
          'Request rate limit exceeded. You can only make one concurrent meter event request per customer and meter. ' +
            'Learn more about rate limits here https://stripe.com/docs/rate-limits.',
          { status: 429, code: 'rate_limit', headers },
        )));
        return;
      }
      this.meterCallsInFlight.set(lane, inFlight);
      try {
        if (this.meterEventLatencyMs > 0) await new Promise((r) => setTimeout(r, this.meterEventLatencyMs));
        this.respond(record, url, req, res);
      } finally {
        const left = (this.meterCallsInFlight.get(lane) ?? 1) - 1;
        if (left <= 0) this.meterCallsInFlight.delete(lane);
        else this.meterCallsInFlight.set(lane, left);
      }
      return;
    }
    this.respond(record, url, req, res);
  }

  private respond(record: RecordedRequest, url: URL, req: http.IncomingMessage, res: http.ServerResponse): void {
    const fault = this.takeFault(record);
    if (fault) record.fault = fault.kind;
    if (fault && !fault.afterProcessing) {
      this.applyFault(fault, record, req, res, () => this.process(record, url));
      return;
    }
    const reply = this.process(record, url);
    if (fault) {
      this.applyFault(fault, record, req, res, () => reply);
      return;
    }
    this.send(record, res, reply);
  }

  private takeFault(record: RecordedRequest): FaultSpec | undefined {
    const active = this.faults.find((f) => {
      const { spec, remaining } = f;
      if (remaining <= 0) return false;
      if (spec.method && spec.method !== record.method) return false;
      const matches = spec.path instanceof RegExp ? spec.path.test(record.path) : spec.path === undefined || record.path.startsWith(spec.path);
      if (!matches) return false;
      f.seen += 1;
      return f.seen % (spec.every ?? 1) === 0;
    });
    if (!active) return undefined;
    active.remaining -= 1;
    this.faults = this.faults.filter((f) => f.remaining > 0);
    return active.spec;
  }

  private applyFault(
    fault: FaultSpec,
    record: RecordedRequest,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    reply: () => Reply,
  ): void {
    switch (fault.kind) {
      case 'reset':
        req.socket.destroy();
        return;
      case 'hang': {
        if (fault.hangMs === undefined) return;
        const timer = setTimeout(() => {
          this.pendingTimers.delete(timer);
          if (!res.destroyed && !res.writableEnded) this.send(record, res, reply());
        }, fault.hangMs);
        this.pendingTimers.add(timer);
        return;
      }
      case 'rate_limit':
        this.send(record, res, this.errorReply(invalid(
          'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.',
          { status: 429, code: 'rate_limit' },
        )));
        return;
      case 'lock_timeout':
        this.send(record, res, this.errorReply(invalid(
          'This object cannot be accessed right now because another API request or Stripe process is currently ' +
            'accessing it. If you see this error intermittently, retry the request. If you see this error frequently ' +
            'and are making multiple concurrent requests to a single object, make your requests serially or at a ' +
            'lower rate. See https://stripe.com/rate-limits for more details.',
          { status: 429, code: 'lock_timeout', headers: { 'Stripe-Should-Retry': 'true' } },
        )));
        return;
      case 'server_error': {
        const saved = fault.saved !== false && record.method === 'POST' && record.idempotencyKey !== null && !record.replayed;
        const reply = this.errorReply(new ApiError(500, {
          type: 'api_error',
          message: "Sorry, something went wrong. We've already been notified of the problem, but if you need any help, " +
            'you can reach us at https://support.stripe.com/contact.',
        }, false, saved ? { 'Stripe-Should-Retry': 'false' } : {}));
        // The endpoint had begun executing: this 500 is the key's result from now on.
        if (saved) this.saveResult(record.idempotencyKey!, record, reply);
        this.send(record, res, reply);
        return;
      }
    }
  }

  private process(record: RecordedRequest, url: URL): Reply {
    try {
      return this.execute(record, url);
    } catch (err) {
      if (err instanceof ApiError) return this.errorReply(err);
      this.internalErrors.push(err);
      return this.errorReply(new ApiError(500, { type: 'api_error', message: 'Internal error in the Stripe test double' }));
    }
  }

  private execute(record: RecordedRequest, url: URL): Reply {
    this.authenticate(record.headers.authorization);

    const route = this.routes.find((r) => r.method === record.method && r.pattern.test(record.path));
    if (!route) {
      throw invalid(
        `Unrecognized request URL (${record.method}: ${record.path}). Please see https://stripe.com/docs or we can ` +
          'help at https://support.stripe.com/.',
        { status: 404 },
      );
    }

    record.query = parseForm(url.search.slice(1));
    if (record.method === 'POST') {
      const contentType = (record.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (record.rawBody !== '' && contentType !== 'application/x-www-form-urlencoded') {
        throw invalid(
          'Invalid request (check that your POST content type is application/x-www-form-urlencoded). If you have ' +
            'any questions, we can help at https://support.stripe.com/.',
        );
      }
      record.params = parseForm(record.rawBody);
    } else {
      record.params = record.query;
    }

    const key = record.method === 'POST' ? record.idempotencyKey : null;
    if (key !== null) {
      const replay = this.idempotentReplay(key, record);
      if (replay) return replay;
    }

    checkShape(record.params, { ...route.shape, expand: list(S) }, []);
    const ids = (route.pattern.exec(record.path) ?? []).slice(1).map((id) => decodeURIComponent(id));

    let reply: Reply;
    try {
      const body = route.handle({ params: record.params, ids, request: record });
      reply = { status: 200, body: this.expand(body, record.params), headers: {} };
    } catch (err) {
      if (!(err instanceof ApiError) || !err.replayable || key === null) throw err;
      reply = this.errorReply(err);
    }
    if (key !== null) this.saveResult(key, record, reply);
    return reply;
  }

  private saveResult(key: string, record: RecordedRequest, reply: Reply): void {
    let params = record.params;
    if (Object.keys(params).length === 0 && record.rawBody !== '') {
      try {
        params = parseForm(record.rawBody);
      } catch {
        return;
      }
    }
    this.idempotency.set(key, {
      fingerprint: canonical(params),
      endpoint: `${record.method} ${record.path}`,
      reply,
      requestId: record.id,
      createdAt: this.now(),
    });
  }

  private authenticate(header: string | undefined): void {
    let key: string | undefined;
    if (header?.startsWith('Bearer ')) key = header.slice('Bearer '.length).trim();
    else if (header?.startsWith('Basic ')) {
      key = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8').split(':')[0];
    }
    if (!key) {
      throw invalid(
        "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer " +
          "auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for " +
          'details, or we can help at https://support.stripe.com/.',
        { status: 401 },
      );
    }
    if (key !== this.secretKey) throw invalid(`Invalid API Key provided: ${redactKey(key)}`, { status: 401 });
  }

  private idempotentReplay(key: string, record: RecordedRequest): Reply | undefined {
    const stored = this.idempotency.get(key);
    if (stored && this.now() - stored.createdAt > IDEMPOTENCY_TTL_MS) this.idempotency.delete(key);
    if (key.length > 255) {
      throw invalid(`Idempotency keys can be at most 255 characters long, but you passed in a key that is ${key.length} characters.`);
    }
    const current = this.idempotency.get(key);
    if (!current) return undefined;
    if (current.endpoint !== `${record.method} ${record.path}`) {
      throw new ApiError(400, {
        type: 'idempotency_error',
        message: `Keys for idempotent requests can only be used for the same endpoint they were first used for ` +
          `('${current.endpoint}' vs '${record.method} ${record.path}'). Try using a key other than '${key}' if you ` +
          'meant to execute a different request.',
      });
    }
    if (current.fingerprint !== canonical(record.params)) {
      throw new ApiError(400, {
        type: 'idempotency_error',
        message: 'Keys for idempotent requests can only be used with the same parameters they were first used with. ' +
          `Try using a key other than '${key}' if you meant to execute a different request.`,
      });
    }
    record.replayed = true;
    return {
      ...current.reply,
      headers: { ...current.reply.headers, 'Idempotent-Replayed': 'true', 'Original-Request': current.requestId },
    };
  }

  private errorReply(err: ApiError): Reply {
    return { status: err.status, body: { error: err.body }, headers: err.headers };
  }

  private send(record: RecordedRequest, res: http.ServerResponse, reply: Reply): void {
    const payload = JSON.stringify(reply.body, null, 2);
    const version = record.headers['stripe-version'];
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(payload),
      'Request-Id': record.id,
      'Stripe-Version': typeof version === 'string' ? version : DEFAULT_API_VERSION,
      ...reply.headers,
    };
    if (record.idempotencyKey !== null && record.method === 'POST') headers['Idempotency-Key'] = record.idempotencyKey;
    record.status = reply.status;
    record.answeredAt = this.now();
    res.writeHead(reply.status, headers);
    res.end(payload);
  }

  /** Expands top-level ids named in `expand[]` into the objects they refer to. */
  private expand(body: unknown, params: FormObject): unknown {
    const fields = Object.values(stringMap(params.expand));
    if (fields.length === 0 || typeof body !== 'object' || body === null) return body;
    const copy: Record<string, unknown> = { ...(body as Record<string, unknown>) };
    for (const field of fields) {
      const id = copy[field];
      if (typeof id === 'string') copy[field] = this.lookup(id) ?? id;
    }
    return copy;
  }

  private lookup(id: string): unknown {
    return (
      this.customerStore.get(id) ??
      this.chargeStore.get(id) ??
      this.paymentIntentStore.get(id) ??
      this.refundStore.get(id) ??
      this.transferStore.get(id) ??
      this.invoiceItemStore.get(id)
    );
  }

  private emit(type: string, object: unknown, record: RecordedRequest | null): StripeEvent {
    const version = record?.headers['stripe-version'];
    const event: StripeEvent = {
      id: randomId('evt'),
      object: 'event',
      api_version: typeof version === 'string' ? version : DEFAULT_API_VERSION,
      created: this.nowSeconds(),
      data: { object: structuredClone(object) },
      livemode: false,
      pending_webhooks: 1,
      request: { id: record?.id ?? null, idempotency_key: record?.idempotencyKey ?? null },
      type,
    };
    this.eventLog.push(event);
    return event;
  }

  private nowSeconds(): number {
    return Math.floor(this.now() / 1000);
  }

  private paginate<T extends { id: string }>(items: T[], params: FormObject, url: string): unknown {
    const limitParam = optString(params, 'limit');
    const limit = limitParam === undefined ? 10 : toInteger(limitParam, 'limit', 1, 100);
    const after = optString(params, 'starting_after');
    const before = optString(params, 'ending_before');
    let page = items;
    if (after !== undefined) {
      const at = items.findIndex((i) => i.id === after);
      if (at === -1) throw noSuch('object', after, 'starting_after');
      page = items.slice(at + 1);
    } else if (before !== undefined) {
      const at = items.findIndex((i) => i.id === before);
      if (at === -1) throw noSuch('object', before, 'ending_before');
      page = items.slice(Math.max(0, at - limit), at);
      return { object: 'list', data: page, has_more: at - limit > 0, url };
    }
    return { object: 'list', data: page.slice(0, limit), has_more: page.length > limit, url };
  }

  private newestFirst<T extends { created: number }>(items: Iterable<T>): T[] {
    // Insertion order breaks ties within the same second.
    return [...items].reverse().sort((a, b) => b.created - a.created);
  }

  private requireCustomer(id: string, param: string): Customer {
    const customer = this.customerStore.get(id);
    if (!customer) throw noSuch('customer', id, param);
    return customer;
  }

  // --- routes --------------------------------------------------------------

  private buildRoutes(): Route[] {
    const customerFields: Fields = {
      email: S, name: S, description: S, phone: S, metadata: MAP, payment_method: S,
      invoice_settings: { default_payment_method: S, footer: S, custom_fields: ANY },
      address: ANY, shipping: ANY, preferred_locales: list(S), tax_exempt: S,
    };
    const id = '([^/]+)';
    const route = (method: 'GET' | 'POST', path: string, shape: Fields, handle: (ctx: Ctx) => unknown): Route => ({
      method,
      pattern: new RegExp(`^${path}$`),
      shape,
      handle,
    });
    return [
      route('POST', '/v1/customers', customerFields, (ctx) => this.createCustomer(ctx)),
      route('GET', '/v1/customers', { ...PAGINATION, email: S, created: ANY }, ({ params }) => {
        const email = optString(params, 'email');
        const all = this.newestFirst(this.customerStore.values()).filter((c) => email === undefined || c.email === email);
        return this.paginate(all, params, '/v1/customers');
      }),
      route('GET', `/v1/customers/${id}`, {}, ({ ids }) => this.customerOr404(ids[0] ?? '')),
      route('POST', `/v1/customers/${id}`, customerFields, (ctx) => this.updateCustomer(ctx)),

      route('POST', '/v1/billing/meters', {
        display_name: S, event_name: S, default_aggregation: { formula: S },
        customer_mapping: { event_payload_key: S, type: S }, value_settings: { event_payload_key: S },
        event_time_window: S,
      }, (ctx) => this.createMeter(ctx)),
      route('GET', '/v1/billing/meters', { ...PAGINATION, status: S }, ({ params }) => {
        const status = optString(params, 'status');
        if (status !== undefined) toEnum(status, 'status', ['active', 'inactive']);
        const all = this.newestFirst(this.meterStore.values()).filter((m) => status === undefined || m.status === status);
        return this.paginate(all, params, '/v1/billing/meters');
      }),
      route('GET', `/v1/billing/meters/${id}`, {}, ({ ids }) => this.meterOr404(ids[0] ?? '')),
      route('GET', `/v1/billing/meters/${id}/event_summaries`, {
        ...PAGINATION, customer: S, start_time: S, end_time: S, value_grouping_window: S,
      }, (ctx) => this.eventSummaries(ctx)),
      route('POST', '/v1/billing/meter_events', {
        event_name: S, payload: MAP, identifier: S, timestamp: S,
      }, (ctx) => this.createMeterEvent(ctx)),

      route('POST', '/v1/payment_intents', {
        amount: S, currency: S, customer: S, payment_method: S, off_session: S, confirm: S, description: S,
        metadata: MAP, payment_method_types: list(S), automatic_payment_methods: { enabled: S, allow_redirects: S },
        receipt_email: S, statement_descriptor: S, statement_descriptor_suffix: S, setup_future_usage: S,
        return_url: S, error_on_requires_action: S, transfer_group: S, capture_method: S,
      }, (ctx) => this.createPaymentIntent(ctx)),
      route('GET', `/v1/payment_intents/${id}`, { client_secret: S }, ({ ids }) => {
        const pi = this.paymentIntentStore.get(ids[0] ?? '');
        if (!pi) throw noSuch('payment_intent', ids[0] ?? '', 'intent', 404);
        return pi;
      }),
      route('POST', `/v1/payment_intents/${id}/confirm`, {
        payment_method: S, off_session: S, return_url: S, error_on_requires_action: S,
      }, (ctx) => {
        const pi = this.paymentIntentStore.get(ctx.ids[0] ?? '');
        if (!pi) throw noSuch('payment_intent', ctx.ids[0] ?? '', 'intent', 404);
        return this.confirmPaymentIntent(pi, optString(ctx.params, 'payment_method') ?? null, ctx.request);
      }),
      route('GET', `/v1/charges/${id}`, {}, ({ ids }) => {
        const charge = this.chargeStore.get(ids[0] ?? '');
        if (!charge) throw noSuch('charge', ids[0] ?? '', 'charge', 404);
        return charge;
      }),

      route('POST', '/v1/invoiceitems', {
        amount: S, currency: S, customer: S, description: S, discountable: S, invoice: S, metadata: MAP,
        period: { start: S, end: S }, quantity: S, quantity_decimal: S, subscription: S, tax_behavior: S, tax_code: S,
        tax_rates: list(S), unit_amount_decimal: S, price_data: ANY, pricing: ANY, discounts: ANY, customer_account: S,
      }, (ctx) => this.createInvoiceItem(ctx)),
      route('GET', '/v1/invoiceitems', { ...PAGINATION, customer: S, invoice: S, pending: S, created: ANY }, ({ params }) => {
        const customer = optString(params, 'customer');
        const pending = optBoolean(params, 'pending');
        const all = this.newestFirst(
          [...this.invoiceItemStore.values()].map((i) => ({ ...i, created: i.date })),
        ).filter((i) => (customer === undefined || i.customer === customer) && (pending === undefined || (i.invoice === null) === pending));
        return this.paginate(all.map(({ created: _c, ...i }) => i), params, '/v1/invoiceitems');
      }),
      route('GET', `/v1/invoiceitems/${id}`, {}, ({ ids }) => {
        const item = this.invoiceItemStore.get(ids[0] ?? '');
        if (!item) throw noSuch('invoiceitem', ids[0] ?? '', 'id', 404);
        return item;
      }),

      route('POST', '/v1/refunds', {
        payment_intent: S, charge: S, amount: S, reason: S, metadata: MAP, instructions_email: S,
        refund_application_fee: S, reverse_transfer: S,
      }, (ctx) => this.createRefund(ctx)),
      route('POST', '/v1/transfers', {
        amount: S, currency: S, destination: S, description: S, metadata: MAP, source_transaction: S,
        transfer_group: S, source_type: S,
      }, (ctx) => this.createTransfer(ctx)),

      route('POST', '/v1/checkout/sessions', {
        mode: S, customer: S, customer_email: S, client_reference_id: S, success_url: S, cancel_url: S,
        return_url: S, ui_mode: S, metadata: MAP, payment_method_types: list(S), currency: S,
        line_items: list({
          price: S, quantity: S,
          price_data: {
            currency: S, unit_amount: S, unit_amount_decimal: S, product: S, recurring: ANY, tax_behavior: S,
            product_data: { name: S, description: S, metadata: MAP, images: list(S) },
          },
        }),
        payment_intent_data: { metadata: MAP, description: S, setup_future_usage: S },
      }, (ctx) => this.createCheckoutSession(ctx)),
      route('GET', `/v1/checkout/sessions/${id}`, {}, ({ ids }) => {
        const session = this.checkoutStore.get(ids[0] ?? '');
        if (!session) throw noSuch('checkout.session', ids[0] ?? '', 'session', 404);
        return session;
      }),

      route('GET', '/v1/events', { ...PAGINATION, type: S, types: list(S), created: ANY, delivery_success: S }, ({ params }) => {
        const type = optString(params, 'type');
        const all = this.newestFirst(this.eventLog).filter((e) => type === undefined || e.type === type);
        return this.paginate(all, params, '/v1/events');
      }),
      route('GET', `/v1/events/${id}`, {}, ({ ids }) => {
        const event = this.eventLog.find((e) => e.id === ids[0]);
        if (!event) throw noSuch('event', ids[0] ?? '', 'id', 404);
        return event;
      }),
    ];
  }

  // --- customers -----------------------------------------------------------

  private customerOr404(id: string): Customer {
    const customer = this.customerStore.get(id);
    if (!customer) throw noSuch('customer', id, 'id', 404);
    return customer;
  }

  private createCustomer({ params, request }: Ctx): Customer {
    const paymentMethod = optString(params, 'payment_method');
    if (paymentMethod !== undefined) this.checkPaymentMethod(paymentMethod, 'payment_method');
    const defaultMethod = optString(params, 'invoice_settings', 'default_payment_method');
    if (defaultMethod !== undefined) this.checkPaymentMethod(defaultMethod, 'invoice_settings[default_payment_method]');
    const customer: Customer = {
      id: randomId('cus', 14),
      object: 'customer',
      created: this.nowSeconds(),
      email: optString(params, 'email') ?? null,
      name: optString(params, 'name') ?? null,
      description: optString(params, 'description') ?? null,
      phone: optString(params, 'phone') ?? null,
      metadata: metadataParam(params),
      invoice_settings: { default_payment_method: defaultMethod ?? null },
      balance: 0,
      currency: null,
      delinquent: false,
      livemode: false,
    };
    this.customerStore.set(customer.id, customer);
    this.emit('customer.created', customer, request);
    return customer;
  }

  private updateCustomer({ params, ids, request }: Ctx): Customer {
    const customer = this.customerOr404(ids[0] ?? '');
    const defaultMethod = optString(params, 'invoice_settings', 'default_payment_method');
    if (defaultMethod !== undefined) this.checkPaymentMethod(defaultMethod, 'invoice_settings[default_payment_method]');
    const update = (name: 'email' | 'name' | 'description' | 'phone'): void => {
      const value = getIn(params, [name]);
      if (typeof value === 'string') customer[name] = value === '' ? null : value;
    };
    update('email');
    update('name');
    update('description');
    update('phone');
    customer.metadata = metadataParam(params, customer.metadata);
    if (defaultMethod !== undefined) customer.invoice_settings.default_payment_method = defaultMethod;
    this.emit('customer.updated', customer, request);
    return customer;
  }

  private checkPaymentMethod(id: string, param: string): void {
    if (!id.startsWith('pm_')) throw noSuch('PaymentMethod', id, param);
  }

  // --- billing meters ------------------------------------------------------

  private meterOr404(id: string): Meter {
    const meter = this.meterStore.get(id);
    if (!meter) throw noSuch('billing.meter', id, 'id', 404);
    return meter;
  }

  private activeMeterFor(eventName: string): Meter | undefined {
    return [...this.meterStore.values()].find((m) => m.status === 'active' && m.event_name === eventName);
  }

  private createMeter({ params, request }: Ctx): Meter {
    const displayName = requireString(params, 'display_name');
    const eventName = requireString(params, 'event_name');
    if (getIn(params, ['default_aggregation']) === undefined) throw missingParam('default_aggregation');
    const formula = toEnum(
      requireString(params, 'default_aggregation', 'formula'),
      'default_aggregation[formula]',
      ['count', 'last', 'sum'] as const,
    );
    const mappingType = optString(params, 'customer_mapping', 'type');
    if (mappingType !== undefined) toEnum(mappingType, 'customer_mapping[type]', ['by_id'] as const);
    const window = optString(params, 'event_time_window');
    if (this.activeMeterFor(eventName)) {
      throw invalid(`An active meter already exists with event_name '${eventName}'.`, { param: 'event_name' });
    }
    const now = this.nowSeconds();
    const meter: Meter = {
      id: randomId('mtr_test', 28),
      object: 'billing.meter',
      created: now,
      updated: now,
      display_name: displayName,
      event_name: eventName,
      default_aggregation: { formula },
      customer_mapping: {
        event_payload_key: optString(params, 'customer_mapping', 'event_payload_key') ?? 'stripe_customer_id',
        type: 'by_id',
      },
      value_settings: { event_payload_key: optString(params, 'value_settings', 'event_payload_key') ?? 'value' },
      event_time_window: window === undefined ? null : toEnum(window, 'event_time_window', ['day', 'hour'] as const),
      status: 'active',
      status_transitions: { deactivated_at: null },
      livemode: false,
    };
    this.meterStore.set(meter.id, meter);
    this.emit('billing.meter.created', meter, request);
    return meter;
  }

  private createMeterEvent({ params }: Ctx): unknown {
    const eventName = requireString(params, 'event_name');
    if (eventName.length > 100) throw invalid('event_name must be at most 100 characters.', { param: 'event_name' });
    if (getIn(params, ['payload']) === undefined) throw missingParam('payload');
    const meter = this.activeMeterFor(eventName);
    const customerKey = meter?.customer_mapping.event_payload_key ?? 'stripe_customer_id';
    const valueKey = meter?.value_settings.event_payload_key ?? 'value';
    const customer = requireString(params, 'payload', customerKey);
    const value = requireString(params, 'payload', valueKey);
    const valueParam = `payload[${valueKey}]`;
    // Stripe: "The numerical usage value in the payload only accepts whole number values."
    if (!/^-?\d+$/.test(value)) {
      throw invalid(`The value in the event payload must be a whole number. Received ${value}.`, { param: valueParam });
    }
    if (value.replace(/^-?0*/, '').length > 15) {
      throw invalid(`The value in the event payload can have at most 15 digits. Received ${value}.`, { param: valueParam });
    }
    this.requireCustomer(customer, `payload[${customerKey}]`);

    const now = this.nowSeconds();
    const timestampParam = optString(params, 'timestamp');
    const timestamp = timestampParam === undefined ? now : toInteger(timestampParam, 'timestamp');
    if (timestamp < now - METER_EVENT_MAX_AGE_S) {
      throw invalid('Timestamp must be within the past 35 calendar days.', { param: 'timestamp' });
    }
    if (timestamp > now + METER_EVENT_MAX_FUTURE_S) {
      throw invalid('Timestamp must not be more than 5 minutes in the future.', { param: 'timestamp' });
    }

    const identifierParam = optString(params, 'identifier');
    if (identifierParam !== undefined && identifierParam.length > 100) {
      throw invalid('identifier must be at most 100 characters.', { param: 'identifier' });
    }
    const identifier = identifierParam ?? crypto.randomUUID();
    const seenAt = this.identifiersSeen.get(identifier);
    if (seenAt !== undefined && this.now() - seenAt < IDENTIFIER_TTL_MS) {
      // As observed from the live API: no `code`, only the message, and a hint not to retry.
      throw invalid(`An event already exists with identifier ${identifier}.`, {
        headers: { 'Stripe-Should-Retry': 'false' },
      });
    }
    this.identifiersSeen.set(identifier, this.now());

    const payload = stringMap(params.payload);
    this.meterEventLog.push({
      identifier,
      event_name: eventName,
      payload,
      timestamp,
      created: now,
      meter: meter?.id ?? null,
      createdMs: this.now(),
      customer,
      value,
    });
    return { object: 'billing.meter_event', created: now, event_name: eventName, identifier, livemode: false, payload, timestamp };
  }

  private eventSummaries({ params, ids }: Ctx): unknown {
    const meter = this.meterOr404(ids[0] ?? '');
    const customer = requireString(params, 'customer');
    const start = toInteger(requireString(params, 'start_time'), 'start_time');
    const end = toInteger(requireString(params, 'end_time'), 'end_time');
    for (const [name, t] of [['start_time', start], ['end_time', end]] as const) {
      if (t % 60 !== 0) throw invalid(`${name} must be aligned with minute boundaries.`, { param: name });
    }
    if (end <= start) throw invalid('end_time must be after start_time.', { param: 'end_time' });
    this.requireCustomer(customer, 'customer');
    const grouping = optString(params, 'value_grouping_window');
    const windowSeconds = grouping === undefined ? undefined : { hour: 3600, day: 86_400 }[
      toEnum(grouping, 'value_grouping_window', ['day', 'hour'] as const)
    ];

    // Eventually consistent, as Stripe documents: an event counts once it has been aggregated.
    const aggregatedBefore = this.now() - this.summaryDelayMs;
    const events = this.meterEventLog.filter(
      (e) => e.meter === meter.id && e.customer === customer && e.timestamp >= start && e.timestamp < end && e.createdMs <= aggregatedBefore,
    );
    const buckets = new Map<number, MeterEventRecord[]>();
    for (const e of events) {
      const bucketStart = windowSeconds === undefined ? start : Math.max(start, e.timestamp - (e.timestamp % windowSeconds));
      buckets.set(bucketStart, [...(buckets.get(bucketStart) ?? []), e]);
    }
    if (windowSeconds === undefined && buckets.size === 0) buckets.set(start, []);

    const summaries = [...buckets.entries()]
      .sort(([a], [b]) => b - a)
      .map(([bucketStart, inBucket]) => {
        const bucketEnd = windowSeconds === undefined
          ? end
          : Math.min(end, bucketStart - (bucketStart % windowSeconds) + windowSeconds);
        return {
          id: `mtrusg_test_${crypto.createHash('sha256').update(`${meter.id}:${customer}:${bucketStart}:${bucketEnd}`).digest('hex').slice(0, 40)}`,
          object: 'billing.meter_event_summary',
          aggregated_value: aggregate(meter.default_aggregation.formula, inBucket),
          end_time: bucketEnd,
          livemode: false,
          meter: meter.id,
          start_time: bucketStart,
        };
      });
    return this.paginate(summaries, params, `/v1/billing/meters/${meter.id}/event_summaries`);
  }

  // --- payments ------------------------------------------------------------

  private newPaymentIntent(args: {
    amount: number;
    currency: string;
    customer: string | null;
    paymentMethod: string | null;
    metadata: Record<string, string>;
    description: string | null;
    setupFutureUsage: string | null;
  }): PaymentIntent {
    const id = randomId('pi');
    const pi: PaymentIntent = {
      id,
      object: 'payment_intent',
      amount: args.amount,
      amount_received: 0,
      currency: args.currency,
      customer: args.customer,
      payment_method: args.paymentMethod,
      status: args.paymentMethod ? 'requires_confirmation' : 'requires_payment_method',
      latest_charge: null,
      last_payment_error: null,
      description: args.description,
      metadata: args.metadata,
      client_secret: `${id}_secret_${randomId('s', 24).slice(2)}`,
      capture_method: 'automatic',
      confirmation_method: 'automatic',
      payment_method_types: ['card'],
      setup_future_usage: args.setupFutureUsage,
      created: this.nowSeconds(),
      livemode: false,
    };
    this.paymentIntentStore.set(pi.id, pi);
    return pi;
  }

  private createPaymentIntent({ params, request }: Ctx): PaymentIntent {
    const amount = requireAmount(params);
    const currency = requireCurrency(params);
    checkChargeAmount(amount, currency);
    const customer = optString(params, 'customer');
    if (customer !== undefined) this.requireCustomer(customer, 'customer');
    const paymentMethod = optString(params, 'payment_method');
    if (paymentMethod !== undefined) this.checkPaymentMethod(paymentMethod, 'payment_method');
    const confirm = optBoolean(params, 'confirm') ?? false;
    const offSession = optString(params, 'off_session');
    if (offSession !== undefined) {
      toEnum(offSession, 'off_session', ['false', 'one_off', 'recurring', 'true'] as const);
      if (!confirm) throw invalid('off_session can only be used when confirm=true.', { param: 'off_session' });
    }
    const setupFutureUsage = optString(params, 'setup_future_usage');
    if (setupFutureUsage !== undefined) toEnum(setupFutureUsage, 'setup_future_usage', ['off_session', 'on_session'] as const);

    const pi = this.newPaymentIntent({
      amount,
      currency,
      customer: customer ?? null,
      paymentMethod: paymentMethod ?? null,
      metadata: metadataParam(params),
      description: optString(params, 'description') ?? null,
      setupFutureUsage: setupFutureUsage ?? null,
    });
    this.emit('payment_intent.created', pi, request);
    return confirm ? this.confirmPaymentIntent(pi, null, request) : pi;
  }

  private confirmPaymentIntent(pi: PaymentIntent, paymentMethod: string | null, request: RecordedRequest | null): PaymentIntent {
    if (pi.status === 'succeeded') {
      throw invalid(
        'You cannot confirm this PaymentIntent because it has a status of succeeded. Only a PaymentIntent with one ' +
          'of the following statuses may be confirmed: requires_confirmation, requires_action, requires_payment_method.',
        { code: 'payment_intent_unexpected_state' },
      );
    }
    if (paymentMethod !== null) this.checkPaymentMethod(paymentMethod, 'payment_method');
    // PaymentIntents never fall back to the customer's invoice default: the method must be named.
    const method = paymentMethod ?? pi.payment_method;
    if (method === null) {
      throw invalid(
        "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the PaymentIntent " +
          `with ${pi.customer ?? 'a customer'}, specify a payment method attached to this customer along with the customer ID.`,
        { code: 'payment_intent_unexpected_state' },
      );
    }
    pi.payment_method = method;
    const outcome = (pi.customer !== null ? this.outcomes.get(pi.customer) : undefined)
      ?? DECLINING_TEST_METHODS[method]
      ?? 'succeed';
    const succeeded = outcome === 'succeed';
    const declineMessage = outcome === 'succeed' ? null : DECLINE_MESSAGES[outcome];
    const charge: Charge = {
      id: randomId('ch'),
      object: 'charge',
      amount: pi.amount,
      amount_captured: succeeded ? pi.amount : 0,
      amount_refunded: 0,
      currency: pi.currency,
      customer: pi.customer,
      payment_intent: pi.id,
      payment_method: method,
      paid: succeeded,
      captured: succeeded,
      refunded: false,
      status: succeeded ? 'succeeded' : 'failed',
      failure_code: succeeded ? null : 'card_declined',
      failure_message: declineMessage,
      balance_transaction: succeeded ? randomId('txn') : null,
      metadata: { ...pi.metadata },
      created: this.nowSeconds(),
      livemode: false,
    };
    this.chargeStore.set(charge.id, charge);
    pi.latest_charge = charge.id;

    if (outcome === 'succeed') {
      pi.status = 'succeeded';
      pi.amount_received = pi.amount;
      pi.last_payment_error = null;
      this.addBalance(pi.currency, pi.amount);
      this.emit('charge.succeeded', charge, request);
      this.emit('payment_intent.succeeded', pi, request);
      return pi;
    }

    const declineCode = outcome === 'insufficient_funds' ? 'insufficient_funds' : 'generic_decline';
    pi.status = 'requires_payment_method';
    pi.last_payment_error = {
      type: 'card_error',
      code: 'card_declined',
      decline_code: declineCode,
      message: DECLINE_MESSAGES[outcome],
      charge: charge.id,
    };
    this.emit('charge.failed', charge, request);
    this.emit('payment_intent.payment_failed', pi, request);
    throw new ApiError(402, {
      type: 'card_error',
      code: 'card_declined',
      decline_code: declineCode,
      message: DECLINE_MESSAGES[outcome],
      charge: charge.id,
      payment_intent: structuredClone(pi),
      doc_url: docUrl('card_declined'),
    }, true);
  }

  private createRefund({ params, request }: Ctx): Refund {
    const chargeId = optString(params, 'charge');
    const intentId = optString(params, 'payment_intent');
    if (chargeId === undefined && intentId === undefined) {
      throw invalid('One of the following params should be provided for this request: payment_intent or charge.', {
        code: 'parameter_missing',
      });
    }
    let charge: Charge | undefined;
    if (intentId !== undefined) {
      const pi = this.paymentIntentStore.get(intentId);
      if (!pi) throw noSuch('payment_intent', intentId, 'payment_intent');
      if (pi.status !== 'succeeded' || pi.latest_charge === null) {
        throw invalid('This PaymentIntent does not have a successful charge to refund.', { param: 'payment_intent' });
      }
      charge = this.chargeStore.get(pi.latest_charge);
    }
    if (chargeId !== undefined) {
      const byId = this.chargeStore.get(chargeId);
      if (!byId) throw noSuch('charge', chargeId, 'charge');
      if (charge !== undefined && charge.id !== byId.id) {
        throw invalid(`Charge ${chargeId} does not belong to PaymentIntent ${intentId}.`, { param: 'charge' });
      }
      charge = byId;
    }
    if (!charge || charge.status !== 'succeeded') {
      throw invalid(`Charge ${charge?.id ?? chargeId} has not succeeded and cannot be refunded.`, { param: 'charge' });
    }
    const remaining = charge.amount - charge.amount_refunded;
    if (remaining === 0) {
      throw invalid(`Charge ${charge.id} has already been refunded.`, { code: 'charge_already_refunded' });
    }
    const amountParam = optString(params, 'amount');
    const amount = amountParam === undefined ? remaining : toInteger(amountParam, 'amount', 1);
    if (amount > remaining) {
      throw invalid(
        `Refund amount (${formatMoney(amount, charge.currency)}) is greater than unrefunded amount on charge ` +
          `(${formatMoney(remaining, charge.currency)})`,
        { param: 'amount', code: 'amount_too_large' },
      );
    }
    const reason = optString(params, 'reason');
    const refund: Refund = {
      id: randomId('re'),
      object: 'refund',
      amount,
      charge: charge.id,
      payment_intent: charge.payment_intent,
      currency: charge.currency,
      reason: reason === undefined ? null : toEnum(reason, 'reason', ['duplicate', 'fraudulent', 'requested_by_customer'] as const),
      status: 'succeeded',
      metadata: metadataParam(params),
      balance_transaction: randomId('txn'),
      created: this.nowSeconds(),
    };
    charge.amount_refunded += amount;
    charge.refunded = charge.amount_refunded === charge.amount;
    this.refundStore.set(refund.id, refund);
    this.addBalance(charge.currency, -amount);
    this.emit('refund.created', refund, request);
    this.emit('charge.refunded', charge, request);
    return refund;
  }

  /**
   * POST /v1/invoiceitems (https://docs.stripe.com/api/invoiceitems/create): a
   * customer that exists; either `amount` (integer minor units, negative
   * allowed) or `unit_amount_decimal` (at most 12 decimals) times `quantity`,
   * never both; a three-letter currency; a description within Stripe's 5,000
   * character limit for strings; an inclusive period with end ≥ start.
   */
  private createInvoiceItem({ params, request }: Ctx): InvoiceItem {
    if (params.price_data !== undefined || params.pricing !== undefined || params.customer_account !== undefined) {
      throw invalid('This Stripe test double supports invoice items with amount or unit_amount_decimal for a customer only.');
    }
    const customer = this.requireCustomer(requireString(params, 'customer'), 'customer');
    const amountParam = optString(params, 'amount');
    const decimalParam = optString(params, 'unit_amount_decimal');
    if (amountParam !== undefined && decimalParam !== undefined) {
      throw invalid('You may only specify one of these parameters: amount, unit_amount_decimal.', { param: 'amount' });
    }
    if (amountParam === undefined && decimalParam === undefined) throw missingParam('amount');
    if (optString(params, 'quantity_decimal') !== undefined) throw invalid('quantity_decimal is not supported by this Stripe test double.', { param: 'quantity_decimal' });
    const currency = optString(params, 'currency') === undefined && customer.currency ? customer.currency : requireCurrency(params);
    const quantity = optString(params, 'quantity') === undefined ? 1 : toInteger(optString(params, 'quantity')!, 'quantity', 0);
    if (amountParam !== undefined && quantity !== 1) throw invalid('You may only specify quantity together with unit_amount_decimal, not with amount.', { param: 'quantity' });
    let amount: number;
    let unitAmountDecimal: string;
    if (amountParam !== undefined) {
      amount = toInteger(amountParam, 'amount', -MAXIMUM_CHARGE, MAXIMUM_CHARGE);
      unitAmountDecimal = String(amount);
    } else {
      if (!/^-?\d+(\.\d{1,12})?$/.test(decimalParam!)) {
        throw invalid(`Invalid decimal: ${decimalParam}. Decimals can have at most 12 decimal places.`, { param: 'unit_amount_decimal', code: 'parameter_invalid_decimal' });
      }
      unitAmountDecimal = decimalParam!;
      amount = roundHalfUp(decimalParam!, quantity);
      if (Math.abs(amount) > MAXIMUM_CHARGE) throw invalid(`Amount must be no more than ${formatMoney(MAXIMUM_CHARGE, currency)}`, { param: 'unit_amount_decimal', code: 'amount_too_large' });
    }
    const description = optString(params, 'description') ?? null;
    if (description !== null && description.length > 5000) {
      throw invalid(`Invalid string: ${description.slice(0, 20)}...; must be at most 5000 characters`, { param: 'description' });
    }
    let period = { start: this.nowSeconds(), end: this.nowSeconds() };
    if (params.period !== undefined) {
      const start = toInteger(requireString(params, 'period', 'start'), 'period[start]', 0);
      const end = toInteger(requireString(params, 'period', 'end'), 'period[end]', 0);
      if (end < start) throw invalid('The period end must be greater than or equal to the period start.', { param: 'period[end]' });
      period = { start, end };
    }
    const item: InvoiceItem = {
      id: randomId('ii'),
      object: 'invoiceitem',
      amount,
      currency,
      customer: customer.id,
      date: this.nowSeconds(),
      description,
      discountable: optBoolean(params, 'discountable') ?? amount >= 0,
      invoice: null,
      livemode: false,
      metadata: metadataParam(params),
      period,
      proration: false,
      quantity,
      unit_amount_decimal: unitAmountDecimal,
    };
    this.invoiceItemStore.set(item.id, item);
    this.emit('invoiceitem.created', item, request);
    return item;
  }

  private createTransfer({ params, request }: Ctx): Transfer {
    const amount = requireAmount(params);
    const currency = requireCurrency(params);
    const destination = requireString(params, 'destination');
    if (!this.connectedAccounts.has(destination)) throw noSuch('destination', destination, 'destination');
    const sourceTransaction = optString(params, 'source_transaction');
    if (sourceTransaction !== undefined) {
      const charge = this.chargeStore.get(sourceTransaction);
      if (!charge || charge.status !== 'succeeded') throw noSuch('charge', sourceTransaction, 'source_transaction');
      if (charge.currency !== currency) {
        throw invalid(`The currency of source_transaction's balance transaction (${charge.currency}) must be the same as the transfer currency (${currency}).`, { param: 'currency' });
      }
      if (amount > charge.amount - charge.amount_refunded) {
        throw invalid(`Transfer amount exceeds the amount available on source_transaction ${sourceTransaction}.`, { param: 'amount' });
      }
    } else if (this.balance(currency) < amount) {
      throw invalid(
        'You have insufficient available funds in your Stripe account. Try adding funds directly to your available ' +
          'balance by creating Charges using the 4000000000000077 test card. See: https://stripe.com/docs/testing#available-balance',
        { code: 'balance_insufficient' },
      );
    } else {
      this.addBalance(currency, -amount);
    }
    const transfer: Transfer = {
      id: randomId('tr'),
      object: 'transfer',
      amount,
      amount_reversed: 0,
      currency,
      destination,
      description: optString(params, 'description') ?? null,
      metadata: metadataParam(params),
      source_transaction: sourceTransaction ?? null,
      transfer_group: optString(params, 'transfer_group') ?? null,
      reversed: false,
      balance_transaction: randomId('txn'),
      created: this.nowSeconds(),
      livemode: false,
    };
    this.transferStore.set(transfer.id, transfer);
    this.emit('transfer.created', transfer, request);
    return transfer;
  }

  private createCheckoutSession({ params, request }: Ctx): CheckoutSession {
    const mode = toEnum(requireString(params, 'mode'), 'mode', ['payment', 'setup', 'subscription'] as const);
    const customer = optString(params, 'customer');
    if (customer !== undefined) this.requireCustomer(customer, 'customer');
    const lineItems = getIn(params, ['line_items']);
    if (mode !== 'setup' && (lineItems === undefined || lineItems === '')) throw missingParam('line_items');
    let total: number | null = null;
    let currency: string | null = optString(params, 'currency')?.toLowerCase() ?? null;
    if (typeof lineItems === 'object') {
      total = 0;
      for (const index of Object.keys(lineItems)) {
        const price = optString(params, 'line_items', index, 'price');
        if (price !== undefined) throw noSuch('price', price, `line_items[${index}][price]`);
        if (getIn(params, ['line_items', index, 'price_data']) === undefined) {
          throw missingParam(`line_items[${index}][price_data]`);
        }
        const itemCurrency = requireString(params, 'line_items', index, 'price_data', 'currency').toLowerCase();
        const unitParam = `line_items[${index}][price_data][unit_amount]`;
        const unitAmount = toInteger(requireString(params, 'line_items', index, 'price_data', 'unit_amount'), unitParam, 0);
        if (optString(params, 'line_items', index, 'price_data', 'product') === undefined) {
          requireString(params, 'line_items', index, 'price_data', 'product_data', 'name');
        }
        const quantityParam = `line_items[${index}][quantity]`;
        const quantity = toInteger(requireString(params, 'line_items', index, 'quantity'), quantityParam, 1);
        if (currency !== null && currency !== itemCurrency) {
          throw invalid('All line items must use the same currency.', { param: `line_items[${index}][price_data][currency]` });
        }
        currency = itemCurrency;
        total += unitAmount * quantity;
      }
      if (mode === 'payment' && currency !== null) checkChargeAmount(total, currency);
    }
    const id = randomId('cs_test', 58);
    const created = this.nowSeconds();
    const session: CheckoutSession = {
      id,
      object: 'checkout.session',
      mode,
      status: 'open',
      payment_status: 'unpaid',
      amount_total: total,
      currency,
      customer: customer ?? null,
      customer_email: optString(params, 'customer_email') ?? null,
      client_reference_id: optString(params, 'client_reference_id') ?? null,
      metadata: metadataParam(params),
      payment_intent: null,
      success_url: optString(params, 'success_url') ?? null,
      cancel_url: optString(params, 'cancel_url') ?? null,
      url: `https://checkout.stripe.com/c/pay/${id}`,
      created,
      expires_at: created + 86_400,
      livemode: false,
    };
    this.checkoutStore.set(id, session);
    this.emit('checkout.session.created', session, request);
    return session;
  }
}

/** The customer + event name a meter-event POST is for, read leniently (validation happens later). */
function meterLane(rawBody: string): string | null {
  try {
    const params = parseForm(rawBody);
    const eventName = params.event_name;
    const payload = params.payload;
    const customer = typeof payload === 'object' ? payload.stripe_customer_id : undefined;
    return typeof eventName === 'string' && typeof customer === 'string' ? `${customer}\u0000${eventName}` : null;
  } catch {
    return null;
  }
}

function aggregate(formula: MeterFormula, events: MeterEventRecord[]): number {
  if (formula === 'count') return events.length;
  if (formula === 'last') {
    const last = events.reduce<MeterEventRecord | undefined>(
      (latest, e) => (latest === undefined || e.timestamp >= latest.timestamp ? e : latest),
      undefined,
    );
    return last === undefined ? 0 : Number(last.value);
  }
  // Whole-number values summed exactly; each is ≤ 15 digits, so only huge sums lose precision in the JSON number.
  return Number(events.reduce((sum, e) => sum + BigInt(e.value), 0n));
}

export async function startStripeServer(opts: StripeServerOptions = {}): Promise<StripeTestServer> {
  const server = new StripeTestServer(opts);
  await server.listen();
  return server;
}
