/**
 * The little the billing nodes need from Flowise, typed locally so this
 * package does not depend on flowise-components at build time. At run time the
 * nodes live inside flowise-components/dist/nodes/billing/, and the helpers
 * here find that flowise-components by walking up from this file.
 */
import fs from 'node:fs';
import path from 'node:path';

export type ICommonObject = { [key: string]: any };

export interface INodeParams {
  label: string;
  name: string;
  type: string;
  default?: unknown;
  description?: string;
  placeholder?: string;
  optional?: boolean;
  additionalParams?: boolean;
  options?: Array<{ label: string; name: string; description?: string }>;
  credentialNames?: string[];
  rows?: number;
  step?: number;
  list?: boolean;
  acceptVariable?: boolean;
  show?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface INodeData {
  id: string;
  label?: string;
  name?: string;
  inputs?: ICommonObject;
  outputs?: ICommonObject;
  credential?: string;
  [key: string]: unknown;
}

export interface INode {
  label: string;
  name: string;
  version: number;
  type: string;
  icon: string;
  category: string;
  description: string;
  baseClasses: string[];
  inputs?: INodeParams[];
  credential?: INodeParams;
  color?: string;
  init?(nodeData: INodeData, input: string, options?: ICommonObject): Promise<any>;
  run?(nodeData: INodeData, input: string, options?: ICommonObject): Promise<any>;
}

export interface Logger {
  warn(message: string, ...rest: unknown[]): void;
  error(message: string, ...rest: unknown[]): void;
  info?(message: string, ...rest: unknown[]): void;
}

export interface FlowiseComponents {
  getCredentialData(credentialId: string, options: ICommonObject): Promise<ICommonObject>;
  decryptCredentialData?(encryptedData: string): Promise<ICommonObject>;
}

let components: FlowiseComponents | undefined;

/** flowise-components: the package these files were installed into, else whatever `require` finds. */
function flowiseComponents(): FlowiseComponents {
  if (components) return components;
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (!fs.existsSync(pkg)) continue;
    try {
      if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'flowise-components') {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        components = require(dir) as FlowiseComponents;
        return components;
      }
    } catch {
      // unreadable package.json: keep walking
    }
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  components = require('flowise-components') as FlowiseComponents;
  return components;
}

/** Decrypted credentials by id, with the ciphertext they came from (see credentialData). */
const decrypted = new Map<string, { encryptedData: string; data: ICommonObject }>();
const DECRYPTED_MAX = 64;

/**
 * Flowise's getCredentialData without decrypting the same ciphertext again:
 * the row is read every time (an edited or deleted credential applies at
 * once, as with Flowise's own), but its AES decryption (crypto-js, a key
 * derivation each time: about 0.1–0.3 ms, once or twice per metered
 * prediction) is done only when the stored ciphertext changed.
 */
export async function credentialData(credentialId: string, options: ICommonObject, fc: FlowiseComponents = flowise.components()): Promise<ICommonObject> {
  const entity = options?.databaseEntities?.Credential;
  if (!credentialId || !options?.appDataSource || !entity || typeof fc.decryptCredentialData !== 'function') return fc.getCredentialData(credentialId, options);
  const row = (await options.appDataSource.getRepository(entity).findOneBy({ id: credentialId })) as { encryptedData?: unknown } | null;
  return decryptedRow(credentialId, row?.encryptedData, (enc) => fc.decryptCredentialData!(enc));
}

/**
 * A credential's data from its row's ciphertext, just read (nothing: no row, `{}`), decrypted only when the
 * ciphertext differs from the last one seen for this id.
 */
export async function decryptedRow(credentialId: string, encryptedData: unknown, decrypt: (encryptedData: string) => Promise<ICommonObject>): Promise<ICommonObject> {
  if (typeof encryptedData !== 'string') {
    decrypted.delete(credentialId);
    return {};
  }
  const hit = decrypted.get(credentialId);
  if (hit && hit.encryptedData === encryptedData) return { ...hit.data };
  const data = await decrypt(encryptedData);
  if (decrypted.size >= DECRYPTED_MAX) decrypted.clear();
  decrypted.set(credentialId, { encryptedData, data: { ...data } });
  return data;
}

/** flowise-components' decryption of a credential row, when this Flowise exports it. */
export function credentialDecryption(fc: FlowiseComponents = flowise.components()): ((encryptedData: string) => Promise<ICommonObject>) | undefined {
  return typeof fc.decryptCredentialData === 'function' ? (enc) => fc.decryptCredentialData!(enc) : undefined;
}

/** Seams for tests; the defaults call Flowise. */
export const flowise = {
  components: (): FlowiseComponents => flowiseComponents(),
  getCredentialData: (credentialId: string, options: ICommonObject): Promise<ICommonObject> => credentialData(credentialId, options),
};

/** The credential id a node was saved with (chatflow: `credential`; while editing / agentflow: `FLOWISE_CREDENTIAL_ID`). */
export function credentialIdOf(nodeData: INodeData): string | undefined {
  const id = nodeData.credential || nodeData.inputs?.FLOWISE_CREDENTIAL_ID;
  return typeof id === 'string' && id ? id : undefined;
}

export function loggerOf(options: ICommonObject | undefined): Logger {
  const l = options?.logger;
  if (l && typeof l.warn === 'function' && typeof l.error === 'function') return l as Logger;
  return console;
}

const credentialInputCache = new Map<string, Array<{ name: string; type: string }>>();

/** The inputs of a Flowise credential type (e.g. `openAIApi` → openAIApiKey), read from flowise-components' credential files. */
export function credentialInputs(credentialName: string): Array<{ name: string; type: string }> {
  if (credentialInputCache.size === 0) {
    let dir: string | undefined;
    for (let d = __dirname; path.dirname(d) !== d; d = path.dirname(d)) {
      const pkg = path.join(d, 'package.json');
      try {
        if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'flowise-components') {
          dir = path.join(d, 'dist', 'credentials');
          break;
        }
      } catch {
        // keep walking
      }
    }
    if (!dir || !fs.existsSync(dir)) return [];
    for (const f of fs.readdirSync(dir)) {
      if (!f.endsWith('.credential.js')) continue;
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const Cred = require(path.join(dir, f)).credClass;
        const c = new Cred();
        credentialInputCache.set(c.name, (c.inputs ?? []).map((i: { name: string; type: string }) => ({ name: i.name, type: i.type })));
      } catch {
        // a credential file that does not load is not ours to report
      }
    }
  }
  return credentialInputCache.get(credentialName) ?? [];
}
