// One OS process opening (and so migrating) a ledger. argv: target. Waits for "go" on stdin; prints "opened".
const { openLedger } = require('../../dist/src/ledger/open.js');

async function main() {
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const ledger = await openLedger(process.argv[2]);
  await ledger.close();
  process.stdout.write('opened\n');
}

main().catch((e) => {
  process.stderr.write(`${e.code ?? ''} ${e.message}\n`);
  process.exit(1);
});
