// node bench/flowise-reads.mjs: the two reads a metered chatflow prediction makes in Flowise's own
// database, client CPU per read (process.cpuUsage), against the real Flowise entities (typeorm) and
// flowise-components' decryption, on PostgreSQL (checking first that the joint read finds what the two find):
//   - the Billing Ledger credential: Flowise's getCredentialData (row + AES decryption every time) vs
//     the nodes' credentialData (row every time, decryption only when the ciphertext changed);
//   - the chatflow's Langfuse settings: the whole row (its flowData is the metered example's ~21 KB)
//     vs the analytic column only;
//   - both in one plain statement (what the nodes do where Flowise allows it).
// Needs `npm run build` and the Flowise install (FLOWISE_BILLING_CACHE or ~/.cache/flowise-billing/flowise-3.1.4).
// Env: BENCH_PG (postgres://postgres@127.0.0.1:5432; a database is created and dropped), BENCH_READS (2000).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FLOWISE = path.resolve(process.env.FLOWISE_BILLING_CACHE || path.join(os.homedir(), '.cache', 'flowise-billing', 'flowise-3.1.4'));
const fromFlowise = createRequire(path.join(FLOWISE, 'node_modules', 'flowise', 'package.json'));
const require = createRequire(import.meta.url);
fromFlowise('reflect-metadata');
const { DataSource } = fromFlowise('typeorm');
const { ChatFlow } = fromFlowise('./dist/database/entities/ChatFlow.js');
const { Credential } = fromFlowise('./dist/database/entities/Credential.js');
const components = fromFlowise('flowise-components');
const CryptoJS = fromFlowise('crypto-js');
const { credentialData } = require('../dist/nodes/shared/flowise.js');
const { credentialAndAnalytic } = require('../dist/nodes/shared/prediction-reads.js');

const N = Number(process.env.BENCH_READS ?? 2000);
const server = new URL(process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432');
const dbName = `fb_reads_${process.pid}`;
const pg = require('pg');
async function admin(sql) {
  const u = new URL(server.href);
  u.pathname = '/postgres';
  const c = new pg.Client({ connectionString: u.href });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

process.env.FLOWISE_SECRETKEY_OVERWRITE ||= 'bench-flowise-reads-secret-key';
await admin(`CREATE DATABASE ${dbName}`);
const ds = new DataSource({
  type: 'postgres',
  host: server.hostname,
  port: Number(server.port || 5432),
  username: decodeURIComponent(server.username || 'postgres'),
  password: decodeURIComponent(server.password),
  database: dbName,
  entities: [ChatFlow, Credential],
  synchronize: true,
});
try {
  await ds.initialize();
  const flowData = JSON.stringify(JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'metered-conversation-chatflow.json'), 'utf8')));
  const flows = ds.getRepository(ChatFlow);
  const flow = await flows.save(flows.create({ name: 'bench', flowData, analytic: '', type: 'CHATFLOW', workspaceId: 'w' }));
  const creds = ds.getRepository(Credential);
  const encryptedData = CryptoJS.AES.encrypt(JSON.stringify({ ledgerDatabase: '', billingTokenSecret: 'bench-flowise-reads-token-secret-0123456789' }), process.env.FLOWISE_SECRETKEY_OVERWRITE).toString();
  const cred = await creds.save(creds.create({ name: 'Billing ledger', credentialName: 'billingLedger', encryptedData, workspaceId: 'w' }));
  const options = { appDataSource: ds, databaseEntities: { ChatFlow, Credential }, chatflowid: flow.id };
  // The joint read must find what the two reads find.
  const joint = await credentialAndAnalytic(cred.id, options, components);
  const apart = { data: await credentialData(cred.id, options, components), analytic: (await flows.findOne({ where: { id: flow.id }, select: { id: true, analytic: true } })).analytic || null };
  if (JSON.stringify(joint) !== JSON.stringify(apart)) throw new Error(`the joint read differs: ${JSON.stringify(joint)} vs ${JSON.stringify(apart)}`);

  const perRead = async (fn) => {
    for (let i = 0; i < 200; i++) await fn();
    const t = process.cpuUsage();
    for (let i = 0; i < N; i++) await fn();
    const u = process.cpuUsage(t);
    return (u.user + u.system) / 1000 / N;
  };
  const rows = [
    ['credential: Flowise getCredentialData (decrypts every read)', () => components.getCredentialData(cred.id, options)],
    ['credential: nodes credentialData (decrypts on change)', () => credentialData(cred.id, options, components)],
    [`chatflow: whole row (flowData ${(flowData.length / 1024).toFixed(0)} KB)`, () => flows.findOneBy({ id: flow.id })],
    ['chatflow: analytic column only', () => flows.findOne({ where: { id: flow.id }, select: { id: true, analytic: true } })],
    ['credential + analytic column: one statement (nodes credentialAndAnalytic)', () => credentialAndAnalytic(cred.id, options, components)],
  ];
  console.log(`Flowise reads, client CPU ms per read (${N} reads each, 2 passes), Node ${process.version}`);
  for (let pass = 1; pass <= 2; pass++) for (const [label, fn] of rows) console.log(`  pass ${pass}  ${label.padEnd(76)} ${(await perRead(fn)).toFixed(3)}`);
} finally {
  await ds.destroy().catch(() => undefined);
  await admin(`DROP DATABASE IF EXISTS ${dbName}`);
}
