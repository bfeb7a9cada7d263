import type { Charge, Ledger } from '../ledger/types';
import { billingMetadata, BILLING_METADATA_KEYS } from '../langfuse/metadata';
import { formatUsd, type Nanos, parseUsd } from '../money';
import { cacheMetadata, paidPublicFlowSplit, priceChargeType, priceComputeMs, priceTokens } from '../pricing/price';
import type { RateCard } from '../pricing/ratecard';
import { ByokRequiredError, ValidationError } from '../errors';
import type { TokenUsage } from './estimate';
import { meteringKey, type KeyStep } from './keys';
import { DEFAULT_COMPUTE_RESERVE_MS, type ResolvedBillingOptions } from './options';
import { type RunCost, RunFinishError, RunLedger, isRefusal } from './run-ledger';
import { NONE, type RunRecorder } from './run-report';
import { type MeteredRun, type Metadata, pushBounded, type RootState, type SharedState, type StepState, withCardVersion } from './run-state';

/**
 * The runs a metering handler sees: steps entering and leaving, a root run's admission (rate card, quota
 * gate, fee and compute reserve) and its end, and each step's money moved through the root's RunLedger.
 * One per handler object (LangChain's copies share the state, each keeps the card version it last saw).
 */
export class RunTracker {
  private readonly ledger: Ledger;
  /** The rate card version this handler object last admitted a run under (its billing metadata names it). */
  private lastCardVersion?: string;

  constructor(
    readonly options: ResolvedBillingOptions,
    readonly state: SharedState,
    readonly recorder: RunRecorder,
  ) {
    this.ledger = options.ledger;
    this.lastCardVersion = options.rateCard?.version;
  }

  /** The static billing fields for run metadata (BillingCallbackHandler.billingMetadata). */
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

  key(runId: string, step: KeyStep): string {
    return meteringKey(runId, step, this.options.messageId);
  }

  fail(error: unknown, context: Metadata): void {
    pushBounded(this.state.failures, { error, context });
    try {
      if (this.options.onError) this.options.onError(error, context);
      else console.warn(`[flowise-billing] ${context.operation ?? 'metering'} failed for run ${context.runId ?? '?'}: ${(error as Error)?.message ?? error}`);
    } catch {
      // an observer's own error never reaches the run
    }
  }

  /** Registers a step; starts a root run when this handler has not seen its parent. */
  async enter(kind: StepState['kind'], runId: string, parentRunId: string | undefined, metadata: Metadata | undefined): Promise<{ step: StepState; root: RootState; replay: boolean }> {
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
  async finishRoot(root: RootState, failed: boolean): Promise<void> {
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

  /** Leaves a step; ends the root when the step was the root. */
  async leave(runId: string, failed: boolean): Promise<void> {
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

  async releaseHold(step: StepState, reason: string, root = this.state.roots.get(step.rootId)): Promise<void> {
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
  async holdStep(root: RootState, step: StepState, amount: Nanos, priced: { chargeType: string; quantity: string; metadata: Metadata }, runMetadata?: Metadata): Promise<void> {
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
  async settleStep(root: RootState, step: StepState, amount: Nanos, priced: { chargeType?: string; quantity?: string; metadata: Metadata }): Promise<Charge | undefined> {
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

  /** Charges an LLM call for `usage` (reported, or estimated with `note` saying why) and puts the cost on its generation. */
  async settleTokens(step: StepState, usage: TokenUsage, note?: string): Promise<Charge | undefined> {
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
}
