import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { credentialData, flowise, type FlowiseComponents } from '../nodes/shared/flowise';
import { analyticReadWith, credentialAndAnalytic } from '../nodes/shared/prediction-reads';
import { predictionRun, predictionRunKey, runSchema } from '../nodes/shared/prediction-run';
import { sharedRead, z } from '../src/plugin';
import { PG_BASE_URL } from './support/backends';
import { FLOWISE_CACHE } from './support/flowise-cache';

/**
 * The joint read of a prediction's Billing Ledger credential and its chatflow's analytics settings, against
 * Flowise's own entities, TypeORM and decryption (the installed Flowise 3.1.4), on SQLite (Flowise's default)
 * and PostgreSQL in a schema of its own (so the table names are schema-qualified).
 */
const require = createRequire(__filename);
const FLOWISE = FLOWISE_CACHE;
const flowisePkg = path.join(FLOWISE, 'node_modules', 'flowise', 'package.json');
const installed = fs.existsSync(flowisePkg);

const schemaBase = `pr_${process.pid}_${Date.now().toString(36)}`;
let schemas = 0;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-prediction-reads-'));
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function flowiseDatabase(kind: 'sqlite' | 'postgres') {
  process.env.FLOWISE_SECRETKEY_OVERWRITE ||= 'prediction-reads-test-secret-key';
  const fromFlowise = createRequire(flowisePkg);
  fromFlowise('reflect-metadata');
  const { DataSource } = fromFlowise('typeorm');
  const { ChatFlow } = fromFlowise('./dist/database/entities/ChatFlow.js');
  const { Credential } = fromFlowise('./dist/database/entities/Credential.js');
  const components = fromFlowise('flowise-components') as FlowiseComponents;
  const CryptoJS = fromFlowise('crypto-js');
  let config: Record<string, unknown>;
  if (kind === 'sqlite') {
    // TypeORM's SQLite drivers quote and bind alike; this one is this package's (the install's sqlite3 is built for its Node 24).
    config = { type: 'better-sqlite3', database: path.join(tmp, `${randomUUID()}.sqlite`), driver: require('better-sqlite3') };
  } else {
    const schema = `${schemaBase}_${++schemas}`;
    const c = new Client({ connectionString: PG_BASE_URL });
    await c.connect();
    await c.query(`CREATE SCHEMA ${schema}`);
    await c.end();
    cleanups.push(async () => {
      const d = new Client({ connectionString: PG_BASE_URL });
      await d.connect();
      await d.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await d.end();
    });
    config = { type: 'postgres', url: PG_BASE_URL, schema };
  }
  const ds = new DataSource({ ...config, entities: [ChatFlow, Credential], synchronize: true });
  await ds.initialize();
  cleanups.push(() => ds.destroy());
  const encrypt = (data: object) => CryptoJS.AES.encrypt(JSON.stringify(data), process.env.FLOWISE_SECRETKEY_OVERWRITE).toString();
  const flows = ds.getRepository(ChatFlow);
  const creds = ds.getRepository(Credential);
  return { ds, ChatFlow, Credential, components, encrypt, flows, creds };
}

describe.skipIf(!installed).each(['sqlite', 'postgres'] as const)('a prediction’s credential and analytics settings in one statement (%s)', (kind) => {
  it('finds what the two reads find, and every change to either row from the next read on', { timeout: 120_000 }, async () => {
    const f = await flowiseDatabase(kind);
    const flow = await f.flows.save(f.flows.create({ name: 'f', flowData: '{}', analytic: '', type: 'CHATFLOW', workspaceId: 'w' }));
    const cred = await f.creds.save(f.creds.create({ name: 'Billing ledger', credentialName: 'billingLedger', encryptedData: f.encrypt({ billingTokenSecret: 's1' }), workspaceId: 'w' }));
    const options = { appDataSource: f.ds, databaseEntities: { ChatFlow: f.ChatFlow, Credential: f.Credential }, chatflowid: flow.id };
    const read = () => credentialAndAnalytic(cred.id, options, f.components);

    expect(await read()).toEqual({ data: { billingTokenSecret: 's1' }, analytic: null });
    expect((await read())!.data).toEqual(await credentialData(cred.id, options, f.components));

    const langfuse = JSON.stringify({ langFuse: { credentialId: 'lf-1', status: true } });
    await f.flows.update({ id: flow.id }, { analytic: langfuse });
    await f.creds.update({ id: cred.id }, { encryptedData: f.encrypt({ billingTokenSecret: 's2', ledgerDatabase: 'x' }) });
    expect(await read()).toEqual({ data: { billingTokenSecret: 's2', ledgerDatabase: 'x' }, analytic: langfuse });

    // A deleted credential reads as none (the node then names it not found); another chatflow's settings are not this one's.
    await f.creds.delete({ id: cred.id });
    expect(await read()).toEqual({ data: {}, analytic: langfuse });
    const other = { ...options, chatflowid: randomUUID() };
    const again = await f.creds.save(f.creds.create({ name: 'Billing ledger', credentialName: 'billingLedger', encryptedData: f.encrypt({ billingTokenSecret: 's3' }), workspaceId: 'w' }));
    expect(await credentialAndAnalytic(again.id, other, f.components)).toEqual({ data: { billingTokenSecret: 's3' }, analytic: null });
  });
});

/** A token secret the node accepts (at least 32 bytes). */
const S1 = 'secret-1-0123456789abcdef0123456789';

