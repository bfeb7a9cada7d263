// Smoke test for the e2e groundwork: a real Flowise 3.1.4 on loopback.
//
//   node test/e2e/flowise-smoke.mjs            start, register, login, list nodes, fetch chatOpenAI, stop
//   node test/e2e/flowise-smoke.mjs --predict  also: credential + chatflow (ChatOpenAI → a tiny echo server
//                                              on loopback) + a prediction
//
// Exits non-zero on any failure; Flowise is always stopped (its home is kept on failure for the logs).

import assert from 'node:assert/strict';
import http from 'node:http';
import { api, connect, ensureFlowise, flowNode, startFlowise } from './flowise-env.mjs';

const withPredict = process.argv.includes('--predict');
const t0 = Date.now();
const step = (msg) => process.stdout.write(`[smoke +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

/** An OpenAI-compatible chat-completions server that answers "echo: <last user message>" (streaming or not). */
function echoServer() {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.method !== 'POST' || !req.url.endsWith('/chat/completions')) {
        res.writeHead(404).end();
        return;
      }
      const r = JSON.parse(body);
      const last = [...r.messages].reverse().find((m) => m.role === 'user');
      const text = `echo: ${typeof last?.content === 'string' ? last.content : JSON.stringify(last?.content)}`;
      const usage = { prompt_tokens: 7, completion_tokens: text.split(/\s+/).length, total_tokens: 7 + text.split(/\s+/).length };
      const base = { id: 'chatcmpl-smoke', created: Math.floor(Date.now() / 1000), model: r.model };
      if (r.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const send = (o) => res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', ...o })}\n\n`);
        send({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
        send({ choices: [{ index: 0, delta: { content: text }, finish_reason: null }] });
        send({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
        if (r.stream_options?.include_usage) send({ choices: [], usage });
        res.end('data: [DONE]\n\n');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ...base, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }], usage }));
      }
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const inst = await ensureFlowise();
step(`install ready (Node ${inst.nodeVersion})`);

const fw = await startFlowise();
step(`Flowise answered /api/v1/ping after ${(fw.startupMs / 1000).toFixed(1)}s at ${fw.url}`);
let ok = false;
let echo;
try {
  const client = api(fw.url);
  const reg = await client.register();
  step(`registered ${client.email} (user id ${reg?.user?.id ?? reg?.id ?? '?'})`);
  const login = await client.login();
  step(`logged in; cookies: ${Object.keys(client.cookies()).join(', ')}; workspace ${login?.activeWorkspaceId ?? '?'}`);

  const nodes = await client.listNodes();
  assert.ok(Array.isArray(nodes) && nodes.length > 100, `expected a long node list, got ${nodes?.length}`);
  const agentflow = nodes.filter((n) => n.category === 'Agent Flows').map((n) => n.name);
  const moderation = nodes.filter((n) => n.category === 'Moderation').map((n) => n.name);
  step(`GET /api/v1/nodes → ${nodes.length} nodes; Agent Flows: ${agentflow.length} (${agentflow.join(', ')}); Moderation: ${moderation.join(', ')}`);

  const chatOpenAI = await client.getNode('chatOpenAI');
  assert.equal(chatOpenAI.name, 'chatOpenAI');
  assert.equal(chatOpenAI.category, 'Chat Models');
  assert.deepEqual(chatOpenAI.credential?.credentialNames, ['openAIApi']);
  assert.ok(chatOpenAI.inputs.some((i) => i.name === 'basepath'), 'chatOpenAI has a basepath input');
  step(`GET /api/v1/nodes/chatOpenAI → v${chatOpenAI.version}, ${chatOpenAI.inputs.length} inputs, baseClasses ${chatOpenAI.baseClasses.join('|')}, icon ${chatOpenAI.icon}`);

  // Authenticated calls really need the header: without it Flowise wants an API key.
  const noHeader = await client.request('GET', '/api/v1/credentials', undefined, { internal: false, allowError: true });
  assert.equal(noHeader.status, 401, 'without x-request-from: internal the session cookie is not enough');

  if (withPredict) {
    echo = await echoServer();
    const basepath = `http://127.0.0.1:${echo.address().port}/v1`;
    const cred = await client.createCredential({ name: 'smoke-openai', credentialName: 'openAIApi', plainDataObj: { openAIApiKey: 'sk-smoke' } });
    step(`credential ${cred.id} (${cred.credentialName})`);
    const model = flowNode(chatOpenAI, { id: 'chatOpenAI_0', credential: cred.id, inputs: { modelName: 'gpt-4o-mini', temperature: 0, basepath } });
    const memory = flowNode(await client.getNode('bufferMemory'), { id: 'bufferMemory_0', position: { x: 0, y: 500 } });
    const chain = flowNode(await client.getNode('conversationChain'), { id: 'conversationChain_0', position: { x: 500, y: 0 } });
    const edges = [connect(model, chain, 'model'), connect(memory, chain, 'memory')];
    const flow = await client.createChatflow({ name: 'smoke', flowData: { nodes: [model, memory, chain], edges, viewport: { x: 0, y: 0, zoom: 1 } } });
    step(`chatflow ${flow.id} (${flow.type})`);
    const answer = await client.predict(flow.id, { question: 'hello billing' });
    step(`POST /api/v1/prediction → ${JSON.stringify(answer).slice(0, 300)}`);
    assert.equal(answer.text, 'echo: hello billing');
  }
  ok = true;
} finally {
  await fw.stop({ keepHome: !ok });
  echo?.close();
  let alive = true;
  try {
    process.kill(fw.pid, 0);
  } catch {
    alive = false;
  }
  step(`Flowise stopped (pid ${fw.pid} ${alive ? 'STILL ALIVE' : 'gone'})${ok ? '' : `; home kept at ${fw.home}`}`);
  if (alive) process.exitCode = 1;
}
step(ok ? 'smoke OK' : 'smoke FAILED');
