// One lone caller's holds and settles on an SQLite ledger whose WAL a thread checkpoints.
// argv: target mode (crash: until killed, "checkpointing" once the thread has run; exit: 1,500 pairs, then
// "checkpoints N" and no close: the process must end by itself). Every 100th settle prints "acked <n>".
const { openLedger } = require('../../dist/src/ledger/open.js');

const [target, mode] = process.argv.slice(2);
const say = (line) => process.stdout.write(`${line}\n`);

(async () => {
  const ledger = await openLedger(target, { sqlite: { checkpoint: 'background' } });
  say('ready');
  let told = false;
  for (let i = 0; mode === 'crash' || i < 1500; i++) {
    const h = await ledger.hold({ customerId: 'ckpt', amount: 5000n, idempotencyKey: `h:${i}` });
    await ledger.settle({ holdId: h.id, amount: 1000n, idempotencyKey: `s:${i}` });
    if ((i + 1) % 100 === 0) say(`acked ${i + 1}`);
    if (!told && ledger.dialect.backgroundCheckpoints() > 0) {
      told = true;
      if (mode === 'crash') say('checkpointing');
    }
  }
  for (let t = 0; t < 250 && ledger.dialect.backgroundCheckpoints() === 0; t++) await new Promise((r) => setTimeout(r, 20));
  say(`checkpoints ${ledger.dialect.backgroundCheckpoints()}`);
})().catch((e) => {
  process.stderr.write(String(e.stack || e));
  process.exit(1);
});
