import { BILLABLES, billingMetadata, DECIMAL_PATTERN, chargeStep, DEFAULT_REFUSAL_MESSAGES, formatUsd, refusalFor, sharedLedger, z } from '../../src/plugin';
import { traceCharge } from '../shared/analytics';
import { customerFor } from '../shared/customer';
import { executionKey, lastAssistantText, ON_REFUSAL_OPTIONS, withState } from '../shared/agentflow';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { billableSchema, customerInputs, customerSchema, LEDGER_CREDENTIAL, ledgerCredential, parseInputs, textSchema } from '../shared/inputs';

/**
 * Charge (Agentflow v2): charges a ChargeType (or resource) × quantity once per
 * execution and node. The quantity may reference an earlier node's output,
 * e.g. {{ llmAgentflow_0.output.usageMetadata.total_tokens }}. It passes the
 * reply on, so it can be the last node of a flow.
 */
class Charge implements INode {
  label = 'Charge';
  name = 'chargeAgentflow';
  version = 1.0;
  type = 'Charge';
  icon = 'charge.svg';
  category = 'Agent Flows';
  color = '#F59E0B';
  description = 'Charges the customer a Charge Type × quantity (which may come from an earlier node’s output), once per execution';
  baseClasses = ['Charge'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    {
      label: 'Charge Type',
      name: 'chargeType',
      type: 'options',
      options: BILLABLES.map((b) => ({ label: b, name: b })),
      default: 'ObjectGenerator',
      description: 'A ChargeType, or a resource (tokens, compute in ms… as the rate card defines)',
    },
    {
      label: 'Quantity',
      name: 'quantity',
      type: 'string',
      default: '1',
      acceptVariable: true,
      placeholder: '{{ llmAgentflow_0.output.usageMetadata.total_tokens }}',
      description: 'A number, or a reference to an earlier node’s output',
    },
    {
      label: 'Reply',
      name: 'reply',
      type: 'string',
      rows: 3,
      optional: true,
      acceptVariable: true,
      placeholder: '{{ llmAgentflow_0 }}',
      description: 'What this node passes on as its output (empty: the latest assistant message)',
    },
    ...customerInputs(),
    { label: 'On Refusal', name: 'onRefusal', type: 'options', options: ON_REFUSAL_OPTIONS, default: 'stop' },
    { label: 'Insufficient Funds Message', name: 'insufficientFundsMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.insufficientFunds, optional: true },
    { label: 'Unauthorized Message', name: 'unauthorizedMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unauthorized, optional: true },
  ];

  async run(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<ICommonObject> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await ledgerCredential(this, nodeData, options);
    const logger = loggerOf(options);
    const messages = { insufficientFunds: i.insufficientFundsMessage, unauthorized: i.unauthorizedMessage };
    const reply = i.reply ?? lastAssistantText(options);
    const who = customerFor(i, cred, nodeData, options, logger, messages);
    let billing: Record<string, unknown>;
    let refusal: { kind: string; message: string } | null = null;
    if ('refusal' in who) {
      refusal = who.refusal;
      billing = { charged: false, code: who.refusal.code };
    } else {
      try {
        const { charge, quote } = await chargeStep({
          handle: await sharedLedger(cred.ledgerDatabase),
          customerId: who.customerId,
          item: i.chargeType,
          quantity: i.quantity,
          idempotencyKey: executionKey('charge', options, nodeData.id),
          actor: `node:${this.name}`,
          metadata: { chatflowId: options.chatflowid, chatId: options.chatId, apiMessageId: options.apiMessageId, nodeId: nodeData.id },
        });
        billing = { charged: true, customerId: who.customerId, chargeId: charge.id, item: quote.item, quantity: quote.quantity, amountUsd: formatUsd(charge.amount), rateCardVersion: quote.rateCardVersion };
        traceCharge(options, {
          chargeId: charge.id,
          name: `billing:${quote.item}`,
          unit: quote.unit,
          quantity: quote.quantity,
          costUsd: formatUsd(charge.amount),
          at: new Date(),
          metadata: {
            ...billingMetadata({ customerId: who.customerId, conversationId: String(options.chatId ?? ''), rateCardVersion: quote.rateCardVersion, balanceAfter: charge.balanceAfter }),
            billing_charge_type: quote.item,
            billing_quantity: quote.quantity,
          },
        });
      } catch (e) {
        refusal = refusalFor(e, messages);
        logger.warn(`[flowise-billing] ${this.name}: charge refused (${refusal.kind}, customer ${who.customerId})`);
        billing = { charged: false, customerId: who.customerId, code: (e as { code?: string })?.code ?? 'INTERNAL_ERROR' };
      }
    }
    if (refusal && i.onRefusal === 'stop') throw new Error(refusal.message);
    return {
      id: nodeData.id,
      name: this.name,
      input: { question: input, quantity: i.quantity },
      output: { content: refusal ? refusal.message : reply, billing },
      state: refusal ? withState(options, { billingRefused: true, billingRefusal: refusal.kind, billingMessage: refusal.message }) : withState(options, {}),
    };
  }
}

const inputSchema = {
  ...customerSchema,
  chargeType: billableSchema('ObjectGenerator', false),
  // After variable resolution: a number or a numeric string (a reference that resolved to nothing is named here).
  quantity: z.preprocess(
    (v) => (typeof v === 'number' ? String(v) : typeof v === 'string' ? v.replace(/<[^>]*>/g, '').trim() : v),
    z.string({ required_error: 'is required' }).regex(DECIMAL_PATTERN, 'must resolve to a non-negative number (check the referenced node output)'),
  ),
  reply: z.preprocess((v) => (v === '' || v == null ? undefined : typeof v === 'string' ? v : JSON.stringify(v)), z.string().optional()),
  onRefusal: z.preprocess((v) => (v === '' || v == null ? 'stop' : v), z.enum(['stop', 'state'])),
  insufficientFundsMessage: textSchema,
  unauthorizedMessage: textSchema,
};

export const nodeClass = Charge;
