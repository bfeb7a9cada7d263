// Preloaded into the e2e Flowise process (node --require): answers LangChain's tiktoken downloads
// (https://tiktoken.pages.dev/js/<encoding>.json) from the js-tiktoken package already installed next to
// Flowise. Without it, every streaming ChatOpenAI call stalls for one to two minutes on this offline
// machine: @langchain/core fetches the encoding through an AsyncCaller that retries a DNS failure six
// times with exponential backoff before falling back to an approximate count.
'use strict';

const path = require('node:path');

const PREFIX = 'https://tiktoken.pages.dev/js/';
const searchPaths = [process.argv[1] ? path.dirname(process.argv[1]) : undefined, process.cwd()].filter(Boolean);
const originalFetch = globalThis.fetch;

globalThis.fetch = async function fetchWithLocalTiktoken(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input && input.url;
  if (typeof url === 'string' && url.startsWith(PREFIX)) {
    const encoding = url.slice(PREFIX.length).replace(/\.json$/, '');
    if (/^[a-z0-9_]+$/.test(encoding)) {
      try {
        const ranks = require(require.resolve(`js-tiktoken/ranks/${encoding}`, { paths: searchPaths }));
        return new Response(JSON.stringify(ranks.default || ranks), { status: 200, headers: { 'content-type': 'application/json' } });
      } catch {
        // unknown encoding: a 404 is not retried by LangChain
      }
    }
    return new Response('unknown encoding', { status: 404 });
  }
  return originalFetch(input, init);
};
