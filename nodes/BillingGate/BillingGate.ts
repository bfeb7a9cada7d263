import { admitFlowRun, BILLABLES, billingMetadata, DEFAULT_REFUSAL_MESSAGES, formatUsd, z } from '../../src/plugin';
import { traceCharge, traceMetadata } from '../shared/analytics';
import { executionKey, ON_REFUSAL_OPTIONS, withState } from '../shared/agentflow';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { billableSchema, booleanSchema, customerInputs, customerSchema, LEDGER_CREDENTIAL, ledgerCredential, parseInputs, quantitySchema, textSchema, usd } from '../shared/inputs';
import { identityOf } from '../shared/customer';

/**
 * Billing Gate (Agentflow v2): the Quota Guard checks at the start of an
 * agentflow. On refusal it stops the flow with the operator's message, or
 * records the refusal in flow state for a Condition node to route on.
 */
class BillingGate implements INode {
  label = 'Billing Gate';
  name = 'billingGateAgentflow';
  version = 1.0;
  type = 'BillingGate';
  icon = 'billinggate.svg';
  category = 'Agent Flows';
  color = '#0F766E';
  description = 'Checks the customer’s quota, budget and balance and charges the run fee before the rest of the flow runs';
  baseClasses = ['BillingGate'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    ...customerInputs(),
    {
      label: 'Run Fee',
      name: 'runFee',
      type: 'options',
      options: [{ label: 'None', name: 'none' }, ...BILLABLES.map((b) => ({ label: b, name: b }))],
      default: 'PrivateFlowRun',
    },
    { label: 'Run Fee Quantity', name: 'runFeeQuantity', type: 'string', default: '1', optional: true },
    { label: 'Minimum Balance (USD)', name: 'minimumBalanceUsd', type: 'string', default: '0.01', optional: true },
    { label: 'Count Sessions', name: 'checkSessions', type: 'boolean', default: true, optional: true },
    { label: 'On Refusal', name: 'onRefusal', type: 'options', options: ON_REFUSAL_OPTIONS, default: 'stop' },
    { label: 'Insufficient Funds Message', name: 'insufficientFundsMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.insufficientFunds, optional: true },
    { label: 'Quota Exceeded Message', name: 'quotaExceededMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.quotaExceeded, optional: true },
    { label: 'Budget Exceeded Message', name: 'budgetExceededMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.budgetExceeded, optional: true },
    { label: 'Unauthorized Message', name: 'unauthorizedMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unauthorized, optional: true },
    { label: 'Unavailable Message', name: 'unavailableMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unavailable, optional: true },
  ];

  async run(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<ICommonObject> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await ledgerCredential(this, nodeData, options);
    const outcome = await admitFlowRun({
      ledgerDatabase: cred.ledgerDatabase,
      identity: identityOf(i, cred, nodeData, options),
      conversationId: String(options.chatId ?? options.sessionId ?? 'conversation'),
      runKey: executionKey('gate', options, nodeData.id),
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
      logger: loggerOf(options),
      metadata: { chatflowId: options.chatflowid, executionKey: options.apiMessageId, nodeId: nodeData.id },
    });
    if (outcome.ok) {
      const r = outcome.result;
      traceMetadata(options, {
        ...billingMetadata({
          customerId: outcome.customerId,
          conversationId: String(options.chatId ?? ''),
          planTier: r.admission?.tier,
          quotaRemaining: r.admission ? r.admission.sessionsRemaining : undefined,
          available: r.available,
        }),
      });
      if (r.fee) {
        traceCharge(options, {
          chargeId: r.fee.id,
          name: `billing:${r.fee.chargeType}`,
          unit: 'run',
          quantity: r.fee.quantity ?? '1',
          costUsd: formatUsd(r.fee.amount),
          at: new Date(),
          metadata: {
            ...billingMetadata({ customerId: outcome.customerId, rateCardVersion: r.fee.rateCardVersion ?? undefined, balanceAfter: r.fee.balanceAfter }),
            billing_charge_type: r.fee.chargeType,
          },
        });
      }
    }
    if (!outcome.ok && i.onRefusal === 'stop') throw new Error(outcome.refusal.message);
    const billing = outcome.ok
      ? {
          allowed: true,
          customerId: outcome.customerId,
          session: outcome.result.admission?.session ?? null,
          sessionsRemaining: outcome.result.admission?.sessionsRemaining ?? null,
          runFeeUsd: outcome.result.fee ? formatUsd(outcome.result.fee.amount) : '0.00',
          availableUsd: formatUsd(outcome.result.available),
        }
      : { allowed: false, customerId: outcome.customerId, refusal: outcome.refusal.kind, code: outcome.refusal.code };
    return {
      id: nodeData.id,
      name: this.name,
      input: { question: input },
      output: { content: outcome.ok ? '' : outcome.refusal.message, billing },
      state: withState(options, {
        billingRefused: !outcome.ok,
        billingRefusal: outcome.ok ? '' : outcome.refusal.kind,
        billingMessage: outcome.ok ? '' : outcome.refusal.message,
      }),
    };
  }
}

const inputSchema = {
  ...customerSchema,
  runFee: billableSchema('PrivateFlowRun', true),
  runFeeQuantity: quantitySchema,
  minimumBalanceUsd: usd('Minimum Balance'),
  checkSessions: booleanSchema(true),
  onRefusal: z.preprocess((v) => (v === '' || v == null ? 'stop' : v), z.enum(['stop', 'state'])),
  insufficientFundsMessage: textSchema,
  quotaExceededMessage: textSchema,
  budgetExceededMessage: textSchema,
  unauthorizedMessage: textSchema,
  unavailableMessage: textSchema,
};

export const nodeClass = BillingGate;
