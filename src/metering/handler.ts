import { inspect } from 'node:util';
import type { Serialized } from '@langchain/core/load/serializable';
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import type { Charge, Ledger } from '../ledger/types';
import { billingMetadata, BILLING_METADATA_KEYS } from '../langfuse/metadata';
import { langfuseReporterFor, type LangfuseCostReporter } from '../langfuse/reporter';
import { formatUsd, type Nanos, parseUsd } from '../money';
import { cacheMetadata, paidPublicFlowSplit, priceChargeType, priceComputeMs, priceTokens } from '../pricing/price';
import type { RateCard } from '../pricing/ratecard';
import {
  addTokenCounts,
  choicesOf,
  chunkUsageOf,
  estimatePromptTokens,
  estimateTextTokens,
  maxOutputTokensOf,
  modelNameOf,
  signalOf,
  streamedText,
  toolsOf,
  usageOf,
  type TokenUsage,
} from './estimate';
import { meteringKey, type KeyStep } from './keys';
import { type SweepTarget, sweepInterval, watchCalls } from './call-sweep';
import { settleLateEnd } from './late-end';
import { type RunCost, RunFinishError, RunLedger, isRefusal } from './run-ledger';
import { ByokRequiredError, ValidationError } from '../errors';
import { NONE, RunRecorder } from './run-report';
import { type MeteredCharge, type MeteredRun, type Metadata, pushBounded, type RootState, runNameOf, setBounded, type SharedState, type StepState, withCardVersion } from './run-state';
import { type BillingHandlerOptions, DEFAULT_COMPUTE_RESERVE_MS, parseBillingHandlerOptions, type ResolvedBillingOptions } from './options';

export type { MeteredCharge, MeteredRun };

/**
 * Meters LangChain runs: admission, per-run fee and compute time for each root
 * run; a hold before every LLM call and tool, settled with actual usage after,
 * released on error. See README "Metering LangChain runs" for the rules.
 *
 * It aborts a run only by throwing from a start callback (`raiseError`), which
 * LangChain then awaits: InsufficientFundsError, QuotaExceededError and
 * BudgetExceededError propagate out of `invoke()` and the provider is never
 * called. End/error callbacks never throw: once a provider answered, the run's
 * result is returned even if the ledger write failed (the hold then expires and
 * the failure is reported to `onError` and kept in `failures`).
 */
export class BillingCallbackHandler extends BaseCallbackHandler {
  name = 'BillingCallbackHandler';
  override raiseError = true;
  override awaitHandlers = true;

  readonly options: ResolvedBillingOptions;
  private readonly ledger: Ledger;
  private readonly state: SharedState;
  private readonly reporter?: LangfuseCostReporter;
  private readonly recorder: RunRecorder;
  private lastCardVersion?: string;
  /** What the process's call sweep calls (one per shared state: copies of this handler share it). */
  private readonly sweeper: SweepTarget;

  constructor(input: BillingHandlerOptions | BillingCallbackHandler) {
    // LangChain's copy() calls `new this.constructor(this)`: share options and state.
    const from = input instanceof BillingCallbackHandler ? input : undefined;
    super({ raiseError: true });
    this.raiseError = true;
    this.awaitHandlers = true;
    this.options = from ? from.options : parseBillingHandlerOptions(input);
    this.ledger = this.options.ledger;
    this.state = from ? from.state : { roots: new Map(), steps: new Map(), provisional: new Map(), charges: [], runs: [], failures: [] };
    this.reporter = from ? from.reporter : this.options.langfuse ? langfuseReporterFor(this.options.langfuse) : undefined;
    this.lastCardVersion = this.options.rateCard?.version;
    this.recorder = new RunRecorder(this.options, this.state, this.reporter);
    this.sweeper = from ? from.sweeper : { sweep: (now) => this.sweepCalls(now) };
  }

  /** Charges settled by this handler, newest last (at most 1,000 kept). */
  get charges(): readonly MeteredCharge[] {
    return this.state.charges;
  }
  /** Finished root runs, newest last (at most 1,000 kept). */
  get runs(): readonly MeteredRun[] {
    return this.state.runs;
  }
  /** Ledger writes after a step that failed (never thrown into the run). */
  get failures(): ReadonlyArray<{ error: unknown; context: Metadata }> {
    return this.state.failures;
  }
  /** Runs currently in flight (roots and steps). */
  get inFlight(): { roots: number; steps: number } {
    return { roots: this.state.roots.size, steps: this.state.steps.size };
  }

