import { BILLABLES, DECIMAL_PATTERN, DEFAULT_REFUSAL_MESSAGES, formatUsd, z } from '../../src/plugin';
import { customerFor } from '../shared/customer';
import { lastAssistantText, ON_REFUSAL_INPUT, withState } from '../shared/agentflow';
import { openPredictionRun, predictionCredential } from '../shared/prediction-run';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { billableSchema, customerInputs, customerSchema, LEDGER_CREDENTIAL, parseInputs, textSchema } from '../shared/inputs';

/**
 * Charge (Agentflow v2): charges a ChargeType (or resource) × quantity once per
 * execution and node, held and settled in the prediction's run (a refused run
 * charges nothing and this node answers the refusal, never an HTTP 500). The quantity may reference an earlier node's output,
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
      description: 'What this node passes on as its output (empty: the latest answer of an LLM or Agent node)',
    },
    ...customerInputs(),
    ON_REFUSAL_INPUT,
    { label: 'Insufficient Funds Message', name: 'insufficientFundsMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.insufficientFunds, optional: true },
    { label: 'Unauthorized Message', name: 'unauthorizedMessage', type: 'string', rows: 2, default: DEFAULT_REFUSAL_MESSAGES.unauthorized, optional: true },
  ];

  async run(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<ICommonObject> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await predictionCredential(this, nodeData, options, input);
    const logger = loggerOf(options);
    const messages = { insufficientFunds: i.insufficientFundsMessage, unauthorized: i.unauthorizedMessage };
    const reply = i.reply ?? lastAssistantText(options);
    const who = customerFor(i, cred, nodeData, options, logger, messages);
    // The prediction's run (the Billing Gate's and the metered models'): this charge is held and settled in it,
    // so the run fee is reserved with it when it is the first paid step, and a refused run charges nothing.
    const run = await openPredictionRun(this, cred, who, nodeData, options, input, logger, { runFee: null, checkSessions: false, messages });
    // A refused run answers its refusal whatever the quantity: the step it references (a refused model) may
    // never have produced that output, and a bad quantity thrown here would be an HTTP 500 instead.
    const quantity = run.refused ? '0' : parseInputs(this, quantityShape, nodeData.inputs).quantity;
    const iteration = options.iterationContext?.index ?? options.iterationContext?.iterationIndex;
    const r = await run.charge({ callKey: `${nodeData.id}${iteration !== undefined ? `:i${iteration}` : ''}:charge`, item: i.chargeType, quantity });
    let billing: Record<string, unknown>;
    let refusal: { kind: string; message: string } | null = null;
    if (r.ok && r.charge) {
      const c = r.charge;
      billing = { charged: true, customerId: 'customerId' in who ? who.customerId : null, chargeId: c.id, item: c.chargeType, quantity: c.quantity, amountUsd: formatUsd(c.amount), rateCardVersion: c.rateCardVersion };
    } else if (r.ok) {
      billing = { charged: false, code: 'UNAVAILABLE' };
    } else {
      refusal = r.refusal;
      billing = { charged: false, code: r.refusal.code };
    }
    // Never thrown: Flowise answers a thrown error with HTTP 500; the refusal is this node's content (the answer when last).
    return {
      id: nodeData.id,
      name: this.name,
      input: { question: input, quantity: typeof nodeData.inputs?.quantity === 'string' || typeof nodeData.inputs?.quantity === 'number' ? nodeData.inputs.quantity : null },
      output: { content: refusal ? refusal.message : reply, billing },
      state: refusal ? withState(options, { billingRefused: true, billingRefusal: refusal.kind, billingMessage: refusal.message }) : withState(options, {}),
    };
  }
}

const inputSchema = {
  ...customerSchema,
  chargeType: billableSchema('ObjectGenerator', false),
  reply: z.preprocess((v) => (v === '' || v == null ? undefined : typeof v === 'string' ? v : JSON.stringify(v)), z.string().optional()),
  onRefusal: z.preprocess((v) => (v === '' || v == null ? 'stop' : v), z.enum(['stop', 'state'])),
  insufficientFundsMessage: textSchema,
  unauthorizedMessage: textSchema,
};

/** Checked once the run is known not to be refused (see run()). */
const quantityShape = {
  // After variable resolution: a number or a numeric string (a reference that resolved to nothing is named here).
  quantity: z.preprocess(
    (v) => (typeof v === 'number' ? String(v) : typeof v === 'string' ? v.replace(/<[^>]*>/g, '').trim() : v),
    z.string({ required_error: 'is required' }).regex(DECIMAL_PATTERN, 'must resolve to a non-negative number (check the referenced node output)'),
  ),
};

export const nodeClass = Charge;
