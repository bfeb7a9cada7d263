import { type CustomerSource, MIN_SECRET_BYTES, refusalFor, type Refusal, type ResolveCustomerInput, resolveCustomer, ValidationError } from '../../src/plugin';
import type { ICommonObject, INodeData, Logger } from './flowise';
import { type LedgerCredential, varsOf } from './inputs';

type IdentityInputs = { customerSource: CustomerSource; tokenVariable?: string; fixedCustomerId?: string; rawIdVariable?: string };

/** What identifies the customer of this prediction: the node's chosen source plus what Flowise itself knows (never a raw request field unless the insecure source was chosen). */
export function identityOf(i: IdentityInputs, cred: LedgerCredential, nodeData: INodeData, options: ICommonObject): Omit<ResolveCustomerInput, 'logger'> {
  return {
    source: i.customerSource,
    vars: varsOf(nodeData),
    tokenVariable: i.tokenVariable,
    tokenSecret: cred.tokenSecret,
    workspaceId: options.workspaceId,
    orgId: options.orgId,
    fixedCustomerId: i.fixedCustomerId,
    rawIdVariable: i.rawIdVariable,
  };
}

/** Resolves the customer from a node's identity inputs and the prediction's options; a failure becomes a refusal, not a throw. */
export function customerFor(
  i: IdentityInputs,
  cred: LedgerCredential,
  nodeData: INodeData,
  options: ICommonObject,
  logger: Logger,
  messages?: Parameters<typeof refusalFor>[1],
): { customerId: string } | { refusal: Refusal; error: unknown } {
  // A setting, checked before any token: a short secret refused every token-carrying run as "unavailable".
  if (i.customerSource === 'billingToken' && cred.tokenSecret && Buffer.byteLength(cred.tokenSecret, 'utf8') < MIN_SECRET_BYTES) {
    throw new ValidationError(`${nodeData.label ?? nodeData.name ?? 'node'}: the Billing Ledger credential's Billing Token Secret must be at least ${MIN_SECRET_BYTES} bytes long`, { field: 'billingTokenSecret' });
  }
  try {
    return {
      customerId: resolveCustomer({ ...identityOf(i, cred, nodeData, options), logger }).customerId,
    };
  } catch (e) {
    const refusal = refusalFor(e, messages);
    // The reason names a check or a setting (never a token, a secret or the id sent).
    logger.warn(`[flowise-billing] ${nodeData.name ?? 'node'}: customer not resolved (${refusal.code}: ${e instanceof Error ? e.message : String(e)})`);
    return { refusal, error: e };
  }
}
