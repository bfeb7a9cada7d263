import type { Op, Outcome } from './batch';

interface Waiting {
  op: Op;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * Group commit: operations that arrive while a transaction is in flight wait
 * and go together in the next one, so many concurrent callers share one
 * durable commit. A lone caller is never delayed (no timers).
 */
export class GroupCommitter {
  private queue: Waiting[] = [];
  private running = false;

  constructor(
    private readonly execute: (ops: Op[]) => Promise<Outcome[]>,
    private readonly maxBatch: number,
    /** Whether a failed batch is worth retrying op by op (a concurrent writer won a unique-key race). */
    private readonly isRetryable: (e: unknown) => boolean,
  ) {}

  submit(op: Op): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      if (!this.running) {
        this.running = true;
        // Let the callers that are about to submit in this same turn join the first batch.
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          settle(batch, await this.execute(batch.map((w) => w.op)));
        } catch (e) {
          // One bad operation must not fail its neighbours: retry each alone.
          for (const w of batch) await this.runAlone(w, batch.length > 1 ? undefined : e);
        }
        // Callers whose operation just finished submit their next one in the following microtasks; wait for them.
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.running = false;
    }
  }

  private async runAlone(w: Waiting, firstError: unknown): Promise<void> {
    let lastError = firstError;
    for (let attempt = firstError === undefined ? 0 : 1; attempt < 4; attempt++) {
      if (attempt > 0 && !this.isRetryable(lastError)) break;
      try {
        settle([w], await this.execute([w.op]));
        return;
      } catch (e) {
        lastError = e;
      }
    }
    w.reject(lastError);
  }
}

function settle(batch: Waiting[], outcomes: Outcome[]): void {
  batch.forEach((w, i) => {
    const o = outcomes[i]!;
    if (o.ok) w.resolve(o.value);
    else w.reject(o.error);
  });
}
