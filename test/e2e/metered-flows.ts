/**
 * Flows built on the metered variants ("ChatOpenAI (metered)", "Calculator
 * (metered)") the installer generates, the way the UI builds them from the
 * node definitions of the running Flowise (flowNode/connect in flowise-env.mjs).
 */
// @ts-expect-error plain ESM helper without types
import * as env from './flowise-env.mjs';

export interface FlowIds {
  readonly ledger: string;
  readonly openai: string;
}

type Api = { getNode(name: string): Promise<any> };
type Flow = { nodes: any[]; edges: any[] };

/** What the metered model's config holds besides the provider's own settings. */
export function billingConfig(ids: FlowIds, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { billingLedgerCredential: ids.ledger, customerSource: 'billingToken', tokenVariable: 'billingToken', runFee: 'PrivateFlowRun', checkSessions: true, ...extra };
}

function modelConfig(ids: FlowIds, basepath: string, extra: Record<string, unknown>) {
  return {
    modelName: 'gpt-4o-mini',
    temperature: 0,
    streaming: false,
    maxTokens: 64,
    basepath,
    credential: ids.openai,
    FLOWISE_CREDENTIAL_ID: ids.openai,
    ...billingConfig(ids, extra),
  };
}

/** Start → LLM (ChatOpenAI (metered)). */
export async function llmAgentflow(api: Api, ids: FlowIds, basepath: string, extra: Record<string, unknown> = {}): Promise<Flow> {
  const start = env.flowNode(await api.getNode('startAgentflow'), { id: 'startAgentflow_0', position: { x: 0, y: 0 } });
  const llm = env.flowNode(await api.getNode('llmAgentflow'), {
    id: 'llmAgentflow_0',
    position: { x: 300, y: 0 },
    inputs: { llmModel: 'chatOpenAIMetered', llmModelConfig: { llmModel: 'chatOpenAIMetered', ...modelConfig(ids, basepath, extra) }, llmEnableMemory: false, llmMessages: [], llmStructuredOutput: [], llmUpdateState: [] },
  });
  return { nodes: [start, llm], edges: [env.connect(start, llm)] };
}

/** Start → Agent (ChatOpenAI (metered)) with the Calculator (metered) tool. */
export async function toolAgentflow(api: Api, ids: FlowIds, basepath: string, toolPrice = 'ObjectTransformer'): Promise<Flow> {
  const start = env.flowNode(await api.getNode('startAgentflow'), { id: 'startAgentflow_0', position: { x: 0, y: 0 } });
  const agent = env.flowNode(await api.getNode('agentAgentflow'), {
    id: 'agentAgentflow_0',
    position: { x: 300, y: 0 },
    inputs: {
      agentModel: 'chatOpenAIMetered',
      agentModelConfig: { agentModel: 'chatOpenAIMetered', ...modelConfig(ids, basepath, {}) },
      agentTools: [
        {
          agentSelectedTool: 'calculatorMetered',
          agentSelectedToolRequiresHumanInput: false,
          agentSelectedToolConfig: { agentSelectedTool: 'calculatorMetered', toolChargeType: toolPrice, toolQuantity: '1', ...billingConfig(ids) },
        },
      ],
      agentEnableMemory: false,
      agentMessages: [],
      agentStructuredOutput: [],
      agentUpdateState: [],
      agentKnowledgeDocumentStores: [],
      agentKnowledgeVSEmbeddings: [],
    },
  });
  return { nodes: [start, agent], edges: [env.connect(start, agent)] };
}

/** Chatflow: ChatOpenAI (metered) → Conversation Chain with a buffer memory. */
export async function meteredChatflow(api: Api, ids: FlowIds, basepath: string): Promise<Flow> {
  const cfg = modelConfig(ids, basepath, {});
  const { credential, FLOWISE_CREDENTIAL_ID: _c, ...inputs } = cfg;
  const model = env.flowNode(await api.getNode('chatOpenAIMetered'), { id: 'chatOpenAIMetered_0', position: { x: 0, y: 0 }, inputs, credential });
  const memory = env.flowNode(await api.getNode('bufferMemory'), { id: 'bufferMemory_0', position: { x: 0, y: 600 } });
  const chain = env.flowNode(await api.getNode('conversationChain'), { id: 'conversationChain_0', position: { x: 400, y: 0 } });
  return { nodes: [model, memory, chain], edges: [env.connect(model, chain, 'model'), env.connect(memory, chain, 'memory')] };
}
