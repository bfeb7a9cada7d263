import { randomUUID } from 'node:crypto';
import { admitFlowRun, BILLABLES, DEFAULT_REFUSAL_MESSAGES } from '../../src/plugin';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { billableSchema, booleanSchema, customerInputs, customerSchema, LEDGER_CREDENTIAL, ledgerCredential, parseInputs, quantitySchema, textSchema, usd } from '../shared/inputs';
import { identityOf } from '../shared/customer';

/**
 * Quota Guard: an input-moderation node for chains and agents. Before the
 * chain runs it resolves the customer, checks the minimum balance, admits the
 * session against the plan's quota and budget, and charges the per-run fee
 * once per prediction. A refusal is thrown as the operator's message, which
 * Flowise returns as the answer.
 */
class QuotaGuard implements INode {
  label = 'Quota Guard';
  name = 'quotaGuard';
  version = 1.0;
  type = 'Moderation';
  icon = 'quotaguard.svg';
  category = 'Billing';
  description = 'Checks the customer’s session quota, budget and balance before the chain runs and charges the per-run fee; refuses with your message';
  baseClasses = ['Moderation'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    ...customerInputs(),
    {
      label: 'Run Fee',
      name: 'runFee',
      type: 'options',
      options: [{ label: 'None', name: 'none' }, ...BILLABLES.map((b) => ({ label: b, name: b }))],
      default: 'PrivateFlowRun',
      description: 'Charged once per prediction, priced by the active rate card',
    },
    { label: 'Run Fee Quantity', name: 'runFeeQuantity', type: 'string', default: '1', optional: true, additionalParams: true },
    {
      label: 'Minimum Balance (USD)',
      name: 'minimumBalanceUsd',
      type: 'string',
      default: '0.01',
      optional: true,
      description: 'Refuse unless this much is available beyond the run fee (covers the first model call)',
    },
    { label: 'Count Sessions', name: 'checkSessions', type: 'boolean', default: true, optional: true, additionalParams: true },
    { label: 'Insufficient Funds Message', name: 'insufficientFundsMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.insufficientFunds, optional: true },
    { label: 'Quota Exceeded Message', name: 'quotaExceededMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.quotaExceeded, optional: true, additionalParams: true },
    { label: 'Budget Exceeded Message', name: 'budgetExceededMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.budgetExceeded, optional: true, additionalParams: true },
    { label: 'Unauthorized Message', name: 'unauthorizedMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unauthorized, optional: true, additionalParams: true },
    { label: 'Unavailable Message', name: 'unavailableMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unavailable, optional: true, additionalParams: true },
  ];

  async init(nodeData: INodeData, _input: string, options: ICommonObject = {}): Promise<{ checkForViolations(input: string): Promise<string> }> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await ledgerCredential(this, nodeData, options);
    const logger = loggerOf(options);
    // init runs once per prediction, so this names the prediction; the fee is charged once under it.
    const runKey = `flowise:${options.chatflowid ?? 'flow'}:${options.chatId ?? 'chat'}:${randomUUID()}:${nodeData.id}`;
    return {
      checkForViolations: async (input: string) => {
        const outcome = await admitFlowRun({
          ledgerDatabase: cred.ledgerDatabase,
          identity: identityOf(i, cred, nodeData, options),
          conversationId: String(options.chatId ?? options.sessionId ?? runKey),
          runKey,
          runFee: i.runFee === 'none' ? null : { item: i.runFee, quantity: i.runFeeQuantity ?? '1' },
          minimumBalanceUsd: i.minimumBalanceUsd,
          checkSessions: i.checkSessions,
          actor: `node:${this.name}`,
          messages: {
            insufficientFunds: i.insufficientFundsMessage,
            quotaExceeded: i.quotaExceededMessage,
            budgetExceeded: i.budgetExceededMessage,
            unauthorized: i.unauthorizedMessage,
            unavailable: i.unavailableMessage,
          },
          logger,
          metadata: { chatflowId: options.chatflowid, chatId: options.chatId, nodeId: nodeData.id },
        });
        if (!outcome.ok) throw new Error(outcome.refusal.message);
        return input;
      },
    };
  }
}

const inputSchema = {
  ...customerSchema,
  runFee: billableSchema('PrivateFlowRun', true),
  runFeeQuantity: quantitySchema,
  minimumBalanceUsd: usd('Minimum Balance'),
  checkSessions: booleanSchema(true),
  insufficientFundsMessage: textSchema,
  quotaExceededMessage: textSchema,
  budgetExceededMessage: textSchema,
  unauthorizedMessage: textSchema,
  unavailableMessage: textSchema,
};

export const nodeClass = QuotaGuard;
