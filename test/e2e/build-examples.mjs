// Regenerates examples/*.json from the node definitions of a running Flowise with flowise-billing installed,
// the way the UI builds a node when it is dropped on the canvas (flowNode/connect in flowise-env.mjs).
//
//   node test/e2e/build-examples.mjs        (starts the cached Flowise 3.1.4, writes examples/, stops it)
//
// The files use the single-flow export format ({ nodes, edges }); credentials are left empty (the operator
// picks them after loading, or the e2e test fills them in) and the ChatOpenAI base path points at a
// placeholder OpenAI-compatible server.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { api, connect, ensureFlowise, flowNode, startFlowise } from './flowise-env.mjs';
import { billingConfig, llmAgentflow, meteredChatflow, toolAgentflow } from './metered-flows.mjs';

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples');
const BASEPATH = 'http://127.0.0.1:8080/v1';

/** Export format: drop what the UI strips (credential ids, password fields) and absolute icon paths. */
function exported(nodes, edges) {
  for (const n of nodes) {
    delete n.data.credential;
    for (const cfg of [n.data.inputs?.llmModelConfig, n.data.inputs?.agentModelConfig]) if (cfg) cfg.credential = cfg.FLOWISE_CREDENTIAL_ID = '';
    delete n.data.icon;
    delete n.data.filePath;
    for (const p of n.data.inputParams ?? []) if (p.type === 'password') delete n.data.inputs[p.name];
  }
  return { nodes, edges };
}

export async function buildExamples(client) {
  const def = async (name) => client.getNode(name);
  // 1. Chatflow: ChatOpenAI → Metered Chat Model → Conversation Chain, guarded by Quota Guard.
  {
    const model = flowNode(await def('chatOpenAI'), { id: 'chatOpenAI_0', position: { x: 80, y: 80 }, inputs: { modelName: 'gpt-4o-mini', temperature: 0, basepath: BASEPATH } });
    const metered = flowNode(await def('meteredChatModel'), { id: 'meteredChatModel_0', position: { x: 440, y: 80 } });
    const memory = flowNode(await def('bufferMemory'), { id: 'bufferMemory_0', position: { x: 800, y: 560 } });
    const guard = flowNode(await def('quotaGuard'), { id: 'quotaGuard_0', position: { x: 440, y: 560 }, inputs: { runFee: 'PrivateFlowRun', minimumBalanceUsd: '0.01' } });
    const chain = flowNode(await def('conversationChain'), { id: 'conversationChain_0', position: { x: 800, y: 80 } });
    const edges = [connect(model, metered, 'model'), connect(metered, chain, 'model'), connect(memory, chain, 'memory'), connect(guard, chain, 'inputModeration')];
    fs.writeFileSync(path.join(EXAMPLES, 'metered-conversation-chatflow.json'), JSON.stringify(exported([model, metered, memory, guard, chain], edges), null, 2) + '\n');
  }
  // 2. Chatflow: a Tool Agent with a metered calculator and the Usage Tool, guarded by Quota Guard.
  {
    const model = flowNode(await def('chatOpenAI'), { id: 'chatOpenAI_0', position: { x: 80, y: 80 }, inputs: { modelName: 'gpt-4o-mini', temperature: 0, basepath: BASEPATH } });
    const metered = flowNode(await def('meteredChatModel'), { id: 'meteredChatModel_0', position: { x: 440, y: 80 } });
    const calc = flowNode(await def('calculator'), { id: 'calculator_0', position: { x: 80, y: 640 } });
    const meteredTool = flowNode(await def('meteredTool'), { id: 'meteredTool_0', position: { x: 440, y: 640 }, inputs: { chargeType: 'ObjectTransformer', quantity: '1' } });
    const usage = flowNode(await def('billingUsageTool'), { id: 'billingUsageTool_0', position: { x: 80, y: 900 } });
    const memory = flowNode(await def('bufferMemory'), { id: 'bufferMemory_0', position: { x: 1160, y: 640 } });
    const guard = flowNode(await def('quotaGuard'), { id: 'quotaGuard_0', position: { x: 800, y: 640 } });
    const agent = flowNode(await def('toolAgent'), { id: 'toolAgent_0', position: { x: 800, y: 80 } });
    const edges = [
      connect(model, metered, 'model'),
      connect(calc, meteredTool, 'tool'),
      connect(meteredTool, agent, 'tools'),
      connect(usage, agent, 'tools'),
      connect(metered, agent, 'model'),
      connect(memory, agent, 'memory'),
      connect(guard, agent, 'inputModeration'),
    ];
    fs.writeFileSync(path.join(EXAMPLES, 'metered-tool-agent-chatflow.json'), JSON.stringify(exported([model, metered, calc, meteredTool, usage, memory, guard, agent], edges), null, 2) + '\n');
  }
  // 3. Agentflow v2: Start → Billing Gate → LLM (OpenAI (metered)) → Charge (a priced step without a provider).
  //    The gate only checks; the metered call reserves the fee with its maximum; a refused gate makes the LLM and
  //    Charge answer the refusal without running.
  {
    const start = flowNode(await def('startAgentflow'), { id: 'startAgentflow_0', position: { x: 0, y: 100 } });
    const gate = flowNode(await def('billingGateAgentflow'), { id: 'billingGateAgentflow_0', position: { x: 220, y: 100 } });
    const llm = flowNode(await def('llmAgentflow'), {
      id: 'llmAgentflow_0',
      position: { x: 500, y: 100 },
      inputs: {
        llmModel: 'chatOpenAIMetered',
        llmModelConfig: { llmModel: 'chatOpenAIMetered', modelName: 'gpt-4o-mini', temperature: 0, streaming: false, maxTokens: 64, basepath: BASEPATH, credential: '', FLOWISE_CREDENTIAL_ID: '', ...billingConfig({ ledger: '' }) },
        llmMessages: [],
        llmEnableMemory: true,
        llmReturnResponseAs: 'userMessage',
      },
    });
    const charge = flowNode(await def('chargeAgentflow'), {
      id: 'chargeAgentflow_0',
      position: { x: 750, y: 100 },
      inputs: { chargeType: 'Inference', quantity: '1', reply: '{{ llmAgentflow_0 }}' },
    });
    const edges = [connect(start, gate), connect(gate, llm), connect(llm, charge)];
    fs.writeFileSync(path.join(EXAMPLES, 'billing-gate-agentflow.json'), JSON.stringify(exported([start, gate, llm, charge], edges), null, 2) + '\n');
  }
  // 4–6. The metered variants: every call paid before it happens, refusals as answers (same builders as the e2e test).
  const blank = { ledger: '', openai: '' };
  const write = (file, f) => fs.writeFileSync(path.join(EXAMPLES, file), JSON.stringify(exported(f.nodes, f.edges), null, 2) + '\n');
  write('metered-llm-agentflow.json', await llmAgentflow(client, blank, BASEPATH));
  write('metered-tool-agentflow.json', await toolAgentflow(client, blank, BASEPATH));
  write('metered-chatflow.json', await meteredChatflow(client, blank, BASEPATH));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // The plugin must be installed for Flowise to know its nodes (needs `npm run build` first).
  const { install, uninstall } = createRequire(import.meta.url)('../../dist/src/installer/index.js');
  const inst = await ensureFlowise();
  install({ flowise: inst.dir });
  const fw = await startFlowise();
  try {
    const client = api(fw.url);
    await client.setup();
    await buildExamples(client);
    console.log(`examples written to ${EXAMPLES}`);
  } finally {
    await fw.stop();
    uninstall({ flowise: inst.dir });
  }
}
