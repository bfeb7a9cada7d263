/**
 * Metered variants of Flowise's own chat models and tools ("ChatOpenAI
 * (metered)", "Calculator (metered)"). The installer writes, next to each chat
 * model and tool node of flowise-components, a file that hands that node's
 * module to `meteredModelModule` / `meteredToolModule` (src/installer/variants.ts).
 *
 * A variant is a subclass: same category (so Agentflow v2's LLM, Agent and
 * Condition Agent nodes list the model, the Agent node lists the tool, and
 * chatflows connect them wherever the original goes), the provider's own inputs
 * and credential, plus the billing form. Its `init` builds the original with the
 * original's code, then meters the instance: every call is paid before the
 * provider is reached, and a refusal is the call's answer, never a throw.
 */
import { CUSTOMER_KEY_VARIABLE, customerKeyFor } from './byok';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from './flowise';
import { billableSchema, MAX_OUTPUT_TOKENS_INPUT, maxOutputTokensSchema, parseInputs, quantitySchema, textSchema } from './inputs';
import { meterModel } from './metered-model';
import { meterTool } from './metered-tool';
import { listBillingLedgers, predictionRun, runInputs, runSchema } from './prediction-run';
import { BILLABLES } from '../../src/plugin';

export const VARIANT_NAME_SUFFIX = 'Metered';
export const VARIANT_LABEL_SUFFIX = ' (metered)';

type LoadMethod = (nodeData: unknown, options: ICommonObject) => Promise<unknown>;
type NodeInstance = INode & ICommonObject & { loadMethods?: Record<string, LoadMethod>; tags?: string[] };
type NodeClass = new () => NodeInstance;

/** The base class of a node module when it is a node of `category` that a variant can wrap. */
function baseOf(mod: { nodeClass?: unknown } | undefined, category: string): NodeClass | null {
  const Base = mod?.nodeClass as NodeClass | undefined;
  if (typeof Base !== 'function') return null;
  try {
    const probe = new Base();
    if (probe.category !== category || probe.tags?.includes('LlamaIndex') || typeof probe.init !== 'function') return null;
    if (probe.name.endsWith(VARIANT_NAME_SUFFIX)) return null;
  } catch {
    return null;
  }
  return Base;
}

/** Renames and extends a variant instance's form (called from its constructor). */
function decorate(node: NodeInstance, what: string, inputs: INodeParams[]): void {
  node.label = `${node.label}${VARIANT_LABEL_SUFFIX}`;
  node.name = `${node.name}${VARIANT_NAME_SUFFIX}`;
  node.description = `${node.description ?? ''} Metered: each ${what} is paid from the customer's balance before it runs.`.trim();
  node.inputs = [...(node.inputs ?? []), ...inputs];
  node.loadMethods = { ...(node.loadMethods ?? {}), listBillingLedgers };
}

// ---- chat models -------------------------------------------------------------

const modelSchema = {
  ...runSchema,
  customerKeyVariable: textSchema,
  maxOutputTokensCap: maxOutputTokensSchema,
};

function modelInputs(): INodeParams[] {
  return [
    ...runInputs(),
    {
      label: 'Customer Key Variable',
      name: 'customerKeyVariable',
      type: 'string',
      default: CUSTOMER_KEY_VARIABLE,
      optional: true,
      additionalParams: true,
      description: 'Override variable carrying the customer’s own provider key (bring your own key; enable it under API → Override Config → Variables). Used for this prediction only, never stored or logged.',
    },
    MAX_OUTPUT_TOKENS_INPUT,
  ];
}

/** The module a generated chat-model variant file exports: `{ nodeClass }`, or `{}` (Flowise skips it). */
export function meteredModelModule(mod: { nodeClass?: unknown } | undefined): { nodeClass?: NodeClass } {
  const Base = baseOf(mod, 'Chat Models');
  if (!Base) return {};
  class MeteredModel extends Base {
    constructor() {
      super();
      decorate(this, 'model call', modelInputs());
      this.baseClasses = [...new Set([...(this.baseClasses ?? []), 'MeteredChatModel'])];
    }
    override async init(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<unknown> {
      const i = parseInputs(this, modelSchema, nodeData.inputs);
      const logger = loggerOf(options);
      // Bring your own key: taken out of the prediction's variables before anything else sees or stores them.
      const key = customerKeyFor(this, nodeData, i.customerKeyVariable);
      const providerData = key ? { ...nodeData, inputs: { ...nodeData.inputs, [key.param]: key.value } } : nodeData;
      const model = await super.init!(providerData, input, options);
      const run = await predictionRun(this, i, nodeData, options, input, logger, { maxOutputTokensCap: i.maxOutputTokensCap });
      return meterModel(model, { meter: run, nodeKey: nodeData.id, usesCustomerKey: key !== null });
    }
  }
  return { nodeClass: MeteredModel };
}

// ---- tools -------------------------------------------------------------------

const toolSchema = {
  ...runSchema,
  toolChargeType: billableSchema('ObjectTransformer', false),
  toolQuantity: quantitySchema,
};

function toolInputs(): INodeParams[] {
  return [
    {
      label: 'Charge per Call',
      name: 'toolChargeType',
      type: 'options',
      options: BILLABLES.map((b) => ({ label: b, name: b })),
      default: 'ObjectTransformer',
      description: 'What one call of this tool costs: a ChargeType (or resource) at the active rate card',
    },
    { label: 'Quantity per Call', name: 'toolQuantity', type: 'string', default: '1', optional: true },
    ...runInputs(),
  ];
}

/** The module a generated tool variant file exports: `{ nodeClass }`, or `{}` (Flowise skips it). */
export function meteredToolModule(mod: { nodeClass?: unknown } | undefined): { nodeClass?: NodeClass } {
  const Base = baseOf(mod, 'Tools');
  if (!Base) return {};
  class MeteredToolVariant extends Base {
    constructor() {
      super();
      decorate(this, 'tool call', toolInputs());
    }
    override async init(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<unknown> {
      const i = parseInputs(this, toolSchema, nodeData.inputs);
      const tool = await super.init!(nodeData, input, options);
      const run = await predictionRun(this, i, nodeData, options, input, loggerOf(options));
      const price = { item: i.toolChargeType, quantity: i.toolQuantity ?? '1' };
      // A toolkit node returns several tools: each is metered.
      return Array.isArray(tool) ? tool.map((t) => meterTool(t, { meter: run, nodeKey: nodeData.id, price })) : meterTool(tool, { meter: run, nodeKey: nodeData.id, price });
    }
  }
  return { nodeClass: MeteredToolVariant };
}