describe.skipIf(!installed).each(['sqlite', 'postgres'] as const)('a metered variant’s Billing Ledger credential (%s)', (kind) => {
  it('is read with the chatflow’s analytics settings in one statement, once per prediction', { timeout: 120_000 }, async () => {
    const f = await flowiseDatabase(kind);
    const langfuse = JSON.stringify({ langFuse: { credentialId: 'lf-1', status: true } });
    const flow = await f.flows.save(f.flows.create({ name: 'f', flowData: '{}', analytic: langfuse, type: 'CHATFLOW', workspaceId: 'w' }));
    const cred = await f.creds.save(f.creds.create({ name: 'Billing ledger', credentialName: 'billingLedger', encryptedData: f.encrypt({ ledgerDatabase: 'x.db', billingTokenSecret: S1 }), workspaceId: 'w' }));
    const realComponents = flowise.components;
    flowise.components = () => f.components;
    const perRow = vi.spyOn(flowise, 'getCredentialData');
    const statements = vi.spyOn(f.ds, 'query');
    try {
      const node = { label: 'OpenAI (metered)', name: 'chatOpenAIMetered' };
      const inputs = z.object(runSchema).parse({ billingLedgerCredential: cred.id });
      const options = { appDataSource: f.ds, databaseEntities: { ChatFlow: f.ChatFlow, Credential: f.Credential }, chatflowid: flow.id, chatId: `chat-${kind}` };
      const logger = { warn: () => undefined, error: () => undefined };
      const nodeData = { id: 'n1', inputs: {} } as never;
      await predictionRun(node, inputs, nodeData, options, 'question 1', logger);
      // A second metered node of the same prediction: no read of its own.
      await predictionRun(node, inputs, nodeData, options, 'question 1', logger);
      expect(statements).toHaveBeenCalledTimes(1);
      expect(String(statements.mock.calls[0]![0])).toMatch(/credential[\s\S]*chat_flow/i);
      expect(perRow).not.toHaveBeenCalled();
      // What the run opens with: the credential, and the analytics settings read with it (no read of the chatflow of its own).
      const read = await sharedRead('ledgerCredential', `${cred.id}\u0000${predictionRunKey(options, 'question 1')}`, 5_000, () => Promise.reject(new Error('not shared')));
      expect(read).toEqual({ ledgerDatabase: 'x.db', tokenSecret: S1 });
      expect(analyticReadWith(read as object)).toBe(langfuse);

      // The next prediction reads again (an edited credential applies at once); a deleted one is named, and not kept.
      await f.creds.update({ id: cred.id }, { encryptedData: f.encrypt({ ledgerDatabase: 'y.db', billingTokenSecret: S1.replace('1', '2') }) });
      await predictionRun(node, inputs, nodeData, options, 'question 2', logger);
      expect(statements).toHaveBeenCalledTimes(2);
      await f.creds.delete({ id: cred.id });
      await expect(predictionRun(node, inputs, nodeData, options, 'question 3', logger)).rejects.toThrow('OpenAI (metered): the selected Billing Ledger credential was not found');
      await expect(predictionRun(node, inputs, nodeData, options, 'question 3', logger)).rejects.toThrow('was not found');
      expect(statements).toHaveBeenCalledTimes(4);
      await expect(predictionRun(node, z.object(runSchema).parse({}), nodeData, options, 'question 4', logger)).rejects.toThrow('select a Billing Ledger credential (input "Billing Ledger")');
    } finally {
      flowise.components = realComponents;
      perRow.mockRestore();
      statements.mockRestore();
    }
  });
});

describe('where the joint read does not apply', () => {
  it('leaves the reads to the caller: no data source, no chatflow id, or no decryption export', async () => {
    const fc: FlowiseComponents = { getCredentialData: async () => ({}) };
    const withDecrypt: FlowiseComponents = { ...fc, decryptCredentialData: async () => ({}) };
    expect(await credentialAndAnalytic('c1', {}, withDecrypt)).toBeUndefined();
    expect(await credentialAndAnalytic('c1', { appDataSource: {}, databaseEntities: { Credential: {}, ChatFlow: {} } }, withDecrypt)).toBeUndefined();
    expect(await credentialAndAnalytic('c1', { appDataSource: {}, databaseEntities: { Credential: {}, ChatFlow: {} }, chatflowid: 'f' }, fc)).toBeUndefined();
  });
});

describe('the settings read with a credential', () => {
  it('are found by another node file’s copy of the module (node files are bundled one by one), and are no part of the credential', async () => {
    const a = await import('../nodes/shared/prediction-reads');
    vi.resetModules();
    const b = await import('../nodes/shared/prediction-reads');
    expect(b).not.toBe(a);
    const credential = { ledgerDatabase: 'x', tokenSecret: 's' };
    a.keepAnalyticWith(credential, '{"langFuse":{"status":true}}');
    expect(b.analyticReadWith(credential)).toBe('{"langFuse":{"status":true}}');
    expect({ ...credential }).toEqual({ ledgerDatabase: 'x', tokenSecret: 's' });
    expect(JSON.stringify(credential)).toBe('{"ledgerDatabase":"x","tokenSecret":"s"}');
    // Read without the settings (another way, or not read yet): the run reads them itself.
    expect(b.analyticReadWith({ ledgerDatabase: 'x' })).toBeUndefined();
    const none = {};
    a.keepAnalyticWith(none, null);
    expect(b.analyticReadWith(none)).toBeNull();
  });
});