  /**
   * What console.log and util.inspect show of the handler (and of a RunnableConfig that carries it): its
   * options hold the Langfuse secret key and its reporter the SDK client built with it, so neither is shown.
   */
  [inspect.custom](): object {
    return { name: this.name, customerId: this.options.customerId, conversationId: this.options.conversationId, langfuse: this.reporter ? 'configured' : 'none', inFlight: this.inFlight };
  }

  /** The static billing fields for run metadata (see billingRunConfig). */
  billingMetadata(): Record<string, string | number> {
    const o = this.options;
    return billingMetadata({
      customerId: o.customerId,
      conversationId: o.conversationId,
      usageCategory: o.usageCategory,
      costCenter: o.costCenter,
      planTier: o.planTier,
      rateCardVersion: this.lastCardVersion,
    });
  }

  /** Flushes cost reports to Langfuse, waiting at most `timeoutMs`; true when all were delivered in time. */
  async flushLangfuse(timeoutMs = 2000): Promise<boolean> {
    return this.reporter ? this.reporter.flush(timeoutMs) : true;
  }

  private key(runId: string, step: KeyStep) {
    return meteringKey(runId, step, this.options.messageId);
  }

  private fail(error: unknown, context: Metadata): void {
    pushBounded(this.state.failures, { error, context });
    try {
      if (this.options.onError) this.options.onError(error, context);
      else console.warn(`[flowise-billing] ${context.operation ?? 'metering'} failed for run ${context.runId ?? '?'}: ${(error as Error)?.message ?? error}`);
    } catch {
      // an observer's own error never reaches the run
    }
  }

  // ---- runs ---------------------------------------------------------------

  /** Registers a step; starts a root run when this handler has not seen its parent. */
  private async enter(kind: StepState['kind'], runId: string, parentRunId: string | undefined, metadata: Metadata | undefined): Promise<{ step: StepState; root: RootState; replay: boolean }> {
    const existing = this.state.steps.get(runId);
    if (existing) {
      const root = this.state.roots.get(existing.rootId);
      if (root) return { step: existing, root, replay: true };
    }
    const parent = parentRunId ? this.state.steps.get(parentRunId) : undefined;
    let root = parent ? this.state.roots.get(parent.rootId) : undefined;
    // Synchronously, before any await: handlers listed after this one read the same object.
    if (root && metadata) Object.assign(metadata, root.dynamic);
    if (!root) root = await this.startRoot(kind, runId, metadata, parentRunId !== undefined);
    const step: StepState = { runId, rootId: root.id, parentRunId, kind, startTime: new Date(), promptEstimate: 0, streamedChunks: 0, streamedText: '', tokenEvents: 0, sweptTokens: 0 };
    this.state.steps.set(runId, step);
    root.steps.add(runId);
    return { step, root, replay: false };
  }

