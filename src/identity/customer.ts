import { ValidationError } from '../errors';
import { verifyBillingToken } from './token';
import { CUSTOMER_ID_PATTERN } from '../schemas';

/**
 * Where a node takes the paying customer from (DESIGN invariant 6). Anything
 * the caller of a prediction controls (chatId, sessionId, overrideConfig, vars)
 * names a customer only through a token signed with the credential's secret;
 * the other trusted sources are server-side (Flowise's workspace/organisation of
 * the stored flow) or the operator's own fixed value. `insecureRawId` takes an
 * unsigned id from a variable and exists only for local testing: it logs a
 * warning on every use.
 */
export const CUSTOMER_SOURCES = ['billingToken', 'workspace', 'organization', 'fixed', 'insecureRawId'] as const;
export type CustomerSource = (typeof CUSTOMER_SOURCES)[number];

export const DEFAULT_TOKEN_VARIABLE = 'billingToken';
export const DEFAULT_RAW_ID_VARIABLE = 'billingCustomerId';

/** An override variable's name (the token's, the unsigned id's). */
export const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

export interface WarnLogger {
  warn(message: string): void;
}

export interface ResolveCustomerInput {
  readonly source: CustomerSource;
  /** Override variables of this prediction (Flowise `nodeData.inputs.vars`): caller-controlled. */
  readonly vars?: Record<string, unknown> | null;
  /** Variable carrying the billing token (default `billingToken`). */
  readonly tokenVariable?: string;
  /** The Billing Ledger credential's token secret. */
  readonly tokenSecret?: string;
  /** Server-side ids of the stored flow's workspace / organisation. */
  readonly workspaceId?: string | null;
  readonly orgId?: string | null;
  /** The operator's fixed customer id (node input). */
  readonly fixedCustomerId?: string | null;
  /** Variable carrying an unsigned id when source is `insecureRawId` (default `billingCustomerId`). */
  readonly rawIdVariable?: string;
  readonly logger?: WarnLogger;
  /** Clock for tests (seconds since the epoch). */
  readonly now?: number;
}

export interface ResolvedCustomer {
  readonly customerId: string;
  readonly source: CustomerSource;
  /** Token expiry (seconds since the epoch) when the source is a billing token. */
  readonly tokenExpiresAt?: number;
}

function variableName(name: string | undefined, fallback: string, field: string): string {
  const v = (name ?? '').trim() || fallback;
  if (!VARIABLE_NAME.test(v)) throw new ValidationError(`${field} "${v}" is not a valid variable name (letters, digits, _)`, { field });
  return v;
}

function checkId(id: unknown, field: string, what: string): string {
  if (typeof id !== 'string' || !CUSTOMER_ID_PATTERN.test(id.trim())) {
    throw new ValidationError(`${what} is not a valid customer id (1–128 letters, digits, . _ : @ + -)`, { field });
  }
  return id.trim();
}

/** Resolves the paying customer, or throws (BillingTokenError for a refused token, ValidationError otherwise). */
export function resolveCustomer(input: ResolveCustomerInput): ResolvedCustomer {
  switch (input.source) {
    case 'billingToken': {
      const name = variableName(input.tokenVariable, DEFAULT_TOKEN_VARIABLE, 'tokenVariable');
      const token = input.vars?.[name];
      const claims = verifyBillingToken(token, input.tokenSecret, { now: input.now });
      return { customerId: claims.customerId, source: 'billingToken', tokenExpiresAt: claims.expiresAt };
    }
    case 'workspace':
      if (!input.workspaceId) throw new ValidationError('This flow runs without a Flowise workspace id, so the customer cannot come from the workspace', { field: 'customerSource' });
      return { customerId: checkId(input.workspaceId, 'workspaceId', 'The Flowise workspace id'), source: 'workspace' };
    case 'organization':
      if (!input.orgId) throw new ValidationError('This flow runs without a Flowise organization id, so the customer cannot come from the organization', { field: 'customerSource' });
      return { customerId: checkId(input.orgId, 'orgId', 'The Flowise organization id'), source: 'organization' };
    case 'fixed':
      if (!input.fixedCustomerId || !input.fixedCustomerId.trim()) throw new ValidationError('Customer Source is "Fixed customer" but Fixed Customer ID is empty', { field: 'fixedCustomerId' });
      return { customerId: checkId(input.fixedCustomerId, 'fixedCustomerId', 'Fixed Customer ID'), source: 'fixed' };
    case 'insecureRawId': {
      const name = variableName(input.rawIdVariable, DEFAULT_RAW_ID_VARIABLE, 'rawIdVariable');
      const raw = input.vars?.[name];
      if (raw === undefined || raw === null || raw === '') throw new ValidationError(`No customer id was sent in variable "${name}"`, { field: name });
      const id = checkId(raw, name, `Variable "${name}"`);
      input.logger?.warn(
        `[flowise-billing] INSECURE: customer "${id}" taken from the unsigned request variable "${name}"; any caller can bill any customer. Use a billing token in production.`,
      );
      return { customerId: id, source: 'insecureRawId' };
    }
    default:
      throw new ValidationError(`Unknown customer source "${String(input.source)}"; expected one of ${CUSTOMER_SOURCES.join(', ')}`, { field: 'customerSource' });
  }
}
