import { BillingError } from '../errors';
import type { Charge, Hold, Ledger } from '../ledger/types';
import type { Nanos } from '../money';
import { isExpired, isRefusal, RunReservation } from './run-reservation';

export { isRefusal };

/**
 * The money of one run (a root LangChain run, or one Flowise prediction): its
 * reservation, the holds and charges of its steps, its fee and compute time.
 * The metering handler and the Flowise run both move money only through here.
 *
 * RESERVATION RULE (see README "How billing behaves under concurrency"):
 *  - Admission is ONE hold: the run fee + the compute reserve + the first
 *    step's maximum cost (or the operator's run budget). If the ledger refuses
 *    it, the run is refused and has paid nothing.
 *  - A step whose maximum fits in what the reservation still has free draws
 *    from it (no ledger write before the provider call); it is charged with a
 *    partial capture of the reservation (`settle` with `final: false`), so what
 *    the step did not use stays reserved for the run's next step.
 *  - A model call that does not fit adds the difference to the reservation
 *    (an incremental hold); a priced tool that does not fit takes a hold of
 *    its own, settled as usual. Refused → the step, and the run, are refused.
 *  - The fee and compute time are captured from the reservation; what is left
 *    is released when the run ends (or when the hold expires, if nobody ends it).
 *  - A reservation that lapsed (the run idle for over half its lifetime) is
 *    renewed by the run's next step; what it still covered is charged directly
 *    from what is available (run-reservation.ts: renew, chargeLapsed).
 */

export type Priced = { readonly chargeType?: string; readonly quantity?: string; readonly rateCardVersion?: string; readonly metadata?: Record<string, unknown> };

/** A run-level cost kept in the reservation until captured: the run fee, or the compute reserve. */
export interface RunCost {
  readonly chargeType: string;
  readonly amount: Nanos;
  readonly quantity: string;
}

export interface RunLedgerOptions {
  readonly ledger: Ledger;
  readonly customerId: string;
  /** Idempotency key of a run-level movement (`reserve`, `fee`, `compute`, `end`); must survive retries. */
  readonly runKey: (step: 'reserve' | 'fee' | 'compute' | 'end') => string;
  readonly actor: string;
  readonly rateCardVersion: string;
  readonly ttlMs?: number;
  readonly fee: RunCost | null;
  /** Compute time held at admission; the actual time is captured at the end. */
  readonly computeReserve: RunCost | null;
  /** Operator's run budget for steps, reserved at admission instead of the first step's maximum. */
  readonly budget?: Nanos;
  /**
   * `runKey` is a job's key that a re-run reuses with new step keys (the handler's `runKey` option): a
   * reservation the ledger hands back is then always an earlier attempt's, however young. Otherwise (keys
   * from LangChain run ids) a young one is a replay of the same callbacks, whose stored answers replay as they are.
   */
  readonly rerunKey?: boolean;
  /** Metadata for the run-level ledger rows. */
  readonly metadata: (kind: 'reservation' | 'fee' | 'compute') => Record<string, unknown>;
  /**
   * How long a run refused for funds may wait for other runs of the same
   * customer in this process to return money (see run-funds.ts); 0 = never wait.
   */
  readonly fundsWaitMs?: number;
}

/** How a step is covered: by the run's reservation, or by its own hold. */
export type StepHold = { readonly via: 'reservation'; readonly amount: Nanos; readonly hold: Hold } | { readonly via: 'own'; readonly amount: Nanos; readonly hold: Hold };

export interface RunFinishOptions {
  /** false: the fee is not charged (the run is refused or paid nothing). */
  readonly chargeFee?: boolean;
  /** Nobody waits for this end (an idle end): a leftover release may ride along with the ledger's next batch. */
  readonly unhurried?: boolean;
}

export interface RunFinish {
  readonly fee?: Charge;
  readonly compute?: Charge;
}

export class RunLedger extends RunReservation {
  private admitting?: Promise<void>;
  private feeCaptured = false;
  private admissionFailed = false;

  // Explicit: a derived class's default constructor passes its arguments on through a rest array, which code
  // not yet optimised allocates for every run (measured on Node 20: 20-55 bytes more a run).
  constructor(o: RunLedgerOptions) {
    super(o);
  }

  get admitted(): boolean {
    return this.reservation !== undefined;
  }

  /** The reservation's hold (after admission). */
  get reservationHold(): Hold | undefined {
    return this.reservation;
  }