  private async startRoot(kind: RootState['kind'], runId: string, metadata: Metadata | undefined, nested: boolean): Promise<RootState> {
    const o = this.options;
    // Static fields go in synchronously: handlers listed after this one see them.
    const fields = this.billingMetadata();
    if (metadata) Object.assign(metadata, fields);
    if (o.runKey !== undefined && this.state.roots.size > 0) {
      // Runs under one runKey share its reservation and fee: a second one at once would draw on a reservation the
      // first may close under it (its calls unpaid). Refused before anything is held or called.
      throw new ValidationError(`runKey "${o.runKey}" names one run and this handler is already metering a run under it: build one handler per run`, { field: 'runKey' });
    }
    const root: RootState = { id: runId, kind, startedAt: performance.now(), startTime: new Date(), cost: 0n, refused: false, dynamic: Object.assign({}, fields), steps: new Set(), chargeIds: [], nested };
    this.state.roots.set(runId, root);
    try {
      const card = o.rateCard ?? (await this.ledger.activeRateCard());
      root.card = card;
      this.lastCardVersion = card.version;
      if (o.gate) root.admission = await o.gate.admitRun({ customerId: o.customerId, conversationId: o.conversationId });
      const reserveMs = this.computeReserveMs();
      const compute = reserveMs === null ? null : priceComputeMs(card, reserveMs);
      const runKey = (step: KeyStep) => (o.runKey ? `${o.runKey}:${step}` : this.key(runId, step));
      root.run = new RunLedger({
        ledger: this.ledger, customerId: o.customerId, runKey, rerunKey: o.runKey !== undefined, actor: o.actor, rateCardVersion: card.version, ttlMs: o.holdTtlMs,
        fee: this.runFee(card), computeReserve: compute ? { chargeType: 'compute', amount: compute.amount, quantity: compute.quantity } : null,
        budget: o.runBudgetUsd === undefined ? undefined : parseUsd(o.runBudgetUsd, { field: 'runBudgetUsd' }),
        feeOn: 'finish',
        fundsWaitMs: o.fundsWaitMs,
        metadata: (kind) => this.recorder.chargeMetadata(root, runId, { kind }),
      });
      // With a run budget the reservation is taken now; otherwise with the first paid step (its maximum is known then).
      if (o.runBudgetUsd !== undefined) await root.run.admit(0n);
      Object.assign(
        root.dynamic,
        billingMetadata({
          rateCardVersion: card.version,
          planTier: root.admission ? root.admission.tier : o.planTier,
          quotaRemaining: root.admission ? root.admission.sessionsRemaining : undefined,
          available: root.run.lastAvailable,
        }),
      );
      // The root's own later readers (and LangChain tracers that keep this object) see the admission fields too.
      if (metadata) Object.assign(metadata, root.dynamic);
      return root;
    } catch (e) {
      this.state.roots.delete(runId);
      throw e;
    }
  }

  private computeReserveMs(): number | null {
    const c = this.options.computeTime;
    if (c === false) return null;
    return c === true ? DEFAULT_COMPUTE_RESERVE_MS : c.reserveMs;
  }

  private runFee(card: RateCard): RunCost | null {
    const f = this.options.runFee;
    if (f === false) return null;
    if (typeof f === 'string') return { chargeType: f, amount: priceChargeType(card, f, 1).amount, quantity: '1' };
    return { chargeType: 'PaidPublicFlowRun', amount: paidPublicFlowSplit(card, parseUsd(f.priceUsd)).fee, quantity: '1' };
  }

  /**
   * Ends a root run: releases anything a lost callback left held, captures the
   * fee and compute time from the reservation (neither when billing refused
   * the run) and releases the rest, then reports the run's totals to Langfuse.
   */
  private async finishRoot(root: RootState, failed: boolean): Promise<void> {
    if (!this.state.roots.delete(root.id)) return;
    for (const stepId of root.steps) {
      const s = this.state.steps.get(stepId);
      this.state.steps.delete(stepId);
      s?.stopWatching?.();
      if (s?.hold) await this.releaseHold(s, 'orphaned step at root end', root);
    }
    const run = root.run;
    if (run && root.card) {
      if (root.refused) run.refused = true;
      const ms = BigInt(Math.max(0, Math.round(performance.now() - root.startedAt)));
      // A run its one step already closed captures nothing more: no compute quote to build for it.
      const q = run.ended ? null : priceComputeMs(root.card, ms);
      const record = (r: { fee?: Charge; compute?: Charge }) => {
        const fee = run.o.fee;
        // In ledger order (compute is captured before the fee closes the reservation): the last balance is the fee's.
        if (r.compute) this.recorder.recorded(root, root.id, 'compute', r.compute, { name: 'billing:compute', observationId: `billing-${r.compute.id}`, parent: root.id });
        if (r.fee && fee) this.recorder.recorded(root, root.id, 'fee', r.fee, { name: `billing:${fee.chargeType}`, observationId: `billing-${r.fee.id}`, parent: root.id });
      };
      try {
        record(await run.finish(q && { chargeType: 'compute', amount: q.amount, quantity: q.quantity }));
      } catch (e) {
        if (e instanceof RunFinishError) {
          record(e.partial);
          for (const f of e.failures) this.fail(f, { operation: 'finish run', runId: root.id });
        } else this.fail(e, { operation: 'finish run', runId: root.id });
      }
    }
    const outcome: MeteredRun = { rootRunId: root.id, cost: root.cost, chargeIds: root.chargeIds, balanceAfter: root.lastBalance, admission: root.admission, failed, refused: root.refused || !!run?.refused };
    pushBounded(this.state.runs, outcome);
    // A nested root does not know its trace; its costs still reach the generations (see RunRecorder).
    this.recorder.finished(root, outcome.refused);
  }

