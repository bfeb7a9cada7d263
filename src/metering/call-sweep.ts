/**
 * One timer for the whole process that looks after the LLM calls in flight of every metering handler
 * (see CallWatch.sweep in call-watch.ts): a call writes nothing to the ledger between its hold and its
 * settle, so nothing else notices that its reservation is about to lapse, or that LangChain will never end it
 * (a stream whose consumer stopped reading). A timer per call would cost every call a timer; this one runs
 * while some handler has a call in flight, at the shortest interval any of them asks for.
 */

export interface SweepTarget {
  /** Looks at its calls in flight; returns the interval it wants until the next look, or undefined when it has none. */
  sweep(now: number): number | undefined;
}

const targets = new Set<SweepTarget>();
let timer: NodeJS.Timeout | undefined;
let every = Infinity;

/** Keeps `target` swept every `intervalMs` (or sooner) until its sweep says it has nothing in flight. */
export function watchCalls(target: SweepTarget, intervalMs: number): void {
  targets.add(target);
  if (timer && intervalMs >= every) return;
  if (timer) clearTimeout(timer);
  schedule(intervalMs);
}

function schedule(ms: number): void {
  every = ms;
  timer = setTimeout(sweep, ms);
  // A sweep never keeps a process alive: a process that exits has no calls left to look after.
  timer.unref();
}

function sweep(): void {
  timer = undefined;
  every = Infinity;
  const now = Date.now();
  let next = Infinity;
  for (const t of targets) {
    let want: number | undefined;
    try {
      want = t.sweep(now);
    } catch {
      // A target's own failure is its business (handlers report theirs to onError); the others are still swept.
    }
    if (want === undefined) targets.delete(t);
    else if (want < next) next = want;
  }
  if (next < Infinity) schedule(next);
}

/** How often the calls of a run whose reservation lives `lifetimeMs` are looked at: 8 times a lifetime, within 25 ms – 15 s. */
export function sweepInterval(lifetimeMs: number): number {
  return Math.min(15_000, Math.max(25, Math.floor(lifetimeMs / 8)));
}
