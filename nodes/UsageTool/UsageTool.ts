import { sharedLedger, usageTool, z } from '../../src/plugin';
import { customerFor } from '../shared/customer';
import { predictionCredential } from '../shared/prediction-run';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, parseInputs, textSchema } from '../shared/inputs';

/** Usage Tool: lets an agent tell the customer their own usage (sessions, balance, charges). */
class UsageTool implements INode {
  label = 'Usage Tool';
  name = 'billingUsageTool';
  version = 1.0;
  type = 'UsageTool';
  icon = 'usagetool.svg';
  category = 'Billing';
  description = 'Agent tool reporting the customer’s own usage: sessions used/remaining, balance, current charges';
  baseClasses = ['UsageTool', 'Tool', 'StructuredTool', 'Runnable'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [
    ...customerInputs(),
    { label: 'Tool Name', name: 'toolName', type: 'string', default: 'billing_usage', optional: true, additionalParams: true },
    { label: 'Tool Description', name: 'toolDescription', type: 'string', rows: 3, optional: true, additionalParams: true },
  ];

  async init(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<unknown> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await predictionCredential(this, nodeData, options, input);
    const who = customerFor(i, cred, nodeData, options, loggerOf(options));
    if ('refusal' in who) return usageTool({ name: i.toolName, description: i.toolDescription, refusal: who.refusal.message });
    return usageTool({ name: i.toolName, description: i.toolDescription, handle: () => sharedLedger(cred.ledgerDatabase), customerId: who.customerId });
  }
}

const inputSchema = {
  ...customerSchema,
  toolName: z.preprocess((v) => (v === '' || v == null ? undefined : v), z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - only (1–64)').optional()),
  toolDescription: textSchema,
};

export const nodeClass = UsageTool;
