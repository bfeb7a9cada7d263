const path = require("node:path"); const os = require("node:os"); const fs = require("node:fs");
// Runs a ledger on whatever SQLite driver this Node picks (node:sqlite on Node 24, where better-sqlite3 built for Node 20 cannot load).
const { sqliteDriver } = require(path.join(__dirname, '../../dist/src/ledger/sqlite.js'));
const { openLedger, parseUsd, formatUsd } = require(path.join(__dirname, '../../dist/src/index.js'));
(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'n24-'));
  console.log('node', process.version, 'driver', sqliteDriver());
  const l = await openLedger(path.join(dir, 'b.sqlite'));
  await l.createCustomer({ id: 'c1' });
  await l.topUp({ customerId: 'c1', amount: parseUsd('1'), idempotencyKey: 't1' });
  const hs = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => l.hold({ customerId: 'c1', amount: parseUsd('0.05'), idempotencyKey: 'h' + i })));
  const ok = hs.filter((h) => h.status === 'fulfilled');
  for (const [i, h] of ok.entries()) await l.settle({ holdId: h.value.id, amount: parseUsd('0.05'), idempotencyKey: 's' + i });
  const b = await l.balance('c1');
  console.log('holds ok', ok.length, 'balance', typeof b.balance, formatUsd(b.balance), 'held', formatUsd(b.held));
  const inv = await l.checkInvariants(); console.log('invariants', inv.ok);
  const wal = fs.existsSync(path.join(dir, 'b.sqlite-wal')); console.log('wal file', wal);
  await l.close();
})().catch((e) => { console.error(e); process.exit(1); });
