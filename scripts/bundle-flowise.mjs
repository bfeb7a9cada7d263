/**
 * Build step: bundles what the installer copies into flowise-components, so an
 * install is a handful of files instead of a node_modules tree.
 *
 *   dist/flowise/engine/index.js          src/flowise.ts (src/plugin) and everything it needs (zod, jsonwebtoken, pg, langfuse…)
 *   dist/flowise/engine/packages.json     the packages inlined, with versions
 *   dist/flowise/nodes/<Node>/<Node>.js    each node folder under nodes/ (+ its icon), requiring the engine as `flowise-billing`
 *   dist/flowise/credentials/*.credential.js
 *
 * Left out of the bundle: `@langchain/*` (must be flowise-components' own copy),
 * better-sqlite3 (native, built for one Node ABI; Flowise's Node 24 has node:sqlite)
 * and pg's optional native/cloudflare back ends.
 * Node and credential discovery is by folder, so a new node needs no change here.
 */
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'flowise');
const ICON = /\.(svg|png|jpg)$/;
const EXTERNAL = ['@langchain/*', 'langchain', 'better-sqlite3', 'pg-native', 'pg-cloudflare', 'cloudflare:sockets', 'flowise-components'];
const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', logLevel: 'warning', legalComments: 'none', charset: 'utf8' };

const pluginEntry = path.join(root, 'src', 'plugin', 'index.ts');
/** Node files reach the engine only through src/plugin, which becomes the shared engine bundle (one ledger cache per process). */
const engineAsExternal = {
  name: 'engine-as-external',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      const abs = path.resolve(args.resolveDir, args.path);
      const inSrc = !path.relative(path.join(root, 'src'), abs).startsWith('..');
      if (!inSrc) return undefined;
      if (abs === path.dirname(pluginEntry) || abs === pluginEntry.replace(/\.ts$/, '')) return { path: 'flowise-billing', external: true };
      return { errors: [{ text: `${path.relative(root, args.importer)} imports ${args.path}: nodes may import the engine only through src/plugin` }] };
    });
  },
};

fs.rmSync(out, { recursive: true, force: true });

const nodeDirs = fs
  .readdirSync(path.join(root, 'nodes'), { withFileTypes: true })
  .filter((e) => e.isDirectory() && fs.existsSync(path.join(root, 'nodes', e.name, `${e.name}.ts`)))
  .map((e) => e.name)
  .sort();
const credentials = fs
  .readdirSync(path.join(root, 'credentials'))
  .filter((f) => f.endsWith('.credential.ts'))
  .sort();

const engine = await build({ ...common, entryPoints: [path.join(root, 'src', 'flowise.ts')], outfile: path.join(out, 'engine', 'index.js'), external: EXTERNAL, metafile: true });
// Which packages the engine inlines, with versions: reported by install and kept in its manifest.
const inlined = {};
for (const input of Object.keys(engine.metafile.inputs)) {
  const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (!m || inlined[m[1]]) continue;
  const dir = input.slice(0, m.index + m[0].length);
  inlined[m[1]] = JSON.parse(fs.readFileSync(path.join(root, dir, 'package.json'), 'utf8')).version;
}
fs.writeFileSync(path.join(out, 'engine', 'packages.json'), JSON.stringify(Object.fromEntries(Object.entries(inlined).sort()), null, 2) + '\n');
await build({
  ...common,
  entryPoints: Object.fromEntries(nodeDirs.map((n) => [`${n}/${n}`, path.join(root, 'nodes', n, `${n}.ts`)])),
  outdir: path.join(out, 'nodes'),
  external: EXTERNAL,
  plugins: [engineAsExternal],
});
await build({
  ...common,
  entryPoints: Object.fromEntries(credentials.map((f) => [f.replace(/\.ts$/, ''), path.join(root, 'credentials', f)])),
  outdir: path.join(out, 'credentials'),
  external: EXTERNAL,
});
for (const n of nodeDirs) {
  for (const f of fs.readdirSync(path.join(root, 'nodes', n)).filter((x) => ICON.test(x))) {
    fs.copyFileSync(path.join(root, 'nodes', n, f), path.join(out, 'nodes', n, f));
  }
}
const files = [];
const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : files.push(path.join(d, e.name))));
walk(out);
const bytes = files.reduce((n, f) => n + fs.statSync(f).size, 0);
console.log(`bundle-flowise: ${files.length} files, ${(bytes / 1e6).toFixed(2)} MB in ${path.relative(root, out)} (${nodeDirs.length} nodes, ${credentials.length} credentials)`);
