import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { RunnableLambda, RunnableSequence } from '@langchain/core/runnables';
import { tool, type StructuredToolInterface } from '@langchain/core/tools';
import { CallbackHandler } from 'langfuse-langchain';
import {
  countCompletionTokens,
  countPromptTokens,
  expectedReply,
  installOfflineTiktoken,
  sequenceScript,
  startOpenAIServer,
  type OpenAIServer,
} from './support/openai-server';
import { mergeEvents, startLangfuseServer, type LangfuseServer } from './support/langfuse-server';

let openai: OpenAIServer;
let langfuse: LangfuseServer;
let uninstallTiktoken: () => void;

beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer();
  langfuse = await startLangfuseServer();
});
afterAll(async () => {
  uninstallTiktoken?.();
  await openai?.close();
  await langfuse?.close();
});
beforeEach(() => {
  openai.reset();
  openai.setScript(null);
  openai.setOptions({ delayMs: 0, chunkDelayMs: 0, interrupt: undefined, wordsPerChunk: 1 });
  langfuse.reset();
  langfuse.setMode('ok');
});

function model(extra: Partial<ConstructorParameters<typeof ChatOpenAI>[0]> = {}): ChatOpenAI {
  return new ChatOpenAI({
    model: 'gpt-4o-mini',
    apiKey: 'sk-test-dummy',
    configuration: { baseURL: openai.baseURL },
    maxRetries: 0,
    ...extra,
  });
}

const prompt = (): BaseMessage[] => [new SystemMessage('You are terse.'), new HumanMessage('What is the capital of France')];

function concatChunks(chunks: AIMessageChunk[]): AIMessageChunk {
  let acc = chunks[0]!;
  for (const c of chunks.slice(1)) acc = acc.concat(c);
  return acc;
}

/** A one-string-argument tool described by JSON schema (zod + tool() trips TS2589 here). */
function makeTool(name: string, arg: string, fn: (value: string) => string): StructuredToolInterface {
  return tool(async (input: Record<string, unknown>) => fn(String(input[arg])), {
    name,
    description: `${name} tool`,
    schema: { type: 'object', properties: { [arg]: { type: 'string' } }, required: [arg] },
  }) as unknown as StructuredToolInterface;
}

function handler(extra: Record<string, unknown> = {}): CallbackHandler {
  return new CallbackHandler({
    publicKey: langfuse.publicKey,
    secretKey: langfuse.secretKey,
    baseUrl: langfuse.baseUrl,
    flushAt: 1,
    ...extra,
  });
}

