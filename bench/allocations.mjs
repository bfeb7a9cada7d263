// What the allocation benches share (batch-cpu.mjs, metering-alloc.mjs): their command-line options,
// a count of V8's garbage collections, and a sampled heap profile of a piece of work.
import { Session } from 'node:inspector';
import { PerformanceObserver, constants } from 'node:perf_hooks';

/** `--name value` from the command line, or `dflt`. */
export function cliOption(args) {
  return (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
  };
}

/** Counts young-generation (minor) and full (major) GCs between start() and stop(). */
export function gcCounter() {
  const counts = { minor: 0, major: 0 };
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = e.detail?.kind ?? e.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) counts.minor++;
      else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) counts.major++;
    }
  });
  return {
    start() {
      counts.minor = counts.major = 0;
      obs.observe({ entryTypes: ['gc'] });
    },
    /** GC entries arrive asynchronously: the last ones are in after a turn. */
    async stop() {
      await new Promise((r) => setTimeout(r, 20));
      obs.disconnect();
      return { ...counts };
    },
  };
}

/**
 * The V8 heap profile of `work()`: every allocation, including objects a GC already collected, sampled
 * every `intervalBytes` on average.
 */
export async function sampleAllocations(work, intervalBytes) {
  const session = new Session();
  session.connect();
  const post = (method, params) => new Promise((res, rej) => session.post(method, params, (e, r) => (e ? rej(e) : res(r))));
  try {
    await post('HeapProfiler.enable');
    await post('HeapProfiler.startSampling', { samplingInterval: intervalBytes, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true });
    await work();
    return (await post('HeapProfiler.stopSampling')).profile;
  } finally {
    session.disconnect();
  }
}

/** A profile frame as `function file:line`, with paths shortened to dist/… or node_modules/…. */
export const frameSite = (f) => `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;