  protected get runCosts(): Nanos {
    return (this.o.fee && !this.feeCaptured ? this.o.fee.amount : 0n) + (this.o.computeReserve?.amount ?? 0n);
  }

  /**
   * Admission: holds fee + compute reserve + (budget ?? first step's maximum) at once.
   * Concurrent first steps share one admission. Throws the ledger's refusal (nothing held).
   */
  admit(firstStep: Nanos): Promise<void> {
    if (!this.admitting) {
      const amount = this.runCosts + (this.o.budget ?? firstStep);
      const reserve = (key: string) =>
        this.o.ledger.hold({
          customerId: this.o.customerId, amount, idempotencyKey: key, actor: this.o.actor,
          chargeType: 'run-reservation', quantity: '1', rateCardVersion: this.o.rateCardVersion, ttlMs: this.o.ttlMs,
          metadata: this.o.metadata('reservation'),
        });
      // A hold this admission creates is dated after this instant; one dated before it is the stored answer to an
      // earlier attempt's key. Under a rerun key that is a re-run whatever its age: a job retried at once must not
      // draw on the reservation its first attempt closed (its calls went unpaid).
      const since = this.o.rerunKey ? Date.now() : -Infinity;
      const replayed = (h: Hold) => Date.parse(h.createdAt) < since || Date.now() - Date.parse(h.createdAt) > REPLAY_AGE_MS;
      this.admitting = this.withFunds(false, () => reserve(this.o.runKey('reserve')))
        .then(async (hold) => {
          if (replayed(hold)) {
            // A replayed key: an earlier attempt of this run (a re-run job) made this reservation. Resume it
            // as it is now; if that attempt already ended, it settled the fee: reserve anew for the steps only.
            const now = await this.o.ledger.getHold(hold.id);
            if (now.status === 'pending') hold = now;
            else {
              this.feeCaptured = true;
              hold = await reserve(`${this.o.runKey('reserve')}:rerun`);
              if (hold.status !== 'pending' || replayed(hold)) hold = await this.o.ledger.getHold(hold.id);
              if (hold.status !== 'pending') throw new BillingError('HOLD_NOT_PENDING', 'This run has already ended (twice); start it under a new run key', { holdId: hold.id });
            }
          }
          this.reservation = hold;
          this.reserved = hold.amount;
          this.committed = this.runCosts;
          this.lastAvailable = hold.availableAfter;
          this.expiresAt = Date.parse(hold.expiresAt);
          this.lifetime = this.expiresAt - Date.parse(hold.createdAt);
          this.funds.enter(this, () => this.expiresAt);
        })
        .catch((e) => {
          if (isRefusal(e)) this.refused = true;
          this.admissionFailed = true;
          // A failed admission may be tried again by the next step (e.g. after a database error).
          this.admitting = undefined;
          throw e;
        });
    }
    return this.admitting;
  }

  /**
   * Covers a step's maximum before the provider is called: from what the
   * reservation has free when it fits; otherwise a model call (`grow`) adds the
   * difference to the reservation, and a priced tool takes a hold of its own.
   */
  async holdStep(amount: Nanos, key: string, priced: Priced, grow = false): Promise<StepHold> {
    if (this.closed) throw new BillingError('HOLD_NOT_PENDING', 'The run has already ended', {});
    if (!this.reservation) await this.admit(amount);
    else if (this.lapsedAt(Date.now())) {
      const renewed = await this.renew(amount, key);
      if (renewed) return renewed;
    }
    try {
      return await this.cover(amount, key, priced, grow);
    } catch (e) {
      // The ledger saw the reservation lapse before this process's clock said so: renew it as above.
      if (!isExpired(e)) throw e;
      this.markLapsed();
      return (await this.renew(amount, key)) ?? (await this.cover(amount, key, priced, grow));
    }
  }

