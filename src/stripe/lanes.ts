import type { CircuitBreaker } from './retry';

/**
 * Runs items in lanes: one item in flight per lane, up to `workers` lanes at
 * once. For meter events a lane is one (customer, meter): Stripe allows one
 * concurrent meter-event call per customer and meter, and many across them.
 *
 * - A throttled item (429) stays at the head of its lane and the lane sleeps
 *   (Retry-After or backoff); other lanes keep going. A lane whose wait runs
 *   past `deadline` gives its items back (`deferred`, with the wait).
 * - The circuit breaker is asked before every call. While it is open nothing
 *   more starts and the remaining items come back `unattempted`. In half-open
 *   one call is the probe and every other worker waits for its result, so a
 *   successful probe lets the rest go on at once.
 * - No new call starts after `deadline` (real time): leased rows must be
 *   recorded before their lease runs out.
 */
export type LaneOutcome =
  /** The item is finished (whatever its verdict); the lane moves on. */
  | { readonly kind: 'next'; readonly serverFailure?: boolean }
  /** Try this item again on this lane after `waitMs`. */
  | { readonly kind: 'throttled'; readonly waitMs: number }
  /** Stop everything (misconfiguration). */
  | { readonly kind: 'halt' };

export interface LaneRun<T> {
  /** Items never attempted (breaker open, halted, past the deadline). */
  readonly unattempted: T[];
  /** Items given back because their lane must wait past the deadline. */
  readonly deferred: Array<{ item: T; delayMs: number }>;
}

export interface LaneOptions {
  readonly workers: number;
  readonly breaker: CircuitBreaker;
  /** The breaker's clock (may be simulated). */
  readonly clock: () => number;
  /** Real-time instant after which no call starts. */
  readonly deadline: number;
  /** Per-lane earliest start (real time), carried across rounds. */
  readonly readyAt?: Map<string, number>;
}

interface Lane<T> {
  readonly key: string;
  readonly items: T[];
  busy: boolean;
}

export async function runLanes<T>(
  items: readonly T[],
  laneOf: (item: T) => string,
  attempt: (item: T, probe: boolean) => Promise<LaneOutcome>,
  opts: LaneOptions,
): Promise<LaneRun<T>> {
  const lanes = new Map<string, Lane<T>>();
  for (const item of items) {
    const key = laneOf(item);
    const lane = lanes.get(key) ?? { key, items: [], busy: false };
    lane.items.push(item);
    lanes.set(key, lane);
  }
  const readyAt = opts.readyAt ?? new Map<string, number>();
  const deferred: Array<{ item: T; delayMs: number }> = [];
  let stopped = false;
  let probe: Promise<void> | null = null;
  let changed: { promise: Promise<void>; resolve: () => void } = signal();
  const notify = () => {
    changed.resolve();
    changed = signal();
  };

  const deferLane = (lane: Lane<T>, delayMs: number) => {
    for (const item of lane.items.splice(0)) deferred.push({ item, delayMs });
  };

  /**
   * Waits until a call may start; `stop` when the breaker is open (no more calls this round).
   * The probe's promise is set in the same tick as the breaker grants it, so no other worker
   * can see "a probe is in flight" without something to wait on.
   */
  const admit = async (): Promise<{ kind: 'go' } | { kind: 'probe'; settled: () => void } | { kind: 'stop' }> => {
    for (;;) {
      if (stopped) return { kind: 'stop' };
      const a = opts.breaker.acquire(opts.clock());
      if (a === 'go') return { kind: 'go' };
      if (a === 'probe') {
        let settled!: () => void;
        probe = new Promise<void>((r) => (settled = r));
        return {
          kind: 'probe',
          settled: () => {
            probe = null;
            settled();
          },
        };
      }
      if (a === 'refused' || probe === null) return { kind: 'stop' };
      await probe;
    }
  };

  const runHead = async (lane: Lane<T>): Promise<void> => {
    lane.busy = true;
    try {
      const admitted = await admit();
      if (admitted.kind === 'stop') {
        stopped = true;
        return;
      }
      const item = lane.items[0]!;
      let outcome: LaneOutcome;
      try {
        outcome = await attempt(item, admitted.kind === 'probe');
      } finally {
        if (admitted.kind === 'probe') admitted.settled();
      }
      if (outcome.kind === 'halt') {
        stopped = true;
        lane.items.shift();
        return;
      }
      if (outcome.kind === 'next') {
        lane.items.shift();
        readyAt.delete(lane.key);
        return;
      }
      const at = Date.now() + outcome.waitMs;
      if (at > opts.deadline) deferLane(lane, outcome.waitMs);
      else readyAt.set(lane.key, at);
    } finally {
      lane.busy = false;
      notify();
    }
  };

  const worker = async (): Promise<void> => {
    for (;;) {
      if (stopped || Date.now() >= opts.deadline) return;
      const now = Date.now();
      let next: Lane<T> | undefined;
      let soonest = Infinity;
      let waiting = false;
      for (const lane of lanes.values()) {
        if (lane.busy || lane.items.length === 0) continue;
        const at = readyAt.get(lane.key) ?? 0;
        if (at > opts.deadline) {
          deferLane(lane, at - now);
          continue;
        }
        if (at <= now) {
          next = lane;
          break;
        }
        waiting = true;
        soonest = Math.min(soonest, at);
      }
      if (next) {
        await runHead(next);
        continue;
      }
      // Lanes still owing items are in flight (their workers carry on with them) or sleeping.
      if (!waiting) return;
      // Whichever comes first: a lane frees up or the soonest sleeping lane is due. The timer is cleared either way,
      // so a finished run leaves nothing behind that would hold the process open.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([changed.promise, new Promise<void>((r) => (timer = setTimeout(r, Math.max(1, soonest - now))))]);
      clearTimeout(timer);
    }
  };

  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.workers, lanes.size)) }, worker));
  const unattempted = [...lanes.values()].flatMap((l) => l.items);
  return { unattempted, deferred };
}

function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
