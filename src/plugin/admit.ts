import { BillingError } from '../errors';
import { parseUsd } from '../money';
import { recordRefusedRun } from '../webhooks/events';
import { type ResolveCustomerInput, resolveCustomer, type WarnLogger } from '../identity/customer';
import { type GuardRunResult, guardRun, type RunFee } from './guard';
import { type Refusal, type RefusalKind, refusalFor } from './refusal';
import { sharedLedger } from './ledgers';

export interface AdmitInput {
  /** From the Billing Ledger credential. */
  readonly ledgerDatabase?: string;
  readonly identity: Omit<ResolveCustomerInput, 'logger'>;
  readonly conversationId: string;
  readonly runKey: string;
  readonly runFee: RunFee | null;
  /** USD decimal string; default "0". */
  readonly minimumBalanceUsd?: string;
  readonly checkSessions: boolean;
  readonly actor: string;
  readonly messages?: Partial<Record<RefusalKind, string>>;
  readonly logger?: WarnLogger & { error?(m: string): void };
  readonly metadata?: Record<string, unknown>;
}

export type AdmitOutcome = { readonly ok: true; readonly customerId: string; readonly result: GuardRunResult } | { readonly ok: false; readonly customerId: string | null; readonly refusal: Refusal };

/**
 * Everything a guard node does before a run: resolve the customer (token,
 * workspace, organisation, fixed), open the shared ledger, check funds, admit
 * the session, charge the run fee. Never throws for a refusal: it returns the
 * operator's message, and logs the cause (customer and code only).
 */
/** run.refused for a refused identity; best effort (the refusal is the answer either way). */
async function recordUnauthorized(input: AdmitInput, customerId: string | null, error: BillingError): Promise<void> {
  await recordUnauthorizedRun({ ledgerDatabase: input.ledgerDatabase, runKey: input.runKey, customerId, error });
}

/** The `run.refused` event for a prediction whose caller could not be identified (guard nodes); best effort. */
export async function recordUnauthorizedRun(i: { ledgerDatabase?: string; runKey: string; customerId: string | null; error: unknown }): Promise<void> {
  if (!(i.error instanceof BillingError) || i.error.code !== 'UNAUTHORIZED') return;
  try {
    const { ledger } = await sharedLedger(i.ledgerDatabase);
    await recordRefusedRun(ledger.dialect, i);
  } catch {
    // The ledger being down already made this run's answer; nothing else to do.
  }
}

export async function admitFlowRun(input: AdmitInput): Promise<AdmitOutcome> {
  let customerId: string | null = null;
  try {
    customerId = resolveCustomer({ ...input.identity, logger: input.logger }).customerId;
    const handle = await sharedLedger(input.ledgerDatabase);
    const result = await guardRun({
      handle,
      customerId,
      conversationId: input.conversationId,
      runKey: input.runKey,
      runFee: input.runFee,
      minimumAvailable: parseUsd(input.minimumBalanceUsd ?? '0', { field: 'minimumBalanceUsd' }),
      checkSessions: input.checkSessions,
      actor: input.actor,
      metadata: input.metadata,
    });
    return { ok: true, customerId, result };
  } catch (e) {
    const refusal = refusalFor(e, input.messages);
    const line = `[flowise-billing] ${input.actor}: run refused (${refusal.code}${customerId ? `, customer ${customerId}` : ''})`;
    if (refusal.kind === 'unavailable') (input.logger?.error ?? input.logger?.warn)?.call(input.logger, `${line}: ${(e as Error)?.message ?? String(e)}`);
    else input.logger?.warn(line);
    if (refusal.code === 'UNAUTHORIZED' && e instanceof BillingError) await recordUnauthorized(input, customerId, e);
    return { ok: false, customerId, refusal };
  }
}