  private async cover(amount: Nanos, key: string, priced: Priced, grow: boolean): Promise<StepHold> {
    const r = this.reservation!;
    const free = this.reserved - this.committed;
    if (free >= amount) {
      this.committed += amount;
      if (this.expiresAt - Date.now() < this.lifetime / 2) {
        // Drawing on the reservation writes nothing, so nothing moved its expiry: a run longer than the hold's
        // lifetime had its later calls settled against an expired reservation (refused: unpaid). Past half its
        // lifetime, a step adds 0 to it first, which moves the expiry to now + lifetime.
        try {
          await this.extend(key, priced);
        } catch (e) {
          this.committed -= amount;
          throw e;
        }
      }
      return { via: 'reservation', amount, hold: r };
    }
    if (grow) {
      // The share is taken before the await, so a concurrent step of the run cannot count it too.
      const share = free > 0n ? free : 0n;
      this.committed += share;
      try {
        const grown = await this.withFunds(true, () =>
          this.o.ledger.hold({
            customerId: this.o.customerId, amount: amount - share, idempotencyKey: key, actor: this.o.actor, ttlMs: this.o.ttlMs, addTo: r.id,
            chargeType: priced.chargeType, quantity: priced.quantity, rateCardVersion: priced.rateCardVersion ?? this.o.rateCardVersion, metadata: priced.metadata,
          }),
        );
        this.reserved += amount - share;
        this.committed += amount - share;
        this.lastAvailable = grown.availableAfter;
        // The reservation came back with its (possibly later) expiry.
        if (grown.id === r.id) this.expiresAt = Date.parse(grown.expiresAt);
        return { via: 'reservation', amount, hold: r };
      } catch (e) {
        this.committed -= share;
        if (isRefusal(e)) this.refused = true;
        throw e;
      }
    }
    try {
      const hold = await this.withFunds(true, () =>
        this.o.ledger.hold({
          customerId: this.o.customerId, amount, idempotencyKey: key, actor: this.o.actor, ttlMs: this.o.ttlMs,
          chargeType: priced.chargeType, quantity: priced.quantity, rateCardVersion: priced.rateCardVersion ?? this.o.rateCardVersion, metadata: priced.metadata,
        }),
      );
      this.lastAvailable = hold.availableAfter;
      return { via: 'own', amount, hold };
    } catch (e) {
      if (isRefusal(e)) this.refused = true;
      throw e;
    }
  }

  /**
   * Charges a step. `last` says nothing else will use the reservation (a run
   * that is this one step): its settle closes the reservation directly.
   */
  async settleStep(step: StepHold, amount: Nanos, key: string, priced: Priced, last = false): Promise<Charge> {
    if (step.via === 'own') {
      try {
        const c = await this.o.ledger.settle({ holdId: step.hold.id, amount, idempotencyKey: key, actor: this.o.actor, ...priced });
        if (amount < step.amount) this.funds.changed();
        return c;
      } catch (e) {
        if (!isExpired(e)) throw e;
        return this.chargeLapsed(amount, key, priced);
      }
    }
    // Covered by a reservation that lapsed and was renewed since: the new one owes it nothing.
    if (step.hold.id !== this.reservation?.id) return this.chargeLapsed(amount, key, priced);
    this.committed -= step.amount;
    const final = last && this.committed === 0n && this.reserved === step.amount;
    const taken = amount < this.reserved ? amount : this.reserved;
    this.reserved -= final ? this.reserved : taken;
    if (final) this.closed = true;
    if (this.expiresAt <= Date.now()) return this.chargeLapsed(amount, key, priced);
    try {
      return await this.o.ledger.settle({ holdId: step.hold.id, amount, idempotencyKey: key, actor: this.o.actor, final: !final ? false : undefined, ...priced });
    } catch (e) {
      if (!isExpired(e)) throw e;
      this.markLapsed();
      return this.chargeLapsed(amount, key, priced);
    }
  }

  /** Gives a step's cover back: its own hold is released; a reservation share returns to the run. */
  async releaseStep(step: StepHold, key: string): Promise<void> {
    if (step.via === 'reservation') {
      if (step.hold.id === this.reservation?.id) this.committed -= step.amount;
      return;
    }
    await this.o.ledger.release({ holdId: step.hold.id, idempotencyKey: key, actor: this.o.actor }).catch(ignoreNotPending);
    this.funds.changed();
  }

  /**
   * Captures the fee now, not at finish: a Flowise prediction after its first charged step (nobody reliably
   * ends it), a run whose only call went unanswered. Once.
   */
  async captureFee(): Promise<Charge | undefined> {
    const fee = this.o.fee;
    if (!fee || this.feeCaptured || !this.reservation || this.closed) return undefined;
    this.feeCaptured = true;
    this.committed -= fee.amount;
    this.reserved -= fee.amount < this.reserved ? fee.amount : this.reserved;
    return this.captureRunCost(this.reservation, 'fee', fee, false);
  }

