// Flows built on the metered variants ("OpenAI (metered)" = chatOpenAIMetered, "Calculator (metered)") that
// the installer generates, the way the UI builds them from the node definitions of a running Flowise
// (flowNode/connect in flowise-env.mjs). The e2e test runs them with real credential ids; build-examples.mjs
// writes them to examples/ with the credentials left empty. Plain ESM, shared by both.
//
// ids: { ledger: Billing Ledger credential id, openai: OpenAI credential id }.
import * as env from './flowise-env.mjs';

// What the metered model's config holds besides the provider's own settings.
export function billingConfig(ids, extra = {}) {
  return { billingLedgerCredential: ids.ledger, customerSource: 'billingToken', tokenVariable: 'billingToken', runFee: 'PrivateFlowRun', checkSessions: true, ...extra };
}

function modelConfig(ids, basepath, extra) {
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

// Start → LLM (OpenAI (metered)).
export async function llmAgentflow(api, ids, basepath, extra = {}) {
  const start = env.flowNode(await api.getNode('startAgentflow'), { id: 'startAgentflow_0', position: { x: 0, y: 0 } });
  const llm = env.flowNode(await api.getNode('llmAgentflow'), {
    id: 'llmAgentflow_0',
    position: { x: 300, y: 0 },
    inputs: { llmModel: 'chatOpenAIMetered', llmModelConfig: { llmModel: 'chatOpenAIMetered', ...modelConfig(ids, basepath, extra) }, llmEnableMemory: false, llmMessages: [], llmStructuredOutput: [], llmUpdateState: [] },
  });
  return { nodes: [start, llm], edges: [env.connect(start, llm)] };
}

// Start → LLM (Anthropic (metered)), streaming on as the node's default. The Anthropic SDK inside Flowise
// reaches the loopback Messages API through ANTHROPIC_BASE_URL (the node has no base URL input).
function anthropicConfig(ids, extra) {
  return {
    modelName: 'claude-3-5-haiku-20241022',
    temperature: 0,
    streaming: true,
    maxTokensToSample: 64,
    credential: ids.anthropic,
    FLOWISE_CREDENTIAL_ID: ids.anthropic,
    ...billingConfig(ids, extra),
  };
}

export async function anthropicAgentflow(api, ids, extra = {}) {
  const start = env.flowNode(await api.getNode('startAgentflow'), { id: 'startAgentflow_0', position: { x: 0, y: 0 } });
  const config = anthropicConfig(ids, extra);
  const llm = env.flowNode(await api.getNode('llmAgentflow'), {
    id: 'llmAgentflow_0',
    position: { x: 300, y: 0 },
    inputs: { llmModel: 'chatAnthropicMetered', llmModelConfig: { llmModel: 'chatAnthropicMetered', ...config }, llmEnableMemory: false, llmMessages: [], llmStructuredOutput: [], llmUpdateState: [] },
  });
  return { nodes: [start, llm], edges: [env.connect(start, llm)] };
}

// Start → Agent (OpenAI (metered)) with the Calculator (metered) tool.
export async function toolAgentflow(api, ids, basepath, toolPrice = 'ObjectTransformer') {
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

// Chatflow: OpenAI (metered) → Conversation Chain with a buffer memory.
export async function meteredChatflow(api, ids, basepath) {
  const cfg = modelConfig(ids, basepath, {});
  const { credential, FLOWISE_CREDENTIAL_ID: _c, ...inputs } = cfg; // the chatflow node keeps its credential apart
  const model = env.flowNode(await api.getNode('chatOpenAIMetered'), { id: 'chatOpenAIMetered_0', position: { x: 0, y: 0 }, inputs, credential });
  const memory = env.flowNode(await api.getNode('bufferMemory'), { id: 'bufferMemory_0', position: { x: 0, y: 600 } });
  const chain = env.flowNode(await api.getNode('conversationChain'), { id: 'conversationChain_0', position: { x: 400, y: 0 } });
  return { nodes: [model, memory, chain], edges: [env.connect(model, chain, 'model'), env.connect(memory, chain, 'memory')] };
}

// Chatflow: Anthropic (metered), streaming on → Conversation Chain with a buffer memory.
export async function anthropicChatflow(api, ids) {
  const { credential, FLOWISE_CREDENTIAL_ID: _c, ...inputs } = anthropicConfig(ids, {});
  const model = env.flowNode(await api.getNode('chatAnthropicMetered'), { id: 'chatAnthropicMetered_0', position: { x: 0, y: 0 }, inputs, credential });
  const memory = env.flowNode(await api.getNode('bufferMemory'), { id: 'bufferMemory_0', position: { x: 0, y: 600 } });
  const chain = env.flowNode(await api.getNode('conversationChain'), { id: 'conversationChain_0', position: { x: 400, y: 0 } });
  return { nodes: [model, memory, chain], edges: [env.connect(model, chain, 'model'), env.connect(memory, chain, 'memory')] };
}

// Start → Condition Agent (OpenAI (metered)) with two scenarios → an LLM (OpenAI (metered)) on each branch.
export async function conditionAgentflow(api, ids, basepath) {
  const start = env.flowNode(await api.getNode('startAgentflow'), { id: 'startAgentflow_0', position: { x: 0, y: 0 } });
  const cond = env.flowNode(await api.getNode('conditionAgentAgentflow'), {
    id: 'conditionAgentAgentflow_0',
    position: { x: 300, y: 0 },
    inputs: {
      conditionAgentModel: 'chatOpenAIMetered',
      conditionAgentModelConfig: { conditionAgentModel: 'chatOpenAIMetered', ...modelConfig(ids, basepath, {}) },
      conditionAgentInstructions: 'Is the user asking about billing?',
      conditionAgentInput: '{{ question }}',
      conditionAgentScenarios: [{ scenario: 'billing question' }, { scenario: 'anything else' }],
    },
  });
  const llm = (k) =>
    api.getNode('llmAgentflow').then((d) =>
      env.flowNode(d, {
        id: `llmAgentflow_${k}`,
        position: { x: 600, y: k * 200 },
        inputs: { llmModel: 'chatOpenAIMetered', llmModelConfig: { llmModel: 'chatOpenAIMetered', ...modelConfig(ids, basepath, {}) }, llmEnableMemory: false, llmMessages: [], llmStructuredOutput: [], llmUpdateState: [] },
      }),
    );
  const [a, b] = [await llm(0), await llm(1)];
  // A decision node's k-th output handle is `<id>-output-<k>` (what Flowise skips when that condition is not met).
  const branch = (k, target) => ({ source: cond.id, sourceHandle: `${cond.id}-output-${k}`, target: target.id, targetHandle: target.id, type: 'agentFlow', id: `${cond.id}-output-${k}-${target.id}`, data: {} });
  return { nodes: [start, cond, a, b], edges: [env.connect(start, cond), branch(0, a), branch(1, b)] };
}
