import type { Ledger } from '../ledger/types';

/**
 * Who may wait for a customer's money in this process, and who goes first.
 *
 * WAITING RULE: a run refused for funds while other runs of the same customer
 * are in flight in this process does not give up at once — their unused
 * reservations come back when they end. It waits for one of them to end (at
 * most `maxWaitMs`) and tries again:
 *  - an admitted run's later step that cannot grow waits first; new admissions
 *    try again only when no admitted run is waiting (admitted runs finish first);
 *  - when every run in flight is waiting for money (nobody can end), the most
 *    recently admitted waiting run is refused, which returns its reservation;
 *  - with no run of the customer in flight, a refusal is final at once.
 * Other processes' runs are not seen: across processes a refusal is immediate.
 */
export interface FundsWaiter {
  readonly admitted: boolean;
  wake(outcome: 'retry' | 'refuse'): void;
}

export class CustomerFunds {
  constructor(
    /** Called once nothing has been in flight or waiting for `forgetAfterMs` (the registry then forgets this customer). */
    private readonly idle: () => void = () => undefined,
    private readonly forgetAfterMs = FORGET_AFTER_MS,
  ) {}

  private readonly active = new Set<object>();
  /** When each run's reservation expires (ms since epoch), for runs that said so when they entered. */
  private readonly expiry = new WeakMap<object, () => number>();
  private readonly admittedOrder: object[] = [];
  private readonly stepWaiters = new Map<object, FundsWaiter>();
  private readonly admissionWaiters = new Set<FundsWaiter>();
  /** Counts every return of money; a refusal seen before the latest one is stale. */
  private returns = 0;
  /** When the last run in flight left (performance.now()), and the one timer that checks for quiet. */
  private quietSince = 0;
  private forgetTimer: NodeJS.Timeout | undefined;

  /** Taken before a write that may be refused: `wait` retries at once if money came back since. */
  get generation(): number {
    return this.returns;
  }

  get inFlight(): number {
    return this.active.size;
  }

  /** Whether a run of this customer waits for money here. */
  get waiting(): boolean {
    return this.stepWaiters.size > 0 || this.admissionWaiters.size > 0;
  }

  /** A run got its reservation (or a new one after it lapsed); `expiresAt` tells when the ledger frees it if nobody ends the run. */
  enter(run: object, expiresAt?: () => number): void {
    // A run whose reservation lapsed and was renewed enters again; it may still be here (nobody looked since).
    if (this.active.has(run)) return;
    this.active.add(run);
    this.admittedOrder.push(run);
    if (expiresAt) this.expiry.set(run, expiresAt);
  }

  /**
   * Runs whose reservation expired leave: nobody ended them (e.g. a stream dropped with `break`, which
   * LangChain reports to no handler), and the ledger no longer counts their money as held. Kept, such a run
   * made every later refusal of the customer wait the whole `fundsWaitMs` for money it would never return.
   */
  private leaveExpired(): void {
    const now = Date.now();
    for (const r of [...this.active]) {
      const at = this.expiry.get(r);
      if (at && at() <= now) this.leave(r);
    }
  }

  /** A run ended (its reservation returned): everyone waiting tries again. */
  leave(run: object): void {
    // Dropped now, not at the next full GC: until then a WeakMap entry's value (which holds the run) kept the
    // run's whole call graph alive through every young-generation GC, and promoted it.
    this.expiry.delete(run);
    if (!this.active.delete(run)) return;
    this.admittedOrder.splice(this.admittedOrder.indexOf(run), 1);
    this.changed();
    if (this.active.size === 0) {
      // Forgotten only if it stays quiet a while (woken waiters may still come back). One timer per
      // customer, not one per run: a timer per quiet moment kept thousands alive for a customer whose
      // runs come one after another, each surviving long enough to be copied out of V8's young generation.
      this.quietSince = performance.now();
      if (!this.forgetTimer) this.armForget(this.forgetAfterMs);
    }
  }

