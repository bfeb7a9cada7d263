import type { ZodError } from 'zod';

/**
 * The closed set of error codes. Callers (CLI, nodes, HTTP handlers) switch on
 * these; adding one is an API change and belongs in the README's table.
 */
export const ERROR_CODES = [
  'VALIDATION_ERROR',
  'INSUFFICIENT_FUNDS',
  'CUSTOMER_NOT_FOUND',
  'CUSTOMER_EXISTS',
  'HOLD_NOT_FOUND',
  'HOLD_NOT_PENDING',
  'HOLD_EXPIRED',
  'CHARGE_NOT_FOUND',
  'REFUND_EXCEEDS_CHARGE',
  'IDEMPOTENCY_CONFLICT',
  /** Another request with this Idempotency-Key is still being answered (serve); retry it shortly. */
  'IDEMPOTENCY_IN_PROGRESS',
  'RATE_CARD_NOT_FOUND',
  'UNKNOWN_MODEL',
  /** A billing token that is missing, forged, expired or otherwise refused. */
  'UNAUTHORIZED',
  /** The Flowise installer could not do its job (no flowise-components found, a foreign file in the way). */
  'INSTALL_FAILED',
  'QUOTA_EXCEEDED',
  'BUDGET_EXCEEDED',
  'PLAN_NOT_FOUND',
  'SUBSCRIPTION_NOT_FOUND',
  'SUBSCRIPTION_INACTIVE',
  /** The customer's plan has no managed (operator-paid) models and the call did not use the customer's own key. */
  'BYOK_REQUIRED',
  'DATABASE_ERROR',
  /** The ledger database was migrated by a newer flowise-billing than this one; upgrade before using it. */
  'SCHEMA_TOO_NEW',
  /** A read found no ledger at the given location (nothing was created). */
  'LEDGER_NOT_FOUND',
  /** `doctor` found problems (each listed with a fix). */
  'PROBLEMS_FOUND',
  /** The Stripe secret key was refused (401/403). */
  'STRIPE_AUTH_FAILED',
  /** Something Stripe needs is not set up: outbox off, no meter, no payment method, no key or webhook secret. */
  'STRIPE_NOT_CONFIGURED',
  /** The ledger customer has no Stripe customer and creating one was not allowed. */
  'STRIPE_CUSTOMER_MISSING',
  /** Stripe refused a request for a reason retrying cannot fix. */
  'STRIPE_REQUEST_REJECTED',
  /** Stripe could not be reached or kept failing (after retries, or the circuit breaker is open). */
  'STRIPE_UNAVAILABLE',
  /** A webhook payload failed signature or timestamp verification. */
  'STRIPE_SIGNATURE_INVALID',
  /** An API key that is valid but lacks the scope the request needs. */
  'FORBIDDEN',
  /** Something the request names that has no code of its own (an API key, a webhook endpoint, a route). */
  'NOT_FOUND',
  /** Too many requests from one API key; retry after details.retryAfterSeconds. */
  'RATE_LIMITED',
  /** A webhook endpoint's secret rotated while too many replaced secrets still sign (their overlaps have not ended). */
  'SECRET_ROTATION_LIMIT',
  /** A bug, not a business outcome; the message says what failed. */
  'INTERNAL_ERROR',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export type ErrorDetails = Record<string, unknown>;

export class BillingError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details: ErrorDetails } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export class ValidationError extends BillingError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('VALIDATION_ERROR', message, details);
  }

  /** Names every bad field, e.g. `chargeTypes.Zipper.perUnitUsd: expected a decimal string`. */
  static fromZod(what: string, error: ZodError): ValidationError {
    const issues = error.issues.map((i) => ({
      path: i.path.join('.') || '(root)',
      message: i.message,
    }));
    const summary = issues.map((i) => `${i.path}: ${i.message}`).join('; ');
    return new ValidationError(`Invalid ${what}: ${summary}`, { issues });
  }
}

export class InsufficientFundsError extends BillingError {
  constructor(details: { customerId: string; requiredUsd: string; availableUsd: string; [k: string]: unknown }) {
    super(
      'INSUFFICIENT_FUNDS',
      `Insufficient funds for customer ${details.customerId}: required $${details.requiredUsd}, available $${details.availableUsd}`,
      details,
    );
  }
}

export class CustomerNotFoundError extends BillingError {
  constructor(customerId: string) {
    super('CUSTOMER_NOT_FOUND', `Customer ${customerId} does not exist`, { customerId });
  }
}

export class IdempotencyConflictError extends BillingError {
  constructor(key: string, operation: string) {
    super(
      'IDEMPOTENCY_CONFLICT',
      `Idempotency key "${key}" was already used for a different ${operation} request`,
      { idempotencyKey: key, operation },
    );
  }
}

export class QuotaExceededError extends BillingError {
  constructor(details: { customerId: string; sessionsUsed: number; sessionsLimit: number; periodEnd: string; [k: string]: unknown }) {
    super(
      'QUOTA_EXCEEDED',
      `Session quota exceeded for customer ${details.customerId}: ${details.sessionsUsed} of ${details.sessionsLimit} sessions used until ${details.periodEnd}`,
      details,
    );
  }
}

export class BudgetExceededError extends BillingError {
  constructor(details: { customerId: string; budgetUsd: string; spentUsd: string; requiredUsd: string; [k: string]: unknown }) {
    super(
      'BUDGET_EXCEEDED',
      `Monthly budget of $${details.budgetUsd} for customer ${details.customerId} would be exceeded: spent $${details.spentUsd}, this step needs $${details.requiredUsd}`,
      details,
    );
  }
}

export class ByokRequiredError extends BillingError {
  constructor(details: { customerId: string; plan: string | null; [k: string]: unknown }) {
    super('BYOK_REQUIRED', `The plan of customer ${details.customerId} includes no managed models: the call must use the customer's own provider key`, details);
  }
}

export function isBillingError(e: unknown): e is BillingError {
  return e instanceof BillingError;
}
