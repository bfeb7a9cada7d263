import { admitFlowRun, billingMetadata, formatUsd, z } from '../../src/plugin';
import { traceCharge, traceMetadata } from '../shared/analytics';
import { executionKey, ON_REFUSAL_OPTIONS, withState } from '../shared/agentflow';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, ledgerCredential, parseInputs } from '../shared/inputs';
import { identityOf } from '../shared/customer';
import { admissionInputs, admissionSchema, refusalMessageInputs, refusalMessages, refusalMessageSchema } from '../shared/admission';

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
    ...admissionInputs(),
    { label: 'On Refusal', name: 'onRefusal', type: 'options', options: ON_REFUSAL_OPTIONS, default: 'stop' },
    ...refusalMessageInputs(),
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
      messages: refusalMessages(i),
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
  ...admissionSchema,
  onRefusal: z.preprocess((v) => (v === '' || v == null ? 'stop' : v), z.enum(['stop', 'state'])),
  ...refusalMessageSchema,
};

export const nodeClass = BillingGate;