  /** The fee or compute time, from the reservation; once it lapsed (the run ended idle), charged directly. */
  private async captureRunCost(r: Hold, kind: 'fee' | 'compute', cost: RunCost, final: boolean): Promise<Charge> {
    const priced = { chargeType: cost.chargeType, quantity: cost.quantity, rateCardVersion: this.o.rateCardVersion, metadata: this.o.metadata(kind) };
    if (this.expiresAt <= Date.now()) return this.chargeLapsed(cost.amount, this.o.runKey(kind), priced);
    try {
      return await this.o.ledger.settle({ holdId: r.id, amount: cost.amount, idempotencyKey: this.o.runKey(kind), actor: this.o.actor, ...(final ? {} : { final: false }), ...priced });
    } catch (e) {
      if (!isExpired(e)) throw e;
      this.markLapsed();
      return this.chargeLapsed(cost.amount, this.o.runKey(kind), priced);
    }
  }

  /** Ended (or closed by a one-step run's settle): a later step needs a new run. */
  get ended(): boolean {
    return this.closed;
  }

  get feeDue(): boolean {
    return !!this.o.fee && !this.feeCaptured;
  }

  /**
   * Ends the run: captures compute time and the fee (unless refused) and
   * releases the rest of the reservation, in one group commit (the last
   * capture closes the hold). A run that never reached admission (no paid
   * step) is admitted here for its own costs. Call it when no step is in flight.
   */
  async finish(computeActual: RunCost | null, opts: RunFinishOptions = {}): Promise<RunFinish> {
    if (this.closed) {
      this.fundsRef?.leave(this);
      return {};
    }
    try {
      return await this.close(computeActual, opts);
    } finally {
      // Its reservation is back (or its expiry will bring it back): runs waiting for money try again.
      this.fundsRef?.leave(this);
    }
  }

  private async close(computeActual: RunCost | null, opts: RunFinishOptions): Promise<RunFinish> {
    if (opts.chargeFee === false) this.feeCaptured = true;
    if (!this.reservation && !this.admissionFailed && !this.refused && (this.feeDue || (computeActual && this.o.computeReserve))) await this.admit(0n);
    this.closed = true;
    const r = this.reservation;
    if (!r) return {};
    const captures: Array<{ kind: 'fee' | 'compute'; cost: RunCost }> = [];
    if (!this.refused) {
      if (computeActual && this.o.computeReserve) captures.push({ kind: 'compute', cost: computeActual });
      if (this.feeDue) captures.push({ kind: 'fee', cost: this.o.fee! });
    }
    if (!captures.length) {
      // Nobody waiting for this customer's money here: the leftover may go back with the next batch of writes.
      const deferrable = opts.unhurried === true && !this.funds.waiting;
      await this.o.ledger.release({ holdId: r.id, idempotencyKey: this.o.runKey('end'), actor: this.o.actor, ...(deferrable ? { deferrable } : {}) }).catch(ignoreNotPending);
      return {};
    }
    if (this.o.fee && captures.some((c) => c.kind === 'fee')) this.feeCaptured = true;
    const settled = await Promise.allSettled(captures.map(({ kind, cost }, i) => this.captureRunCost(r, kind, cost, i === captures.length - 1)));
    const out: { fee?: Charge; compute?: Charge } = {};
    const failures: unknown[] = [];
    settled.forEach((s, i) => {
      if (s.status === 'rejected') failures.push(s.reason);
      else out[captures[i]!.kind] = s.value;
    });
    if (failures.length) throw new RunFinishError(out, failures);
    return out;
  }
}

/** Some end-of-run captures failed; `partial` has the ones that succeeded. */
export class RunFinishError extends Error {
  constructor(
    readonly partial: RunFinish,
    readonly failures: unknown[],
  ) {
    super(`Ending the run failed: ${failures.map((f) => (f as Error)?.message ?? String(f)).join('; ')}`);
  }
}

/** A reservation older than this when the ledger hands it back is a replay of an earlier attempt's (even from a clock ahead of ours). */
const REPLAY_AGE_MS = 2000;

function ignoreNotPending(e: unknown): undefined {
  // Already settled, released or expired by an earlier delivery: nothing to give back.
  if (e instanceof BillingError && (e.code === 'HOLD_NOT_PENDING' || e.code === 'HOLD_EXPIRED')) return undefined;
  throw e;
}