  private async releaseHold(step: StepState, reason: string, root = this.state.roots.get(step.rootId)): Promise<void> {
    if (!step.hold || !root?.run) return;
    const hold = step.hold;
    step.hold = undefined;
    try {
      await root.run.releaseStep(hold, this.key(step.runId, 'release'));
    } catch (e) {
      this.fail(e, { operation: 'release', runId: step.runId, reason });
    }
  }

  /** Covers a step's maximum cost before the provider is called; a refusal ends the step (and a root that was only this step). */
  private async holdStep(root: RootState, step: StepState, amount: Nanos, priced: { chargeType: string; quantity: string; metadata: Metadata }, runMetadata?: Metadata): Promise<void> {
    try {
      step.hold = await root.run!.holdStep(amount, this.key(step.runId, 'hold'), withCardVersion(priced, root.card!.version), step.kind === 'llm');
      if (root.run!.lastAvailable !== undefined) {
        root.dynamic[BILLING_METADATA_KEYS.availableUsd] = formatUsd(root.run!.lastAvailable);
        // LangChain starts every handler at once (Promise.all): one that keeps the metadata object sees this;
        // one that copied it at its start (langfuse-langchain) does not; later steps of the run carry it.
        if (runMetadata) runMetadata[BILLING_METADATA_KEYS.availableUsd] = root.dynamic[BILLING_METADATA_KEYS.availableUsd]!;
      }
    } catch (e) {
      if (isRefusal(e) || e instanceof ByokRequiredError) root.refused = true;
      await this.leave(step.runId, true);
      throw e;
    }
  }

  /** Charges a step from its cover; the run-level `recorded` bookkeeping and the Langfuse report follow. */
  private async settleStep(root: RootState, step: StepState, amount: Nanos, priced: { chargeType?: string; quantity?: string; metadata: Metadata }): Promise<Charge | undefined> {
    if (!step.hold || !root.run || !root.card) return undefined;
    const hold = step.hold;
    step.hold = undefined;
    try {
      return await root.run.settleStep(hold, amount, this.key(step.runId, 'settle'), withCardVersion(priced, root.card.version), step.runId === root.id);
    } catch (e) {
      this.fail(e, { operation: `settle ${step.kind}`, runId: step.runId });
      return undefined;
    }
  }