describe('openai-server', () => {
  it('token rule: hand-computed numbers', () => {
    // 2 messages × 4 overhead + "You are terse." (3) + "What is the capital of France" (6)
    expect(
      countPromptTokens({
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: 'What is the capital of France' },
        ],
      }),
    ).toBe(17);
    expect(countCompletionTokens('echo: What is the capital of France')).toBe(7);
    expect(countCompletionTokens(null, [{ name: 'get_weather', arguments: '{"city":"Paris"}' }])).toBe(2);
    // tools add 10 each; assistant tool_calls count name + arguments words
    expect(
      countPromptTokens({
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'two words' }, { type: 'image_url' }] },
          { role: 'assistant', content: null, tool_calls: [{ function: { name: 'f', arguments: '{}' } }] },
          { role: 'tool', content: 'sunny and warm', tool_call_id: 'x' },
        ],
        tools: [{}, {}],
      }),
    ).toBe(4 + 2 + 85 + 4 + 2 + 4 + 3 + 20);
  });

  it('non-streaming: deterministic reply and usage_metadata', async () => {
    const res = await model().invoke(prompt());
    expect(res.content).toBe('echo: What is the capital of France');
    expect(res.usage_metadata).toMatchObject({ input_tokens: 17, output_tokens: 7, total_tokens: 24 });
    expect(openai.callCount()).toBe(1);
    const call = openai.calls[0]!;
    expect(call.body.model).toBe('gpt-4o-mini');
    expect(call.headers.authorization).toBe('Bearer sk-test-dummy');
    expect(call.response?.usage?.prompt_tokens).toBe(countPromptTokens(call.body));
    expect(res.response_metadata.finish_reason).toBe('stop');
  });

  it('max_tokens truncates the reply and the completion tokens', async () => {
    const res = await model({ maxTokens: 3 }).invoke(prompt());
    expect(openai.calls[0]!.body.max_tokens).toBe(3);
    expect(res.content).toBe('echo: What is');
    expect(res.usage_metadata).toMatchObject({ input_tokens: 17, output_tokens: 3, total_tokens: 20 });
    expect(res.response_metadata.finish_reason).toBe('length');
  });

  it('streaming with streamUsage: chunks concatenate to the same reply and usage', async () => {
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model({ streamUsage: true }).stream(prompt())) chunks.push(c);
    const all = concatChunks(chunks);
    expect(chunks.length).toBeGreaterThan(7); // one word per chunk + role + finish + usage
    expect(all.content).toBe('echo: What is the capital of France');
    expect(all.usage_metadata).toMatchObject({ input_tokens: 17, output_tokens: 7, total_tokens: 24 });
    expect(openai.calls[0]!.body.stream).toBe(true);
    expect(openai.calls[0]!.body.stream_options).toEqual({ include_usage: true });
  });

  // Needs installOfflineTiktoken() (beforeAll): otherwise this path spends ~1 min retrying a tiktoken download.
  it('streaming: invoke() on a streaming model also gets the usage', async () => {
    const res = await model({ streaming: true, streamUsage: true }).invoke(prompt());
    expect(res.content).toBe('echo: What is the capital of France');
    expect(res.usage_metadata).toMatchObject({ input_tokens: 17, output_tokens: 7, total_tokens: 24 });
  });

  it('streaming without include_usage sends no usage chunk', async () => {
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model({ streamUsage: false }).stream(prompt())) chunks.push(c);
    expect(openai.calls[0]!.body.stream_options).toBeUndefined();
    expect(concatChunks(chunks).usage_metadata).toBeUndefined();
  });

  it('scripted usage overrides (cached tokens) reach usage_metadata', async () => {
    openai.setScript(() => ({ content: 'cached answer', usage: { cached_tokens: 5 } }));
    const res = await model().invoke(prompt());
    expect(res.usage_metadata).toMatchObject({
      input_tokens: 17,
      output_tokens: 2,
      total_tokens: 19,
      input_token_details: { cache_read: 5 },
    });
  });

  it('tool calling: a three-turn agent loop driven by a script (bindTools)', async () => {
    const getWeather = makeTool('get_weather', 'city', (city) => `sunny in ${city}`);
    const getTime = makeTool('get_time', 'tz', (tz) => `noon in ${tz}`);
    openai.setScript(
      sequenceScript([
        { tool_calls: [{ name: 'get_weather', arguments: { city: 'Paris' } }] },
        { tool_calls: [{ name: 'get_time', arguments: { tz: 'CET' } }] },
        'It is sunny and noon in Paris',
      ]),
    );
    const bound = model().bindTools([getWeather, getTime]);
    const tools: Record<string, StructuredToolInterface> = { get_weather: getWeather, get_time: getTime };
    const messages: BaseMessage[] = [new HumanMessage('Weather and time in Paris?')];
    const called: string[] = [];
    for (let turn = 0; turn < 5; turn++) {
      const ai = (await bound.invoke(messages)) as AIMessage;
      messages.push(ai);
      if (!ai.tool_calls?.length) break;
      for (const tc of ai.tool_calls) {
        called.push(tc.name);
        const out: unknown = await tools[tc.name]!.invoke(tc.args);
        messages.push(new ToolMessage({ content: String(out), tool_call_id: tc.id! }));
      }
    }
    expect(called).toEqual(['get_weather', 'get_time']);
    const final = messages.at(-1) as AIMessage;
    expect(final.content).toBe('It is sunny and noon in Paris');
    expect(openai.callCount()).toBe(3);
    // every request carried both tool definitions
    for (const c of openai.calls) expect(c.body.tools).toHaveLength(2);
    // turn 1: prompt = 4 + 5 words + 2 tools × 10 = 29; completion = name(1) + args(1) = 2
    expect(openai.calls[0]!.response!.usage!.prompt_tokens).toBe(29);
    expect(openai.calls[0]!.response!.usage!.completion_tokens).toBe(2);
    // turn 3: user(4+5) + assistant(4+2) + tool(4+3 "sunny in Paris") + assistant(4+2) + tool(4+3 "noon in CET") + 20 = 55
    expect(openai.calls[2]!.response!.usage!.prompt_tokens).toBe(55);
    expect(final.usage_metadata).toMatchObject({ input_tokens: 55, output_tokens: 7, total_tokens: 62 });
    for (const c of openai.calls) expect(c.response!.usage!.prompt_tokens).toBe(countPromptTokens(c.body));
  });

  it('tool calls also stream', async () => {
    openai.setScript(() => ({ tool_calls: [{ id: 'call_x', name: 'get_weather', arguments: { city: 'Oslo' } }] }));
    const weather = makeTool('get_weather', 'city', () => 'x');
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model().bindTools([weather]).stream(prompt())) chunks.push(c);
    const all = concatChunks(chunks);
    expect(all.tool_calls).toEqual([{ name: 'get_weather', args: { city: 'Oslo' }, id: 'call_x', type: 'tool_call' }]);
    expect(all.usage_metadata).toMatchObject({ input_tokens: 27, output_tokens: 2, total_tokens: 29 });
  });

  it('interrupt mode destroy: the stream fails after N chunks', async () => {
    openai.setScript(() => ({ content: 'one two three four five', interrupt: { afterChunks: 2, mode: 'destroy' } }));
    const got: string[] = [];
    await expect(
      (async () => {
        for await (const c of await model().stream(prompt())) got.push(String(c.content));
      })(),
    ).rejects.toThrow();
    expect(got.join('')).toBe('one two ');
    expect(openai.calls[0]!.response!.interrupted).toBe('destroy');
  });

  it('interrupt mode end: the stream just stops, without usage', async () => {
    openai.setOptions({ interrupt: { afterChunks: 3, mode: 'end' } });
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model().stream(prompt())) chunks.push(c);
    const all = concatChunks(chunks);
    expect(all.content).toBe('echo: What is ');
    expect(all.usage_metadata).toBeUndefined();
  });

  it('per-response delay, timeout and scripted HTTP errors', async () => {
    openai.setScript(() => ({ content: 'slow reply', delayMs: 300 }));
    const t0 = Date.now();
    expect((await model().invoke(prompt())).content).toBe('slow reply');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);

    await expect(model({ timeout: 50 }).invoke(prompt())).rejects.toThrow();

    openai.setScript(() => ({ errorStatus: 500, errorMessage: 'boom' }));
    await expect(model().invoke(prompt())).rejects.toThrow(/boom|500/);
  });

  it('GET /v1/models and expectedReply()', async () => {
    const r = await fetch(`${openai.baseURL}/models`);
    expect(r.status).toBe(200);
    const body = (await r.json()) as { data: Array<{ id: string }> };
    expect(body.data.map((m) => m.id)).toContain('gpt-4o-mini');
    const exp = expectedReply({ messages: [{ role: 'user', content: 'a b c' }], max_tokens: 2 });
    expect(exp).toMatchObject({ content: 'echo: a', finishReason: 'length', usage: { prompt_tokens: 7, completion_tokens: 2 } });
  });
});

