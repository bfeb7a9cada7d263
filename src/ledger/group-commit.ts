/** What became of one operation of a group. */
export type GroupOutcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface Waiting<O> {
  op: O;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * Group commit: operations that arrive while a transaction is in flight wait
 * and go together in the next one, so many concurrent callers share one
 * durable commit. A lone caller is never delayed (no timers).
 */
export class GroupCommitter<O> {
  private queue: Waiting<O>[] = [];
  private deferred: Waiting<O>[] = [];
  private deferTimer?: NodeJS.Timeout;
  private flushDeferred = false;
  private running = false;

  constructor(
    private readonly execute: (ops: O[]) => Promise<GroupOutcome[]>,
    private readonly maxBatch: number,
    /** Whether a failed batch is worth retrying op by op (a concurrent writer won a unique-key race). */
    private readonly isRetryable: (e: unknown) => boolean,
  ) {}

  /**
   * `deferrable`: nobody waits for the outcome soon (a run's leftover
   * reservation going back). The operation rides along with the next batch
   * other callers start, at no extra transaction; if none starts within
   * DEFER_MAX_MS it goes on its own.
   */
  submit(op: O, deferrable = false): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (deferrable) {
        this.deferred.push({ op, resolve, reject });
        this.deferTimer ??= setTimeout(() => {
          this.deferTimer = undefined;
          this.flushDeferred = true;
          this.start();
        }, DEFER_MAX_MS);
        return;
      }
      this.queue.push({ op, resolve, reject });
      this.start();
    });
  }

  /** Sends whatever is deferred now and waits until nothing is queued (shutdown). */
  async flush(): Promise<void> {
    while (this.queue.length || this.deferred.length || this.running) {
      this.flushDeferred = true;
      this.start();
      await new Promise<void>((r) => setTimeout(r, 1));
    }
  }

  private start(): void {
    if (this.running) return;
    this.running = true;
    // Let the callers that are about to submit in this same turn join the first batch.
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    try {
      // Deferred operations alone start no batch until their time is up (or a flush).
      while (this.queue.length || (this.flushDeferred && this.deferred.length)) {
        // Deferred operations go first: they were submitted earlier (a release may return money a hold in the batch needs).
        let batch: Waiting<O>[];
        if (this.deferred.length === 0 && this.queue.length <= this.maxBatch) {
          // The usual case: the whole queue is the batch, taken without copying.
          this.nothingDeferred();
          batch = this.queue;
          this.queue = [];
        } else {
          const riders = this.deferred.splice(0, this.maxBatch);
          if (!this.deferred.length) this.nothingDeferred();
          batch = [...riders, ...this.queue.splice(0, this.maxBatch - riders.length)];
        }
        const ops = new Array<O>(batch.length);
        for (let i = 0; i < batch.length; i++) ops[i] = batch[i]!.op;
        try {
          settle(batch, await this.execute(ops));
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

  /** Every deferred operation is in a batch: no timer or flush is owed for them. */
  private nothingDeferred(): void {
    clearTimeout(this.deferTimer);
    this.deferTimer = undefined;
    this.flushDeferred = false;
  }

  private async runAlone(w: Waiting<O>, firstError: unknown): Promise<void> {
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

/** The longest a deferrable operation waits for a batch to ride along with. */
const DEFER_MAX_MS = 300;

function settle<O>(batch: Waiting<O>[], outcomes: GroupOutcome[]): void {
  for (let i = 0; i < batch.length; i++) {
    const o = outcomes[i]!;
    if (o.ok) batch[i]!.resolve(o.value);
    else batch[i]!.reject(o.error);
  }
}
