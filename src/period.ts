/**
 * Monthly billing periods anchored on a day of the month, in UTC. A period
 * runs from the anchor in one month to the anchor in the next; an anchor past
 * a month's last day falls on that last day (anchor 31 → Feb 28/29).
 */
export interface Period {
  /** Inclusive start, epoch ms. */
  readonly start: number;
  /** Exclusive end, epoch ms. */
  readonly end: number;
}

function anchorIn(year: number, month: number, anchorDay: number): number {
  const last = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  return Date.UTC(year, month, Math.min(anchorDay, last));
}

export function periodContaining(t: number, anchorDay: number): Period {
  if (!Number.isInteger(anchorDay) || anchorDay < 1 || anchorDay > 31) throw new RangeError(`anchor day must be 1–31, got ${anchorDay}`);
  const d = new Date(t);
  let y = d.getUTCFullYear();
  let m = d.getUTCMonth();
  let start = anchorIn(y, m, anchorDay);
  if (start > t) {
    m -= 1;
    if (m < 0) {
      m = 11;
      y -= 1;
    }
    start = anchorIn(y, m, anchorDay);
  }
  const nm = m === 11 ? 0 : m + 1;
  const ny = m === 11 ? y + 1 : y;
  return { start, end: anchorIn(ny, nm, anchorDay) };
}