  private armForget(ms: number): void {
    this.forgetTimer = setTimeout(() => {
      this.forgetTimer = undefined;
      if (this.active.size > 0 || this.waiting) return; // the next run to leave re-arms it
      const left = this.forgetAfterMs - (performance.now() - this.quietSince);
      if (left > 0) this.armForget(left);
      else this.idle();
    }, ms);
    this.forgetTimer.unref?.();
  }

  /** Money came back without a run ending (a hold of its own released or settled below its amount). */
  changed(): void {
    this.returns++;
    // Nobody waits (the usual end of a run): nothing to copy or wake.
    if (this.stepWaiters.size === 0 && this.admissionWaiters.size === 0) return;
    const steps = [...this.stepWaiters.values()];
    this.stepWaiters.clear();
    // Admitted runs retry first: their writes reach the ledger's queue before the admissions' (it is FIFO).
    for (const w of steps) w.wake('retry');
    const admissions = [...this.admissionWaiters];
    this.admissionWaiters.clear();
    if (!admissions.length) return;
    const t = setTimeout(() => {
      for (const w of admissions) w.wake('retry');
    }, steps.length ? ADMISSION_DEFER_MS : 0);
    t.unref?.();
  }

  /**
   * Waits until trying again may succeed: resolves 'retry', or 'refuse' when
   * waiting cannot help (nobody in flight, a deadlock picked this run, or the
   * time is up). `since` is the generation taken before the refused write:
   * money that came back after it (a run that ended while the refusal was on
   * its way) means trying again now, even with nobody left in flight.
   */
  wait(run: object, admitted: boolean, maxWaitMs: number, since: number): Promise<'retry' | 'refuse'> {
    if (maxWaitMs <= 0) return Promise.resolve('refuse');
    this.leaveExpired();
    if (since !== this.returns) return Promise.resolve('retry');
    return new Promise((resolve) => {
      let done = false;
      const timer = setTimeout(() => waiter.wake('refuse'), maxWaitMs);
      timer.unref?.();
      const waiter: FundsWaiter = {
        admitted,
        wake: (outcome) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          this.stepWaiters.delete(run);
          this.admissionWaiters.delete(waiter);
          resolve(outcome);
        },
      };
      if (admitted) this.stepWaiters.set(run, waiter);
      else this.admissionWaiters.add(waiter);
      // Decided once the writes that were refused together have all settled (runs admitted in the same batch count).
      setImmediate(() => {
        // Money came back after this waiter registered (a run in the refused write's batch ended): changed()
        // has woken it, or will once admissions' deferral is up; "nobody in flight" would be a stale verdict.
        if (this.returns !== since) return;
        if (![...this.active].some((r) => r !== run)) waiter.wake('refuse');
        else this.breakDeadlock();
      });
    });
  }

  /** Every run in flight waits for money: refuse the most recently admitted waiter so the others can finish. */
  private breakDeadlock(): void {
    if (this.active.size === 0 || [...this.active].some((r) => !this.stepWaiters.has(r))) return;
    for (let k = this.admittedOrder.length - 1; k >= 0; k--) {
      const w = this.stepWaiters.get(this.admittedOrder[k]!);
      if (w) {
        w.wake('refuse');
        return;
      }
    }
  }
}

/** A customer with nothing in flight is forgotten after this long. */
const FORGET_AFTER_MS = 60_000;

/** How long admissions let woken admitted runs go first. */
const ADMISSION_DEFER_MS = 5;

const registry = new WeakMap<Ledger, Map<string, CustomerFunds>>();

/** The process-wide coordinator of one customer's runs on one ledger. */
export function customerFunds(ledger: Ledger, customerId: string): CustomerFunds {
  let byCustomer = registry.get(ledger);
  if (!byCustomer) registry.set(ledger, (byCustomer = new Map()));
  let f = byCustomer.get(customerId);
  if (!f) {
    const map = byCustomer;
    const created: CustomerFunds = new CustomerFunds(() => {
      if (map.get(customerId) === created) map.delete(customerId);
    });
    map.set(customerId, (f = created));
  }
  return f;
}
