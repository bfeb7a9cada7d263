// Makes package.json's bin targets executable after a build. npm marks them itself only when it links them
// (an install, or npx's first run in a project); tsc writes them without the mode, so a later run that finds
// the link already in npx's cache (a fresh clone at the same path, a rebuild) got "Permission denied".
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { bin } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
for (const target of Object.values(typeof bin === 'string' ? { bin } : bin ?? {})) {
  const file = path.join(root, target);
  // Read, execute for everyone who may read it: what npm's bin links set.
  fs.chmodSync(file, fs.statSync(file).mode | 0o111);
}
