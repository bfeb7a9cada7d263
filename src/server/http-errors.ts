import { BillingError, type ErrorCode } from '../errors';
import { isDatabaseError } from '../ledger/dialect';
import { asBillingError } from '../ledger/sql-ledger';

/** Every closed error code has one HTTP status; a new code fails to compile until it is placed here. */
const HTTP_STATUS: Record<ErrorCode, number> = {
  VALIDATION_ERROR: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  INSUFFICIENT_FUNDS: 402,
  QUOTA_EXCEEDED: 402,
  BUDGET_EXCEEDED: 402,
  SUBSCRIPTION_INACTIVE: 402,
  BYOK_REQUIRED: 402,
  CUSTOMER_NOT_FOUND: 404,
  HOLD_NOT_FOUND: 404,
  CHARGE_NOT_FOUND: 404,
  RATE_CARD_NOT_FOUND: 404,
  PLAN_NOT_FOUND: 404,
  SUBSCRIPTION_NOT_FOUND: 404,
  NOT_FOUND: 404,
  UNKNOWN_MODEL: 400,
  CUSTOMER_EXISTS: 409,
  HOLD_NOT_PENDING: 409,
  HOLD_EXPIRED: 409,
  IDEMPOTENCY_CONFLICT: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  REFUND_EXCEEDS_CHARGE: 409,
  SECRET_ROTATION_LIMIT: 409,
  RATE_LIMITED: 429,
  INSTALL_FAILED: 500,
  INTERNAL_ERROR: 500,
  DATABASE_ERROR: 503,
  SCHEMA_TOO_NEW: 503,
  LEDGER_NOT_FOUND: 503,
  PROBLEMS_FOUND: 500,
  STRIPE_AUTH_FAILED: 502,
  STRIPE_NOT_CONFIGURED: 409,
  STRIPE_CUSTOMER_MISSING: 409,
  STRIPE_REQUEST_REJECTED: 502,
  STRIPE_UNAVAILABLE: 503,
  STRIPE_SIGNATURE_INVALID: 400,
};

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details: Record<string, unknown> };
}

export function errorBody(e: BillingError): ErrorBody {
  return { error: { code: e.code, message: e.message, details: e.details } };
}

/**
 * Fastify's own failures (bad JSON, body too large, unsupported media type)
 * and anything unexpected, as typed errors; never a stack or a raw driver
 * message that might carry a connection string.
 */
/** `bodyLimit`: the server's limit in bytes, named in a 413's message and details. */
export function toBillingError(e: unknown, bodyLimit: number): { error: BillingError; status: number } {
  if (e instanceof BillingError) return { error: e, status: HTTP_STATUS[e.code] };
  // The routes beyond the ledger (plans, subscriptions, webhooks, keys) read and write the database directly: its
  // failure is a typed 503 DATABASE_ERROR with the scrubbed driver message, as the ledger's are, not a 500 that
  // reads like a bug in serve.
  if (isDatabaseError(e)) return { error: asBillingError(e), status: HTTP_STATUS.DATABASE_ERROR };
  const f = e as { statusCode?: number; code?: string; message?: string; validation?: unknown };
  if (f?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return { error: new BillingError('VALIDATION_ERROR', `Request body too large (the limit is ${bodyLimit} bytes: serve --body-limit)`, { limitBytes: bodyLimit }), status: 413 };
  }
  if (f?.code === 'FST_ERR_BAD_URL') return { error: new BillingError('VALIDATION_ERROR', 'The request path is not a valid URL (a malformed %-escape)', { fastifyCode: f.code }), status: 400 };
  if (f?.code === 'FST_ERR_MAX_PARAM_LENGTH') return { error: new BillingError('VALIDATION_ERROR', 'A path parameter is too long (ids are at most 128 characters)', { fastifyCode: f.code }), status: 414 };
  if (f?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return { error: new BillingError('VALIDATION_ERROR', 'Content-Type must be application/json', {}), status: 415 };
  if (f?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || f?.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (f?.statusCode === 400 && /JSON/i.test(f.message ?? ''))) {
    return { error: new BillingError('VALIDATION_ERROR', 'Request body is not valid JSON', {}), status: 400 };
  }
  if (f?.statusCode === 429) return { error: new BillingError('RATE_LIMITED', 'Too many requests for this API key', {}), status: 429 };
  if (f?.statusCode && f.statusCode >= 400 && f.statusCode < 500) {
    return { error: new BillingError('VALIDATION_ERROR', f.message ?? 'Bad request', { fastifyCode: f.code ?? null }), status: f.statusCode };
  }
  return { error: new BillingError('INTERNAL_ERROR', 'Unexpected server error', {}), status: 500 };
}

/**
 * What `serve` writes on the raw socket for a request Node's HTTP parser refuses before any route or
 * hook runs (an unknown method such as `FOO`, a malformed request line, headers past Node's limit):
 * the same typed body as every other refusal, not fastify's `{"error":"Bad Request",…}`.
 */
export function clientErrorResponse(err: { code?: string }): { status: number; text: string } | null {
  if (err.code === 'ECONNRESET') return null; // the client is gone: nothing to answer
  const [status, reason, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'The request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'The request was not received in time']
        : [400, 'Bad Request', 'The request is not valid HTTP (an unknown method, or a malformed request line or header)'];
  const body = JSON.stringify(errorBody(new BillingError('VALIDATION_ERROR', message, {})));
  return {
    status,
    text: `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  };
}
