import { chatflowLangfuse } from '../shared/analytics';
import { BillingRefusalHandler, attachHandler, DEFAULT_REFUSAL_MESSAGES, sharedLedger, stepHandler } from '../../src/plugin';
import { customerFor } from '../shared/customer';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, ledgerCredential, parseInputs, textSchema } from '../shared/inputs';
import { z } from '../../src/plugin';

/**
 * Metered Chat Model: takes any chat model and gives the same model back with
 * the billing handler attached. Every call is held at its maximum cost
 * (prompt + max output tokens at the model's rate-card prices) before it
 * reaches the provider and settled with the reported usage after.
 */
class MeteredChatModel implements INode {
  label = 'Metered Chat Model';
  name = 'meteredChatModel';
  version = 1.0;
  type = 'MeteredChatModel';
  icon = 'meteredchatmodel.svg';
  category = 'Billing';
  description = 'Wraps a chat model: holds each call’s maximum cost before it runs and charges the actual tokens after';
  baseClasses = ['MeteredChatModel', 'BaseChatModel', 'BaseLanguageModel', 'Runnable'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    { label: 'Chat Model', name: 'model', type: 'BaseChatModel' },
    ...customerInputs(),
    {
      label: 'Max Output Tokens Held',
      name: 'maxOutputTokensCap',
      type: 'number',
      default: 4096,
      optional: true,
      additionalParams: true,
      description: 'Output tokens reserved for a call that sets no max tokens',
    },
    { label: 'Usage Category', name: 'usageCategory', type: 'string', optional: true, additionalParams: true },
    { label: 'Cost Center', name: 'costCenter', type: 'string', optional: true, additionalParams: true },
    { label: 'Refusal Message', name: 'refusalMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unauthorized, optional: true, additionalParams: true },
  ];

  async init(nodeData: INodeData, _input: string, options: ICommonObject = {}): Promise<unknown> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const model = nodeData.inputs?.model;
    if (!model || typeof model !== 'object' || typeof (model as { invoke?: unknown }).invoke !== 'function') {
      throw new Error(`${this.label}: connect a chat model to input "Chat Model"`);
    }
    const cred = await ledgerCredential(this, nodeData, options);
    const logger = loggerOf(options);
    const who = customerFor(i, cred, nodeData, options, logger, { unauthorized: i.refusalMessage });
    if ('refusal' in who) return attachHandler(model, new BillingRefusalHandler(who.refusal.message));
    const { ledger } = await sharedLedger(cred.ledgerDatabase);
    const handler = stepHandler({
      ledger,
      customerId: who.customerId,
      conversationId: String(options.chatId ?? options.sessionId ?? nodeData.id),
      maxOutputTokensCap: i.maxOutputTokensCap,
      usageCategory: i.usageCategory,
      costCenter: i.costCenter,
      actor: `node:${this.name}`,
      langfuse: await chatflowLangfuse(options),
      onError: (error, context) => logger.warn(`[flowise-billing] ${String(context.operation ?? 'metering')} failed: ${(error as Error)?.message ?? error}`),
    });
    return attachHandler(model, handler);
  }
}

const inputSchema = {
  ...customerSchema,
  maxOutputTokensCap: z.preprocess((v) => (v === '' || v == null ? 4096 : typeof v === 'string' ? Number(v) : v), z.number().int('must be a whole number').positive().max(10_000_000)),
  usageCategory: textSchema,
  costCenter: textSchema,
  refusalMessage: textSchema,
};

export const nodeClass = MeteredChatModel;
