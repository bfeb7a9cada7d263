import { meterModel } from '../shared/metered-model';
import { type FlowRun, openPredictionRun, predictionCredential } from '../shared/prediction-run';
import { customerFor } from '../shared/customer';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, MAX_OUTPUT_TOKENS_INPUT, maxOutputTokensSchema, parseInputs, textSchema, UNAUTHORIZED_MESSAGE_INPUT } from '../shared/inputs';
import { ValidationError } from '../../src/plugin';

/**
 * Metered Chat Model: takes any chat model and gives the same model back,
 * metered in the prediction's run (as the metered variants are): every call is
 * held at its maximum cost before it reaches the provider and settled with the
 * reported usage after; a refused call answers with the operator's message.
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
    MAX_OUTPUT_TOKENS_INPUT,
    { label: 'Usage Category', name: 'usageCategory', type: 'string', optional: true, additionalParams: true },
    { label: 'Cost Center', name: 'costCenter', type: 'string', optional: true, additionalParams: true },
    UNAUTHORIZED_MESSAGE_INPUT,
  ];

  async init(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<unknown> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const model = nodeData.inputs?.model;
    if (!model || typeof model !== 'object' || typeof (model as { invoke?: unknown }).invoke !== 'function') {
      throw new ValidationError(`${this.label}: connect a chat model to input "Chat Model"`, { field: 'model' });
    }
    const cred = await predictionCredential(this, nodeData, options, input);
    const logger = loggerOf(options);
    const who = customerFor(i, cred, nodeData, options, logger, { unauthorized: i.refusalMessage });
    let run: Promise<FlowRun> | undefined;
    // The prediction's run (a Quota Guard before it opened the same one, with its fee and messages);
    // a refused call answers with the operator's message instead of throwing (HTTP 200).
    return meterModel(model, {
      nodeKey: nodeData.id,
      usesCustomerKey: false,
      meter: () =>
        (run ??= openPredictionRun(this, cred, who, nodeData, options, input, logger, {
          runFee: null,
          checkSessions: false,
          messages: { unauthorized: i.refusalMessage },
          maxOutputTokensCap: i.maxOutputTokensCap,
          metadata: { ...(i.usageCategory ? { usageCategory: i.usageCategory } : {}), ...(i.costCenter ? { costCenter: i.costCenter } : {}) },
        })),
    });
  }
}

const inputSchema = {
  ...customerSchema,
  maxOutputTokensCap: maxOutputTokensSchema,
  usageCategory: textSchema,
  costCenter: textSchema,
  refusalMessage: textSchema,
};

export const nodeClass = MeteredChatModel;
