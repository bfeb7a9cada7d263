import { describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { BACKENDS } from './support/backends';

const CENT = parseUsd('0.01');

describe.each(BACKENDS)('group commit on $name', (backend) => {
  // A server hears each request in its own I/O callback, not in one synchronous turn: operations arriving in the
  // same event-loop pass must still share a transaction, or every request pays a commit of its own.
  it('operations submitted from separate callbacks of one event-loop pass share a batch', async () => {
    const batches: number[] = [];
    const ledger = await backend.open(await backend.freshTarget(), {
      onBatch: async (_c, outcomes) => {
        if (outcomes.some((o) => o.operation === 'hold')) batches.push(outcomes.length);
      },
    });
    try {
      await ledger.createCustomer({ id: 'burst' });
      await ledger.topUp({ customerId: 'burst', amount: parseUsd('10'), idempotencyKey: 'seed' });
      const n = 24;
      const holds = await new Promise<Promise<unknown>[]>((resolve) => {
        const out: Promise<unknown>[] = [];
        for (let i = 0; i < n; i++) {
          setImmediate(() => {
            out.push(ledger.hold({ customerId: 'burst', amount: CENT, idempotencyKey: `h${i}` }));
            if (out.length === n) resolve(out);
          });
        }
      });
      await Promise.all(holds);
      expect(batches.reduce((a, b) => a + b, 0)).toBe(n);
      expect(batches.length).toBe(1);
      expect((await ledger.balance('burst')).held).toBe(CENT * BigInt(n));
    } finally {
      await ledger.close();
    }
  });

  it('a deferrable release rides in the next batch other operations start, or goes alone', async () => {
    const batches: string[][] = [];
    const ledger = await backend.open(await backend.freshTarget(), {
      onBatch: async (_c, outcomes) => {
        batches.push(outcomes.map((o) => o.operation));
      },
    });
    try {
      await ledger.createCustomer({ id: 'ride' });
      await ledger.topUp({ customerId: 'ride', amount: parseUsd('10'), idempotencyKey: 'seed' });
      const first = await ledger.hold({ customerId: 'ride', amount: CENT, idempotencyKey: 'r1' });
      batches.length = 0;
      const released = ledger.release({ holdId: first.id, idempotencyKey: 'r1-end', deferrable: true });
      // Another caller's operation a moment later: the release travels with it, first.
      await new Promise((r) => setTimeout(r, 20));
      await ledger.hold({ customerId: 'ride', amount: CENT, idempotencyKey: 'r2' });
      expect((await released).status).toBe('released');
      expect(batches).toEqual([['release', 'hold']]);
      // Alone, it is not kept waiting for company forever.
      const second = await ledger.getHold((await ledger.hold({ customerId: 'ride', amount: CENT, idempotencyKey: 'r3' })).id);
      batches.length = 0;
      expect((await ledger.release({ holdId: second.id, idempotencyKey: 'r3-end', deferrable: true })).status).toBe('released');
      expect(batches).toEqual([['release']]);
      expect((await ledger.balance('ride')).held).toBe(CENT);
    } finally {
      await ledger.close();
    }
  });
});
