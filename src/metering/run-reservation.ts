import { BillingError } from '../errors';
import type { Charge, Hold } from '../ledger/types';
import type { Nanos } from '../money';
import type { Priced, RunLedgerOptions, StepHold } from './run-ledger';
import { type CustomerFunds, customerFunds } from './run-funds';

/**
 * A run's reservation over time: the hold the run's money sits in, its expiry (moved on by steps and by
 * calls in flight), its lapse and renewal, and the direct charge of what it covered once it lapsed.
 * RunLedger (run-ledger.ts) draws the run's steps, fee and compute on it; a base class rather than an
 * object of its own, so that a run (one per metered call, often) costs no extra allocation.
 */
export abstract class RunReservation {
  protected reservation?: Hold;
  /** What the reservation holds now, as this run has moved it. */
  protected reserved = 0n;
  /** Part of `reserved` promised to the fee, the compute reserve and steps in flight. */
  protected committed = 0n;
  protected closed = false;
  /** Set when billing refused the run (admission or a step): it pays no fee and no compute. */
  refused = false;
  /** Available balance right after the latest hold of the run. */
  lastAvailable?: Nanos;
  /** When the reservation expires (an incremental hold may move it later), and the lifetime it was given. */
  protected expiresAt = Infinity;
  protected lifetime = Infinity;
  /** A keepAlive under way; and whether one found the reservation no longer pending. */
  private extending?: Promise<void>;
  private lapsed = false;
  /** A new reservation being taken after the last one lapsed (see renew). */
  private renewing?: Promise<void>;

  /** The customer's coordinator, taken when the run first needs it and kept (enter, wait and leave on the same one). */
  protected fundsRef?: CustomerFunds;

  constructor(readonly o: RunLedgerOptions) {}

  /** The run's own costs still to be captured from the reservation (fee, compute reserve). */
  protected abstract get runCosts(): Nanos;

  protected get funds(): CustomerFunds {
    return (this.fundsRef ??= customerFunds(this.o.ledger, this.o.customerId));
  }

  /**
   * Runs a ledger write that may be refused for funds; while other runs of the
   * customer are in flight here, waits for them to return money and tries again.
   */
  protected withFunds<T>(admitted: boolean, write: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + (this.o.fundsWaitMs ?? 0);
    const since = this.funds.generation;
    // The first try without an async frame of its own (every hold of every run makes one); a refusal goes on below.
    let first: Promise<T>;
    try {
      first = write();
    } catch (e) {
      return this.waitForFunds(e, admitted, deadline, since, write);
    }
    return first.catch((e: unknown) => this.waitForFunds(e, admitted, deadline, since, write));
  }

  private async waitForFunds<T>(refusal: unknown, admitted: boolean, deadline: number, since: number, write: () => Promise<T>): Promise<T> {
    let e = refusal;
    for (;;) {
      if (!(e instanceof BillingError && e.code === 'INSUFFICIENT_FUNDS')) throw e;
      const left = deadline - Date.now();
      if ((await this.funds.wait(this, admitted, left, since)) === 'refuse') throw e;
      since = this.funds.generation;
      try {
        return await write();
      } catch (next) {
        e = next;
      }
    }
  }

  /** The reservation lapsed (the ledger released it): by its expiry, or because the ledger said so. */
  protected lapsedAt(now: number): boolean {
    return this.reservation !== undefined && !this.closed && this.expiresAt <= now;
  }

  protected markLapsed(): void {
    this.expiresAt = -Infinity;
    this.lapsed = true;
  }

