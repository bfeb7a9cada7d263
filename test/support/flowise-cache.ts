import os from 'node:os';
import path from 'node:path';

/** The Flowise 3.1.4 install the end-to-end tests prepare (test/e2e/flowise-env.mjs `cacheDir`). */
export const FLOWISE_CACHE = path.resolve(process.env.FLOWISE_BILLING_CACHE || path.join(os.homedir(), '.cache', 'flowise-billing', 'flowise-3.1.4'));

/** Its Node 24 binary (Flowise's runtime, where better-sqlite3 built for this Node cannot load). */
export const FLOWISE_NODE = path.join(FLOWISE_CACHE, 'node_modules', 'node', 'bin', 'node');