  /** Leaves a step; ends the root when the step was the root. */
  private async leave(runId: string, failed: boolean): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    this.state.steps.delete(runId);
    step.stopWatching?.();
    const root = this.state.roots.get(step.rootId);
    if (!root) return;
    // The root's own step stays in its set (finishRoot finds it gone from the steps): emptying a Set makes V8 allocate a new table.
    if (root.id !== runId) root.steps.delete(runId);
    else await this.finishRoot(root, failed);
  }

  // ---- chains -------------------------------------------------------------

  override async handleChainStart(_chain: Serialized, _inputs: unknown, runId: string, parentRunId?: string, _tags?: string[], metadata?: Metadata): Promise<void> {
    await this.enter('chain', runId, parentRunId, metadata);
  }

  override async handleChainEnd(_outputs: unknown, runId: string): Promise<void> {
    await this.leave(runId, false);
  }

  override async handleChainError(_err: unknown, runId: string): Promise<void> {
    await this.leave(runId, true);
  }

  // ---- LLM calls ------------------------------------------------------------

  override handleChatModelStart(_llm: Serialized, messages: unknown[][], runId: string, parentRunId?: string, extraParams?: Metadata, _tags?: string[], metadata?: Metadata): Promise<void> {
    return this.llmStart(messages[0] ?? [], runId, parentRunId, extraParams, metadata);
  }

  override async handleLLMStart(_llm: Serialized, prompts: string[], runId: string, parentRunId?: string, extraParams?: Metadata, _tags?: string[], metadata?: Metadata): Promise<void> {
    await this.llmStart(prompts.slice(0, 1), runId, parentRunId, extraParams, metadata);
  }

  private async llmStart(messages: readonly unknown[], runId: string, parentRunId: string | undefined, extraParams: Metadata | undefined, metadata: Metadata | undefined): Promise<void> {
    const { step, root, replay } = await this.enter('llm', runId, parentRunId, metadata);
    if (replay && step.hold) return;
    const o = this.options;
    if (root.admission && !root.admission.managedModels && !o.usesCustomerKey) {
      // BYOK plan: the operator's credential is never spent for this customer.
      root.refused = true;
      await this.leave(runId, true);
      throw new ByokRequiredError({ customerId: o.customerId, plan: root.admission.tier });
    }
    step.model = modelNameOf(extraParams, metadata);
    step.promptEstimate = estimatePromptTokens(messages, toolsOf(extraParams));
    const maxOut = (maxOutputTokensOf(extraParams, metadata) ?? o.maxOutputTokensCap) * choicesOf(extraParams);
    const q = priceTokens(root.card!, step.model, step.promptEstimate, maxOut);
    await this.holdStep(root, step, q.amount, {
      chargeType: q.item,
      quantity: q.quantity,
      metadata: this.recorder.chargeMetadata(root, runId, { kind: 'llm', model: step.model ?? null, estimate: { inputTokens: step.promptEstimate, outputTokens: maxOut } }),
    }, metadata);
    this.watchAbort(step, signalOf(extraParams));
    watchCalls(this.sweeper, sweepInterval(root.run!.lifetimeMs));
  }

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
  private watchAbort(step: StepState, signal: AbortSignal | undefined): void {
    if (!signal || signal.aborted) return;
    const onAbort = () => {
      setImmediate(() => this.aborted(step.runId).catch((e: unknown) => this.fail(e, { operation: 'end aborted call', runId: step.runId })));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    step.stopWatching = () => signal.removeEventListener('abort', onAbort);
  }

  private async aborted(runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    // LangChain's own end or error got there first: it ends the call (and its error ends the chains around it).
    if (!step || step.ending) return;
    const root = this.state.roots.get(step.rootId);
    // Still here a turn after the abort, with LangChain silent: its stream stopped at a yield (an aborted
    // stream's generator is never resumed), so the chunk it yielded last was never reported.
    await this.cut(step, PARKED_CHUNK, 'stream cut short');
    if (root) await this.endUnlessPriced(root);
  }

  /** Ends a run LangChain will not end (its stream was dropped) once nothing priced is in flight in it. */
  private async endUnlessPriced(root: RootState): Promise<void> {
    if (!this.state.roots.has(root.id)) return;
    const priced = [...root.steps].some((id) => {
      const s = this.state.steps.get(id);
      return s !== undefined && s.kind !== 'chain';
    });
    if (!priced) await this.finishRoot(root, true);
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
  private sweepCalls(now: number): number | undefined {
    let want: number | undefined;
    for (const step of this.state.steps.values()) {
      // A priced tool drawn from the reservation is swept like a model call without tokens (it never streams);
      // one on a hold of its own has that hold's lifetime.
      if (!step.hold || step.ending || (step.kind === 'tool' ? step.hold.via !== 'reservation' : step.kind !== 'llm')) continue;
      const run = this.state.roots.get(step.rootId)?.run;
      if (!run || run.ended || !Number.isFinite(run.lifetimeMs)) continue;
      const life = run.lifetimeMs;
      const every = sweepInterval(life);
      want = want === undefined || every < want ? every : want;
      if (step.tokenEvents !== step.sweptTokens) {
        step.sweptTokens = step.tokenEvents;
        step.quietSince = now;
      }
      if (now - (step.quietSince ?? step.startTime.getTime()) < life) {
        run.keepAlive(() => this.key(step.runId, `alive:${(step.keptAlive = (step.keptAlive ?? 0) + 1)}`), now)?.catch((e: unknown) => this.fail(e, { operation: 'keep reservation', runId: step.runId }));
      } else if (step.tokenEvents > 0) {
        this.abandoned(step).catch((e: unknown) => this.fail(e, { operation: 'end dropped stream', runId: step.runId }));
      } else if (step.kind === 'llm') {
        this.unanswered(step).catch((e: unknown) => this.fail(e, { operation: 'charge unanswered call', runId: step.runId }));
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
    const root = this.state.roots.get(step.rootId);
    if (step.ending || !step.hold || !root?.run) return;
    step.ending = true;
    step.unanswered = {};
    const charge = await this.settleTokens(step, { inputTokens: step.promptEstimate, outputTokens: 0, source: 'estimate' }, 'no answer within the hold lifetime');
    if (charge) setBounded(this.state.provisional, step.runId, { root, parentRunId: step.parentRunId, model: step.model, promptEstimate: step.promptEstimate, startTime: step.startTime, charge });
    // LangChain ended the call while that charge was being written: the difference is due now.
    const ended = step.unanswered.endedWith;
    if (ended) await this.lateEnd(step.runId, ended.output);
    const run = root.run;
    if (charge && root.id !== step.runId && run.feeDue && !run.refused && !run.ended) {
      try {
        const fee = await run.captureFee();
        if (fee) this.recorder.recorded(root, root.id, 'fee', fee, { name: `billing:${run.o.fee!.chargeType}`, observationId: `billing-${fee.id}`, parent: root.id });
      } catch (e) {
        this.fail(e, { operation: 'capture fee', runId: root.id });
      }
    }
    await this.leave(step.runId, true);
  }

  /**
   * The late end (or error: `output` undefined) of a call charged its prompt estimate by the sweep: the
   * difference to its actual usage is charged (from what is available) or refunded. Once: the record is
   * taken before any await. An error keeps the prompt estimate (the provider worked on it for a lifetime).
   */
  private async lateEnd(runId: string, output: unknown): Promise<void> {
    const p = this.state.provisional.get(runId);
    if (!p) return;
    this.state.provisional.delete(runId);
    if (output === undefined) return;
    try {
      await settleLateEnd(this.ledger, this.options, this.recorder, p, runId, output, this.key(runId, 'late'));
    } catch (e) {
      this.fail(e, { operation: 'charge late end', runId });
    }
  }

  private async abandoned(step: StepState): Promise<void> {
    const root = this.state.roots.get(step.rootId);
    await this.cut(step, PARKED_CHUNK, 'stream dropped');
    if (root) await this.endUnlessPriced(root);
  }

  override async handleLLMNewToken(token: string, _idx: unknown, runId: string, _parentRunId?: string, _tags?: string[], fields?: unknown): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    // Any report, even an empty chunk's, is a sign of life for the call sweep.
    step.tokenEvents++;
    step.streamedUsage = addTokenCounts(step.streamedUsage, chunkUsageOf(fields));
    const text = streamedText(token, fields);
    if (text) {
      step.streamedChunks++;
      step.streamedText += text;
    }
  }

  override async handleLLMEnd(output: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return this.lateEnd(runId, output);
    if (step.unanswered) step.unanswered.endedWith ??= { output };
    if (step.ending) return;
    step.ending = true;
    await this.settleTokens(step, usageOf(output, step.promptEstimate, step.streamedUsage));
    await this.leave(runId, false);
  }

  /**
   * STREAM-CUT RULE: an LLM call that fails after it streamed output is charged
   * the prompt (its estimate; providers bill the whole prompt once generation
   * started) plus the output it produced: max(number of non-empty chunks,
   * estimate of the streamed text). A call that failed before any output is released.
   */
  override async handleLLMError(_err: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return this.lateEnd(runId, undefined);
    if (step.unanswered) step.unanswered.endedWith ??= { output: undefined };
    await this.cut(step, 0, 'stream cut short');
  }

  /**
   * Ends a call cut short by the stream-cut rule. `unreported` counts chunks the provider yielded that no
   * handleLLMNewToken reported: LangChain's providers report a chunk only after yielding it (ChatOpenAI,
   * the fake model: `yield chunk; await runManager.handleLLMNewToken(...)`), so a stream stopped at a yield
   * (aborted, or dropped) never reports the chunk in its consumer's hand. Each counts one more token.
   */
  private async cut(step: StepState, unreported: number, note: string): Promise<void> {
    if (step.ending) return;
    step.ending = true;
    const chunks = step.streamedChunks + unreported;
    if (chunks > 0) {
      const produced = Math.max(chunks, estimateTextTokens(step.streamedText));
      await this.settleTokens(step, { inputTokens: step.promptEstimate, outputTokens: produced, source: 'estimate' }, note);
    } else {
      await this.releaseHold(step, 'llm error');
    }
    await this.leave(step.runId, true);
  }

  private async settleTokens(step: StepState, usage: TokenUsage, note?: string): Promise<Charge | undefined> {
    const root = this.state.roots.get(step.rootId);
    if (!step.hold || !root?.card) return undefined;
    const q = priceTokens(root.card, step.model, usage.inputTokens, usage.outputTokens, usage);
    const charge = await this.settleStep(root, step, q.amount, {
      chargeType: q.item,
      quantity: q.quantity,
      metadata: this.recorder.chargeMetadata(root, step.runId, {
        kind: 'llm',
        model: step.model ?? null,
        inputTokens: usage.inputTokens,
        outputTokens: usage.outputTokens,
        ...cacheMetadata(q),
        usageSource: usage.source,
        ...(note ? { note } : NONE),
      }),
    });
    // The generation LangChain's Langfuse handler created has id = this run id: the cost goes onto it.
    if (charge) this.recorder.recorded(root, step.runId, 'llm', charge, { name: `billing:${q.item}`, observationId: step.runId, parent: step.parentRunId, model: step.model, quote: q, startTime: step.startTime });
    return charge;
  }

  // ---- tools ------------------------------------------------------------------

  override async handleToolStart(tool: Serialized, _input: string, runId: string, parentRunId?: string, _tags?: string[], metadata?: Metadata, runName?: string): Promise<void> {
    const { step, root, replay } = await this.enter('tool', runId, parentRunId, metadata);
    if (replay && step.hold) return;
    const name = runNameOf(tool, runName);
    const price = this.options.tools[name] ?? this.options.tools['*'];
    step.toolName = name;
    if (!price) return;
    const q = priceChargeType(root.card!, price.chargeType, price.quantity);
    step.chargeType = price.chargeType;
    step.quantity = q.quantity;
    step.toolAmount = q.amount;
    await this.holdStep(root, step, q.amount, { chargeType: price.chargeType, quantity: q.quantity, metadata: this.recorder.chargeMetadata(root, runId, { kind: 'tool', tool: name }) });
    // Drawn from the reservation: kept alive like a model call that has no token yet (see sweepCalls).
    if (step.hold?.via === 'reservation') watchCalls(this.sweeper, sweepInterval(root.run!.lifetimeMs));
  }

  override async handleToolEnd(_output: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    const root = this.state.roots.get(step.rootId);
    if (root && step.toolAmount !== undefined) {
      const charge = await this.settleStep(root, step, step.toolAmount, { chargeType: step.chargeType, quantity: step.quantity, metadata: this.recorder.chargeMetadata(root, runId, { kind: 'tool', tool: step.toolName ?? null }) });
      if (charge) this.recorder.recorded(root, runId, 'tool', charge, { name: `billing:tool:${step.toolName}`, observationId: `billing-${charge.id}`, parent: runId, startTime: step.startTime });
    }
    await this.leave(runId, false);
  }

  override async handleToolError(_err: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    await this.releaseHold(step, 'tool error');
    await this.leave(runId, true);
  }

  // ---- retrievers: tracked so their children find the root; not priced -----

  override async handleRetrieverStart(_r: Serialized, _q: string, runId: string, parentRunId?: string, _tags?: string[], metadata?: Metadata): Promise<void> {
    await this.enter('chain', runId, parentRunId, metadata);
  }
  override async handleRetrieverEnd(_docs: unknown, runId: string): Promise<void> {
    await this.leave(runId, false);
  }
  override async handleRetrieverError(_err: unknown, runId: string): Promise<void> {
    await this.leave(runId, true);
  }
}

/** A stream LangChain left at a yield holds one chunk no callback reported (see BillingCallbackHandler.cut). */
const PARKED_CHUNK = 1;

export { BILLING_METADATA_KEYS };
