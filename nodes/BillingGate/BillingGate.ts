import { recordUnauthorizedRun, z } from '../../src/plugin';
import { ON_REFUSAL_INPUT, withState } from '../shared/agentflow';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, parseInputs } from '../shared/inputs';
import { customerFor } from '../shared/customer';
import { openPredictionRun, predictionCredential, predictionRunKey } from '../shared/prediction-run';
import { admissionInputs, admissionSchema, refusalMessageInputs, refusalMessages, refusalMessageSchema } from '../shared/admission';

/**
 * Billing Gate (Agentflow v2): the Quota Guard checks at the start of an
 * agentflow, without charging (the run fee is reserved with the first paid
 * step). On refusal the prediction's run is refused, so every metered step
 * after the gate answers with the operator's message (HTTP 200) instead of
 * running; the refusal is also written to flow state for a Condition node.
 */
class BillingGate implements INode {
  label = 'Billing Gate';
  name = 'billingGateAgentflow';
  version = 1.0;
  type = 'BillingGate';
  icon = 'billinggate.svg';
  category = 'Agent Flows';
  color = '#0F766E';
  description = 'Checks the customer’s quota, budget and balance before the rest of the flow runs (the run fee is taken with the first paid step)';
  baseClasses = ['BillingGate'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    ...customerInputs(),
    ...admissionInputs(),
    ON_REFUSAL_INPUT,
    ...refusalMessageInputs(),
  ];

  async run(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<ICommonObject> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await predictionCredential(this, nodeData, options, input);
    const logger = loggerOf(options);
    const messages = refusalMessages(i);
    const who = customerFor(i, cred, nodeData, options, logger, messages);
    // The prediction's run, shared with the metered models, tools and Charge nodes after the gate (same key).
    const run = await openPredictionRun(this, cred, who, nodeData, options, input, logger, {
      runFee: i.runFee === 'none' ? null : { item: i.runFee, quantity: i.runFeeQuantity ?? '1' },
      checkSessions: i.checkSessions,
      messages,
    });
    // Checks only: the fee is reserved with the first paid step (a metered model call, a metered tool, Charge),
    // so a first step that cannot be held costs nothing. A refusal is sticky: every later metered step of this
    // prediction answers it without the provider or the ledger.
    const refusal = await run.precheck(i.minimumBalanceUsd ?? '0');
    if ('error' in who) await recordUnauthorizedRun({ ledgerDatabase: cred.ledgerDatabase, runKey: predictionRunKey(options, input), customerId: null, error: who.error });
    const customerId = 'customerId' in who ? who.customerId : null;
    const billing = refusal
      ? { allowed: false, customerId, refusal: refusal.kind, code: refusal.code }
      : { allowed: true, customerId, runFee: i.runFee, runFeeCharged: 'with the first paid step' };
    // "stop" never throws (Flowise answers a thrown error with HTTP 500): the refusal is this node's content and
    // the prediction's answer, since the metered nodes after it answer the same refusal (see README, "Refusals are answers").
    return {
      id: nodeData.id,
      name: this.name,
      input: { question: input },
      output: { content: refusal ? refusal.message : '', billing },
      state: withState(options, {
        billingRefused: !!refusal,
        billingRefusal: refusal ? refusal.kind : '',
        billingMessage: refusal ? refusal.message : '',
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
