import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

/** A directory shaped like `npm install flowise`: node_modules/{flowise, flowise-components (with its own @langchain/core)}. */
export function fakeFlowise(): { dir: string; fc: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-installer-'));
  const nm = path.join(dir, 'node_modules');
  const fc = path.join(nm, 'flowise-components');
  fs.mkdirSync(path.join(fc, 'dist', 'nodes', 'moderation', 'SimplePromptModeration'), { recursive: true });
  fs.mkdirSync(path.join(fc, 'dist', 'credentials'), { recursive: true });
  fs.mkdirSync(path.join(fc, 'dist', 'src'), { recursive: true });
  fs.writeFileSync(path.join(fc, 'package.json'), JSON.stringify({ name: 'flowise-components', version: '3.1.4', main: 'dist/src/index.js' }));
  fs.writeFileSync(path.join(fc, 'dist', 'src', 'index.js'), 'exports.getCredentialData = async () => ({});\n');
  fs.writeFileSync(path.join(fc, 'dist', 'nodes', 'moderation', 'SimplePromptModeration', 'SimplePromptModeration.js'), 'module.exports = {};\n');
  fs.writeFileSync(path.join(fc, 'dist', 'credentials', 'OpenAIApi.credential.js'), 'module.exports = {};\n');
  // flowise-components' own @langchain/core (a link to ours, so its dependencies resolve: what matters is where it resolves)
  fs.mkdirSync(path.join(fc, 'node_modules', '@langchain'), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules', '@langchain', 'core'), path.join(fc, 'node_modules', '@langchain', 'core'), 'dir');
  fs.mkdirSync(path.join(nm, 'flowise'), { recursive: true });
  fs.writeFileSync(path.join(nm, 'flowise', 'package.json'), JSON.stringify({ name: 'flowise', version: '3.1.4' }));
  return { dir, fc };
}