  /**
   * LAPSE RULE: a run idle (nothing in flight) for over half its reservation's lifetime loses the
   * reservation (the ledger releases it: a run nobody ends must not hold money forever). Its next step
   * takes a new reservation of the run's costs still to come (fee, compute reserve) plus that step's
   * maximum, under the usual funds check: refused, the run is refused (INSUFFICIENT_FUNDS, no fee), never
   * sent to the provider. Before this its next step was refused HOLD_EXPIRED and the fee went unpaid.
   * Concurrent steps share one renewal; undefined = another step renewed it (draw from it as usual).
   * Steps still covered by the lapsed reservation no longer count against the new one (see RunLedger.settleStep).
   */
  protected async renew(amount: Nanos, key: string): Promise<StepHold | undefined> {
    if (this.renewing) {
      await this.renewing;
      return undefined;
    }
    let mine: StepHold | undefined;
    const p = this.withFunds(true, () =>
      this.o.ledger.hold({
        customerId: this.o.customerId, amount: this.runCosts + amount, idempotencyKey: `${key}:renew`, actor: this.o.actor,
        chargeType: 'run-reservation', quantity: '1', rateCardVersion: this.o.rateCardVersion, ttlMs: this.o.ttlMs, metadata: this.o.metadata('reservation'),
      }),
    ).then(
      (hold) => {
        this.reservation = hold;
        this.reserved = hold.amount;
        this.committed = this.runCosts + amount;
        this.lastAvailable = hold.availableAfter;
        this.expiresAt = Date.parse(hold.expiresAt);
        this.lapsed = false;
        this.funds.enter(this, () => this.expiresAt);
        mine = { via: 'reservation', amount, hold };
      },
      (e: unknown) => {
        if (isRefusal(e)) this.refused = true;
        throw e;
      },
    );
    this.renewing = p.finally(() => {
      this.renewing = undefined;
    });
    await this.renewing;
    return mine;
  }

  /** Adds 0 to the reservation, which moves its expiry to now + its lifetime. */
  protected async extend(key: string, priced: Priced): Promise<void> {
    const kept = await this.o.ledger.hold({
      customerId: this.o.customerId, amount: 0n, idempotencyKey: key, actor: this.o.actor, ttlMs: this.o.ttlMs, addTo: this.reservation!.id,
      chargeType: priced.chargeType, quantity: priced.quantity, rateCardVersion: priced.rateCardVersion ?? this.o.rateCardVersion, metadata: priced.metadata,
    });
    this.expiresAt = Date.parse(kept.expiresAt);
  }

  /** The reservation's lifetime (Infinity before admission). */
  get lifetimeMs(): number {
    return this.lifetime;
  }

  /**
   * For a call in flight (which writes nothing until it ends): past half its lifetime, the reservation's
   * expiry moves to now + lifetime, as a step starting then would move it. One at a time; undefined when
   * nothing was to do (`key` is asked only for a write). Refused (HOLD_EXPIRED) if the reservation already lapsed.
   */
  keepAlive(key: () => string, now = Date.now()): Promise<void> | undefined {
    if (!this.reservation || this.closed || this.lapsed || this.extending || this.expiresAt - now >= this.lifetime / 2) return undefined;
    const p = this.extend(key(), { chargeType: 'run-reservation', quantity: '1', metadata: this.o.metadata('reservation') })
      .catch((e: unknown) => {
        // Lapsed or ended already: every later look would be refused the same way (one report is enough).
        if (isExpired(e)) this.markLapsed();
        else if (e instanceof BillingError && e.code === 'HOLD_NOT_PENDING') this.lapsed = true;
        throw e;
      })
      .finally(() => {
        this.extending = undefined;
      });
    this.extending = p;
    return p;
  }

  /**
   * A step (or the run's fee or compute) whose cover lapsed before it was charged (a call or tool that
   * outlived it, a run that ended idle): charged directly, against what is available now (refused with
   * INSUFFICIENT_FUNDS when that no longer covers it, reported to the caller, never an overdraft). Its
   * own key (`<key>:lapsed`): a replay charges once.
   */
  protected chargeLapsed(amount: Nanos, key: string, priced: Priced): Promise<Charge> {
    return this.o.ledger.charge({
      customerId: this.o.customerId, amount, idempotencyKey: `${key}:lapsed`, actor: this.o.actor,
      chargeType: priced.chargeType, quantity: priced.quantity, rateCardVersion: priced.rateCardVersion ?? this.o.rateCardVersion, metadata: priced.metadata,
    });
  }
}

/** Billing said no (funds, budget): the run is refused, not failed. */
export function isRefusal(e: unknown): boolean {
  return e instanceof BillingError && (e.code === 'INSUFFICIENT_FUNDS' || e.code === 'BUDGET_EXCEEDED');
}

export function isExpired(e: unknown): boolean {
  return e instanceof BillingError && e.code === 'HOLD_EXPIRED';
}
