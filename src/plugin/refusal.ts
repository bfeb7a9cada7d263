import { BillingError } from '../errors';
import { BillingTokenError } from '../identity/token';

/**
 * Refusals as the end user sees them: one closed set of kinds, the operator's
 * message per kind (a template), and a machine-readable marker an API client
 * can use to tell a refusal from an answer. A refusal never carries engine
 * text, customer ids or amounts unless the operator's template asks for them.
 */
export const REFUSAL_KINDS = ['insufficientFunds', 'quotaExceeded', 'budgetExceeded', 'unauthorized', 'byokRequired', 'unavailable'] as const;
export type RefusalKind = (typeof REFUSAL_KINDS)[number];

export const DEFAULT_REFUSAL_MESSAGES: Readonly<Record<RefusalKind, string>> = {
  insufficientFunds: 'InsufficientFunds: your balance is too low for this request. Please top up your account.',
  quotaExceeded: 'QuotaExceeded: you have used all conversations included in your plan for this period.',
  budgetExceeded: 'BudgetExceeded: your monthly spending limit has been reached.',
  unauthorized: 'Unauthorized: this request carries no valid billing token.',
  byokRequired: 'Your plan requires your own model API key. Please add your key and try again.',
  unavailable: 'Billing is temporarily unavailable. Please try again later.',
};

/** The operator's message per kind; a missing or blank one falls back to the default. */
export type RefusalTemplates = Partial<Record<RefusalKind, string | undefined>>;

/** Placeholders a template may use; anything else in braces is left as written. */
export const REFUSAL_PLACEHOLDERS = ['availableUsd', 'requiredUsd', 'plan', 'sessionsUsed', 'sessionsLimit', 'periodEnd', 'budgetUsd', 'spentUsd', 'customerId'] as const;
export type RefusalPlaceholder = (typeof REFUSAL_PLACEHOLDERS)[number];

/** The key under which the marker travels in JSON (a response field, message metadata, flow state). */
export const REFUSAL_MARKER_KEY = 'billing_refusal';

/** Machine-readable: `type` is always "billing_refusal"; `kind` is from REFUSAL_KINDS; `code` is the BillingError code. */
export interface RefusalMarker {
  readonly type: 'billing_refusal';
  readonly kind: RefusalKind;
  readonly code: string;
}

export interface Refusal {
  readonly kind: RefusalKind;
  /** The BillingError code behind it (DATABASE_ERROR etc. for `unavailable`). */
  readonly code: string;
  /** The operator's template, rendered. */
  readonly message: string;
  readonly marker: RefusalMarker;
}

/** Replaces `{name}` for the known placeholders that have a value; unknown or missing ones stay as written. */
export function renderRefusal(template: string, values: Partial<Record<RefusalPlaceholder, string | number | null>>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => {
    if (!(REFUSAL_PLACEHOLDERS as readonly string[]).includes(name)) return whole;
    const v = values[name as RefusalPlaceholder];
    return v === undefined || v === null ? whole : String(v);
  });
}

function kindOf(e: unknown): { kind: RefusalKind; code: string } {
  if (e instanceof BillingTokenError) return { kind: 'unauthorized', code: 'UNAUTHORIZED' };
  const code = e instanceof BillingError ? e.code : 'INTERNAL_ERROR';
  switch (code) {
    case 'INSUFFICIENT_FUNDS':
      return { kind: 'insufficientFunds', code };
    case 'QUOTA_EXCEEDED':
    case 'SUBSCRIPTION_INACTIVE':
      return { kind: 'quotaExceeded', code };
    case 'BUDGET_EXCEEDED':
      return { kind: 'budgetExceeded', code };
    case 'UNAUTHORIZED':
    case 'CUSTOMER_NOT_FOUND':
      return { kind: 'unauthorized', code };
    case 'BYOK_REQUIRED':
      return { kind: 'byokRequired', code };
    default:
      return { kind: 'unavailable', code };
  }
}

/**
 * Maps any error from resolution, admission or a step to what the end user
 * sees. Business refusals get the operator's message; anything else (database
 * down, a bug) fails closed as `unavailable`, never with internals.
 */
export function refusalFor(e: unknown, templates: RefusalTemplates = {}): Refusal {
  const { kind, code } = kindOf(e);
  const d = e instanceof BillingError ? e.details : {};
  const pick = (k: string) => (typeof d[k] === 'string' || typeof d[k] === 'number' ? (d[k] as string | number) : undefined);
  const template = templates[kind]?.trim() ? templates[kind]!.trim() : DEFAULT_REFUSAL_MESSAGES[kind];
  const message = renderRefusal(template, {
    availableUsd: pick('availableUsd'),
    requiredUsd: pick('requiredUsd'),
    plan: pick('plan') ?? pick('tier'),
    sessionsUsed: pick('sessionsUsed'),
    sessionsLimit: pick('sessionsLimit'),
    periodEnd: pick('periodEnd'),
    budgetUsd: pick('budgetUsd'),
    spentUsd: pick('spentUsd'),
    customerId: pick('customerId'),
  });
  return { kind, code, message, marker: { type: 'billing_refusal', kind, code } };
}

/** Whether a JSON value (a response, message metadata) carries a refusal marker, and which. */
export function refusalMarkerOf(value: unknown): RefusalMarker | null {
  const v = value && typeof value === 'object' ? (value as Record<string, unknown>)[REFUSAL_MARKER_KEY] ?? value : null;
  if (!v || typeof v !== 'object') return null;
  const m = v as Record<string, unknown>;
  return m.type === 'billing_refusal' && (REFUSAL_KINDS as readonly string[]).includes(String(m.kind)) && typeof m.code === 'string'
    ? { type: 'billing_refusal', kind: m.kind as RefusalKind, code: m.code }
    : null;
}
