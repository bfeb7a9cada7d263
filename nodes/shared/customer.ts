import { type CustomerSource, refusalFor, type Refusal, resolveCustomer } from '../../src/plugin';
import type { ICommonObject, INodeData, Logger } from './flowise';
import { type LedgerCredential, varsOf } from './inputs';

/** Resolves the customer from a node's identity inputs and the prediction's options; a failure becomes a refusal, not a throw. */
export function customerFor(
  i: { customerSource: CustomerSource; tokenVariable?: string; fixedCustomerId?: string; rawIdVariable?: string },
  cred: LedgerCredential,
  nodeData: INodeData,
  options: ICommonObject,
  logger: Logger,
  messages?: Parameters<typeof refusalFor>[1],
): { customerId: string } | { refusal: Refusal } {
  try {
    return {
      customerId: resolveCustomer({
        source: i.customerSource,
        vars: varsOf(nodeData),
        tokenVariable: i.tokenVariable,
        tokenSecret: cred.tokenSecret,
        workspaceId: options.workspaceId,
        orgId: options.orgId,
        fixedCustomerId: i.fixedCustomerId,
        rawIdVariable: i.rawIdVariable,
        logger,
      }).customerId,
    };
  } catch (e) {
    const refusal = refusalFor(e, messages);
    logger.warn(`[flowise-billing] ${nodeData.name ?? 'node'}: customer not resolved (${refusal.code})`);
    return { refusal };
  }
}
