import { type Billable, isChargeTypeName, ValidationError, z } from '../../src/plugin';
import { meterTool } from '../shared/metered-tool';
import { type FlowRun, openPredictionRun, predictionCredential } from '../shared/prediction-run';
import { customerFor } from '../shared/customer';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, parseInputs, quantitySchema, textSchema, UNAUTHORIZED_MESSAGE_INPUT } from '../shared/inputs';
import { CHARGE_TYPES } from '../../src/plugin';

/**
 * Metered Tool: wraps any tool so each call is held before it runs and charged
 * after as `quantity` × the ChargeType's price (released if the tool fails).
 * The tool itself is returned, unchanged apart from its callbacks, so agents
 * use it as before.
 */
class MeteredTool implements INode {
  label = 'Metered Tool';
  name = 'meteredTool';
  version = 1.0;
  type = 'MeteredTool';
  icon = 'meteredtool.svg';
  category = 'Billing';
  description = 'Wraps a tool: every call is charged a ChargeType × quantity (held before, settled after, released on error)';
  baseClasses = ['MeteredTool', 'Tool', 'StructuredTool', 'Runnable'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    { label: 'Tool', name: 'tool', type: 'Tool' },
    {
      label: 'Charge Type',
      name: 'chargeType',
      type: 'options',
      options: CHARGE_TYPES.map((c) => ({ label: c, name: c })),
      default: 'ObjectTransformer',
    },
    { label: 'Quantity per Call', name: 'quantity', type: 'string', default: '1', description: 'Units of the Charge Type per call (e.g. 4 images)' },
    ...customerInputs(),
    UNAUTHORIZED_MESSAGE_INPUT,
  ];

  async init(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<unknown> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const tool = nodeData.inputs?.tool;
    const toolName = tool && typeof tool === 'object' ? (tool as { name?: unknown }).name : undefined;
    if (typeof toolName !== 'string' || !toolName) throw new ValidationError(`${this.label}: connect a tool to input "Tool"`, { field: 'tool' });
    const cred = await predictionCredential(this, nodeData, options, input);
    const logger = loggerOf(options);
    const who = customerFor(i, cred, nodeData, options, logger, { unauthorized: i.refusalMessage });
    let run: Promise<FlowRun> | undefined;
    // A refused call answers with the operator's message as the tool's output (and the run stays refused).
    return meterTool(tool, {
      nodeKey: nodeData.id,
      price: { item: i.chargeType as Billable, quantity: i.quantity ?? '1' },
      meter: () => (run ??= openPredictionRun(this, cred, who, nodeData, options, input, logger, { runFee: null, checkSessions: false, messages: { unauthorized: i.refusalMessage } })),
    });
  }
}

const inputSchema = {
  ...customerSchema,
  chargeType: z.preprocess((v) => (v === '' || v == null ? 'ObjectTransformer' : v), z.string().refine(isChargeTypeName, `must be one of ${CHARGE_TYPES.join(', ')}`)),
  quantity: quantitySchema,
  refusalMessage: textSchema,
};

export const nodeClass = MeteredTool;
