import { estimateTextTokens } from './estimate';
import { type SweepTarget, sweepInterval } from './call-sweep';
import { settleLateEnd } from './late-end';
import { type RootState, setBounded, type StepState } from './run-state';
import type { RunTracker } from './run-tracker';

/**
 * The LLM calls LangChain may never end: a stream its consumer aborted or dropped, a call with no answer
 * for a whole hold lifetime. Watches each call's abort signal, makes the call sweep's decisions for it
 * (keep its run's reservation alive, end a dropped stream, charge an unanswered call), applies the
 * stream-cut rule and settles a late end. One per handler object; the first one is its copies' sweep target.
 */
export class CallWatch implements SweepTarget {
  constructor(private readonly runs: RunTracker) {}

  /**
   * A stream whose consumer aborts it gets no end or error callback from LangChain (its generator is
   * dropped, and so is the stream of every chain around it): the call stayed held until the hold expired,
   * its output was never charged and the run never ended. The call's own abort signal ends it instead:
   * the call is settled by the stream-cut rule (or released), then the run ends once nothing priced is in
   * flight. When LangChain does report the error (a non-streaming call, or a stream waiting on the
   * network, whose aborted request rejects), whichever comes first does it.
   *
   * The listener runs inside `abort()`, i.e. in the consumer's loop body, before the work already queued:
   * the end waits one turn (setImmediate), so that a token report under way lands first and LangChain's own
   * error, when the provider was waiting on the network, ends the call instead.
   */
  watchAbort(step: StepState, signal: AbortSignal | undefined): void {
    if (!signal || signal.aborted) return;
    const onAbort = () => {
      setImmediate(() => this.aborted(step.runId).catch((e: unknown) => this.runs.fail(e, { operation: 'end aborted call', runId: step.runId })));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    step.stopWatching = () => signal.removeEventListener('abort', onAbort);
  }

  private async aborted(runId: string): Promise<void> {
    const step = this.runs.state.steps.get(runId);
    // LangChain's own end or error got there first: it ends the call (and its error ends the chains around it).
    if (!step || step.ending) return;
    const root = this.runs.state.roots.get(step.rootId);
    // Still here a turn after the abort, with LangChain silent: its stream stopped at a yield (an aborted
    // stream's generator is never resumed), so the chunk it yielded last was never reported.
    await this.cut(step, PARKED_CHUNK, 'stream cut short');
    if (root) await this.endUnlessPriced(root);
  }

  /** Ends a run LangChain will not end (its stream was dropped) once nothing priced is in flight in it. */
  private async endUnlessPriced(root: RootState): Promise<void> {
    const state = this.runs.state;
    if (!state.roots.has(root.id)) return;
    const priced = [...root.steps].some((id) => {
      const s = state.steps.get(id);
      return s !== undefined && s.kind !== 'chain';
    });
    if (!priced) await this.runs.finishRoot(root, true);
  }

  /**
   * The process's call sweep (call-sweep.ts), every eighth of a reservation's lifetime while calls are in
   * flight. A call writes nothing between its hold and its settle, so:
   *  - a call that shows life (a streamed token since the last look, or no token yet and younger than
   *    the lifetime) keeps its run's reservation alive past half its lifetime: one model call longer than
   *    half the lifetime had its settle refused as HOLD_EXPIRED (answered, unpaid);
   *  - a stream that reported tokens and then nothing for a whole lifetime was dropped by its consumer
   *    (`break` out of `for await`: LangChain's generator is returned at a yield and reports nothing, no
   *    end, no error): it is settled by the stream-cut rule with the chunk in the consumer's hand, while
   *    its reservation still lives (it was kept alive until then), and its run ends if nothing priced
   *    remains. Its output was never charged before (the hold just expired). A late end of it finds
   *    nothing to do.
   *  - a call without any token report for a whole lifetime is charged its prompt estimate (see unanswered).
   * A priced tool running longer than a lifetime is left to its end; its reservation then lapses and its
   * charge is taken directly from what is available (run-ledger.ts, settleStep).
   */
  sweep(now: number): number | undefined {
    const runs = this.runs;
    let want: number | undefined;
    for (const step of runs.state.steps.values()) {
      // A priced tool drawn from the reservation is swept like a model call without tokens (it never streams);
      // one on a hold of its own has that hold's lifetime.
      if (!step.hold || step.ending || (step.kind === 'tool' ? step.hold.via !== 'reservation' : step.kind !== 'llm')) continue;
      const run = runs.state.roots.get(step.rootId)?.run;
      if (!run || run.ended || !Number.isFinite(run.lifetimeMs)) continue;
      const life = run.lifetimeMs;
      const every = sweepInterval(life);
      want = want === undefined || every < want ? every : want;
      if (step.tokenEvents !== step.sweptTokens) {
        step.sweptTokens = step.tokenEvents;
        step.quietSince = now;
      }
      if (now - (step.quietSince ?? step.startTime.getTime()) < life) {
        run.keepAlive(() => runs.key(step.runId, `alive:${(step.keptAlive = (step.keptAlive ?? 0) + 1)}`), now)?.catch((e: unknown) => runs.fail(e, { operation: 'keep reservation', runId: step.runId }));
      } else if (step.tokenEvents > 0) {
        this.abandoned(step).catch((e: unknown) => runs.fail(e, { operation: 'end dropped stream', runId: step.runId }));
      } else if (step.kind === 'llm') {
        this.unanswered(step).catch((e: unknown) => runs.fail(e, { operation: 'charge unanswered call', runId: step.runId }));
      }
    }
    return want;
  }

  /**
   * A call with no token report for a whole lifetime: a stream dropped before its first report (LangChain
   * reports a chunk only after its consumer asks for the next, and OpenAI's first chunk carries no text, so
   * a consumer that breaks on it leaves no trace) looks exactly like a call still waiting for its answer.
   * Left alone, its reservation lapsed and a provider call that consumed its prompt went unpaid. It is
   * charged its prompt estimate now, while the reservation lives (the sweep kept it alive until now), and
   * leaves the run (a run that was only this call ends, with its fee; a chain around it has its fee taken
   * now, as nothing may ever end it, and stays open for the call's late end). A late end or error of the
   * call charges or refunds the difference to its actual usage (see lateEnd): never the call twice.
   */
  private async unanswered(step: StepState): Promise<void> {
    const runs = this.runs;
    const root = runs.state.roots.get(step.rootId);
    if (step.ending || !step.hold || !root?.run) return;
    step.ending = true;
    step.unanswered = {};
    const charge = await runs.settleTokens(step, { inputTokens: step.promptEstimate, outputTokens: 0, source: 'estimate' }, 'no answer within the hold lifetime');
    if (charge) setBounded(runs.state.provisional, step.runId, { root, parentRunId: step.parentRunId, model: step.model, promptEstimate: step.promptEstimate, startTime: step.startTime, charge });
    // LangChain ended the call while that charge was being written: the difference is due now.
    const ended = step.unanswered.endedWith;
    if (ended) await this.lateEnd(step.runId, ended.output);
    const run = root.run;
    if (charge && root.id !== step.runId && run.feeDue && !run.refused && !run.ended) {
      try {
        const fee = await run.captureFee();
        if (fee) runs.recorder.recorded(root, root.id, 'fee', fee, { name: `billing:${run.o.fee!.chargeType}`, observationId: `billing-${fee.id}`, parent: root.id });
      } catch (e) {
        runs.fail(e, { operation: 'capture fee', runId: root.id });
      }
    }
    await runs.leave(step.runId, true);
  }

  /**
   * The late end (or error: `output` undefined) of a call charged its prompt estimate by the sweep: the
   * difference to its actual usage is charged (from what is available) or refunded. Once: the record is
   * taken before any await. An error keeps the prompt estimate (the provider worked on it for a lifetime).
   */
  async lateEnd(runId: string, output: unknown): Promise<void> {
    const runs = this.runs;
    const p = runs.state.provisional.get(runId);
    if (!p) return;
    runs.state.provisional.delete(runId);
    if (output === undefined) return;
    try {
      await settleLateEnd(runs.options.ledger, runs.options, runs.recorder, p, runId, output, runs.key(runId, 'late'));
    } catch (e) {
      runs.fail(e, { operation: 'charge late end', runId });
    }
  }

  private async abandoned(step: StepState): Promise<void> {
    const root = this.runs.state.roots.get(step.rootId);
    await this.cut(step, PARKED_CHUNK, 'stream dropped');
    if (root) await this.endUnlessPriced(root);
  }

  /**
   * Ends a call cut short by the stream-cut rule. `unreported` counts chunks the provider yielded that no
   * handleLLMNewToken reported: LangChain's providers report a chunk only after yielding it (ChatOpenAI,
   * the fake model: `yield chunk; await runManager.handleLLMNewToken(...)`), so a stream stopped at a yield
   * (aborted, or dropped) never reports the chunk in its consumer's hand. Each counts one more token.
   */
  async cut(step: StepState, unreported: number, note: string): Promise<void> {
    if (step.ending) return;
    step.ending = true;
    const chunks = step.streamedChunks + unreported;
    if (chunks > 0) {
      const produced = Math.max(chunks, estimateTextTokens(step.streamedText));
      await this.runs.settleTokens(step, { inputTokens: step.promptEstimate, outputTokens: produced, source: 'estimate' }, note);
    } else {
      await this.runs.releaseHold(step, 'llm error');
    }
    await this.runs.leave(step.runId, true);
  }
}

/** A stream LangChain left at a yield holds one chunk no callback reported (see CallWatch.cut). */
const PARKED_CHUNK = 1;
