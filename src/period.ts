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

/**
 * The UTC midnight of the calendar day y-m-d (m 1–12), or null when no such day exists (2026-02-30,
 * month 13). Date.parse and Date.UTC roll such a day over into the next month, and Date.UTC reads the
 * years 0–99 as 1900–1999, so user-typed dates are checked here before they pick a period.
 */
export function calendarDay(y: number, m: number, d: number): number | null {
  const t = new Date(0);
  t.setUTCFullYear(y, m - 1, d);
  return t.getUTCFullYear() === y && t.getUTCMonth() === m - 1 && t.getUTCDate() === d ? t.getTime() : null;
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