describe('langfuse-server', () => {
  it('ingestion: auth, 207 body, unknown types reported as errors', async () => {
    const url = `${langfuse.baseUrl}/api/public/ingestion`;
    const good = 'Basic ' + Buffer.from(`${langfuse.publicKey}:${langfuse.secretKey}`).toString('base64');
    const bad = 'Basic ' + Buffer.from(`${langfuse.publicKey}:nope`).toString('base64');
    const batch = {
      batch: [
        { id: 'e1', type: 'trace-create', timestamp: new Date().toISOString(), body: { id: 't1', metadata: { a: 1 } } },
        { id: 'e2', type: 'bogus-create', timestamp: new Date().toISOString(), body: { id: 'x' } },
      ],
      metadata: {},
    };
    const denied = await fetch(url, { method: 'POST', headers: { authorization: bad }, body: JSON.stringify(batch) });
    expect(denied.status).toBe(401);
    const r = await fetch(url, { method: 'POST', headers: { authorization: good }, body: JSON.stringify(batch) });
    expect(r.status).toBe(207);
    expect(await r.json()).toEqual({
      successes: [{ id: 'e1', status: 201 }],
      errors: [expect.objectContaining({ id: 'e2', status: 400 })],
    });
    expect(langfuse.traces().get('t1')!.trace.metadata).toEqual({ a: 1 });
    const health = await fetch(`${langfuse.baseUrl}/api/public/health`);
    expect(await health.json()).toMatchObject({ status: 'OK' });
  });

  it('mergeEvents: creates then updates, metadata merged, usage normalised, duplicates ignored', () => {
    const ts = (ms: number) => new Date(1_700_000_000_000 + ms).toISOString();
    const events = [
      { id: 'u', type: 'generation-update', timestamp: ts(2), body: { id: 'g', usage: { input: 3, output: 4, total: 7 }, costDetails: { total: 0.5 }, metadata: { b: 2 } } },
      { id: 'c', type: 'generation-create', timestamp: ts(1), body: { id: 'g', traceId: 't', name: 'llm', metadata: { a: 1 } } },
      { id: 'c', type: 'generation-create', timestamp: ts(1), body: { id: 'g', traceId: 't', name: 'dup' } },
    ];
    const { traces, observations } = mergeEvents(events);
    const g = observations.get('g')!;
    expect(g).toMatchObject({ type: 'GENERATION', name: 'llm', metadata: { a: 1, b: 2 }, usageDetails: { input: 3, output: 4, total: 7 }, costDetails: { total: 0.5 } });
    expect(traces.get('t')!.trace.implicit).toBe(true);
    expect(traces.get('t')!.observations.map((o) => o.id)).toEqual(['g']);
  });

  it('langfuse-langchain on a bare ChatOpenAI run: trace metadata from RunnableConfig.metadata, generation usage', async () => {
    const h = handler({ sessionId: 'chat-42', metadata: { fromHandler: 'yes' } });
    const res = await model().invoke(prompt(), {
      callbacks: [h],
      runName: 'billed-llm',
      tags: ['billing'],
      metadata: { billingCustomerId: 'cus_1', flowRunId: 'run_9', langfuseUserId: 'u1' },
    });
    await h.shutdownAsync();
    expect(res.content).toBe('echo: What is the capital of France');

    const traces = langfuse.traces();
    expect(traces.size).toBe(1);
    const { trace, observations } = [...traces.values()][0]!;
    expect(trace.name).toBe('billed-llm');
    expect(trace.sessionId).toBe('chat-42');
    expect(trace.metadata).toMatchObject({
      billingCustomerId: 'cus_1',
      flowRunId: 'run_9',
      fromHandler: 'yes',
      tags: ['billing'],
      ls_provider: 'openai',
      ls_model_name: 'gpt-4o-mini',
    });
    expect(trace.metadata).not.toHaveProperty('langfuseUserId');
    expect(trace.userId).toBeUndefined(); // langfuseUserId is honoured only when the root is a chain
    expect(trace.output).toBeDefined();

    expect(observations).toHaveLength(1);
    const gen = observations[0]!;
    expect(gen.type).toBe('GENERATION');
    expect(gen.id).toBe(trace.id); // root run id = trace id = generation id
    expect(gen.metadata).toMatchObject({ billingCustomerId: 'cus_1', flowRunId: 'run_9', tags: ['billing'] });
    expect(gen.metadata).not.toHaveProperty('fromHandler');
    expect(gen.model).toBe('gpt-4o-mini');
    expect(gen.usageDetails).toMatchObject({ input: 17, output: 7, total: 24 });
    expect(gen.usage).toMatchObject({ input: 17, output: 7, total: 24 });
    expect(gen.costDetails).toBeUndefined();
    // the SDK's envelope + batch metadata
    const b = langfuse.batches[0];
    expect(b.metadata).toMatchObject({ sdk_name: 'langfuse-js', sdk_integration: 'LANGCHAIN', public_key: langfuse.publicKey });
    expect(b.batch[0]).toEqual(
      expect.objectContaining({ id: expect.any(String), type: expect.any(String), timestamp: expect.any(String), body: expect.any(Object) }),
    );
  });

  it('langfuse-langchain on a chain: nested metadata stays on observations; langfuseUserId/SessionId reach the trace', async () => {
    const h = handler();
    const pre = RunnableLambda.from((q: string) => [new HumanMessage(q)]).withConfig({
      runName: 'prep',
      metadata: { innerOnly: 'x' },
    });
    const chain = RunnableSequence.from([pre, model({ streaming: true, streamUsage: true })]);
    const res = (await chain.invoke('What is the capital of France', {
      callbacks: [h],
      runName: 'flow',
      metadata: { billingCustomerId: 'cus_2', langfuseUserId: 'user-7', langfuseSessionId: 'sess-7' },
    })) as AIMessage;
    await h.shutdownAsync();
    expect(res.content).toBe('echo: What is the capital of France');

    const { trace, observations } = [...langfuse.traces().values()][0]!;
    expect(trace.name).toBe('flow');
    expect(trace.metadata).toMatchObject({ billingCustomerId: 'cus_2' });
    expect(trace.metadata).not.toHaveProperty('innerOnly');
    expect(trace.metadata).not.toHaveProperty('ls_provider');
    expect(trace.userId).toBe('user-7');
    expect(trace.sessionId).toBe('sess-7');

    const byName = new Map(observations.map((o) => [o.name, o]));
    expect(byName.get('flow')).toMatchObject({ type: 'SPAN', metadata: { billingCustomerId: 'cus_2' } });
    expect(byName.get('prep')).toMatchObject({ type: 'SPAN', parentObservationId: trace.id, metadata: { billingCustomerId: 'cus_2', innerOnly: 'x' } });
    const gen = observations.find((o) => o.type === 'GENERATION')!;
    expect(gen.parentObservationId).toBe(trace.id);
    expect(gen.metadata).toMatchObject({ billingCustomerId: 'cus_2', ls_model_name: 'gpt-4o-mini' });
    expect(gen.metadata).not.toHaveProperty('innerOnly');
    // one user message only: 4 + 6 words
    expect(gen.usageDetails).toMatchObject({ input: 10, output: 7, total: 17 });
    expect(gen.completionStartTime).toBeDefined(); // streamed
  });

  it('a wrong secret key: 401s, nothing stored, the run still succeeds', async () => {
    const h = handler({ secretKey: 'wrong', fetchRetryCount: 0 });
    const res = await model().invoke(prompt(), { callbacks: [h] });
    await h.shutdownAsync();
    expect(res.content).toBe('echo: What is the capital of France');
    expect(langfuse.requests.some((r) => r.status === 401)).toBe(true);
    expect(langfuse.events()).toHaveLength(0);
  });

  for (const mode of ['error500', 'down', 'slow'] as const) {
    it(`mode ${mode}: the LangChain run still succeeds and nothing is stored`, async () => {
      const slow = mode === 'slow';
      if (slow) {
        await langfuse.close();
        langfuse = await startLangfuseServer({ slowMs: 400 });
      }
      langfuse.setMode(mode);
      const h = handler({ fetchRetryCount: 1, fetchRetryDelay: 10, requestTimeout: 100 });
      const t0 = Date.now();
      const res = await model().invoke(prompt(), { callbacks: [h], metadata: { billingCustomerId: 'cus_3' } });
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(res.content).toBe('echo: What is the capital of France');
      expect(res.usage_metadata).toMatchObject({ input_tokens: 17, output_tokens: 7 });
      await h.shutdownAsync();
      if (mode === 'error500') {
        expect(langfuse.requests.filter((r) => r.status === 500).length).toBeGreaterThanOrEqual(2);
        expect(langfuse.events()).toHaveLength(0);
      } else if (mode === 'down') {
        expect(langfuse.requests.filter((r) => r.status === 'dropped').length).toBeGreaterThanOrEqual(2);
        expect(langfuse.events()).toHaveLength(0);
      } else {
        // slow: the server stored the events although the SDK timed out and resent them
        expect(langfuse.events().length).toBeGreaterThan(0);
        expect(langfuse.batches.length).toBe(2 * langfuse.events().length); // flushAt 1, one retry each
        expect([...langfuse.traces().values()][0]!.trace.metadata).toMatchObject({ billingCustomerId: 'cus_3' });
      }
      langfuse.setMode('ok');
    });
  }
});
