// Chart geometry. Amounts and quantities stay decimal strings everywhere else;
// only here, to place a bar, are they turned into numbers (a bar a pixel off
// is harmless; a printed amount a cent off is not). Labels are the strings.

/** One bar: its label (x axis), the exact value it stands for, and a title. */
export interface Bar {
  label: string;
  value: string;
  title?: string;
}

/** A bar placed in a box of `height`: y and h in the box's units. */
export interface PlacedBar extends Bar {
  x: number;
  width: number;
  y: number;
  height: number;
  negative: boolean;
}

export interface Geometry {
  bars: PlacedBar[];
  /** The y of the zero line. */
  zero: number;
  /** The largest magnitude drawn (for the axis label), as the value string that has it. */
  max: string;
}

function magnitude(value: string): number {
  const number = Number(value);
  return Number.isFinite(number) ? number : 0;
}

/**
 * Places `bars` side by side in `width` × `height`: positive values rise from
 * the zero line, negative ones hang below it; the zero line sits where the
 * range of values puts it (at the bottom when nothing is negative). All zero
 * (or no bars): flat bars on a bottom zero line.
 */
export function placeBars(bars: Bar[], width: number, height: number, gap = 4): Geometry {
  const numbers = bars.map((bar) => magnitude(bar.value));
  const top = Math.max(0, ...numbers);
  const bottom = Math.min(0, ...numbers);
  const span = top - bottom || 1;
  const zero = (top / span) * height;
  const slot = bars.length === 0 ? width : width / bars.length;
  const barWidth = Math.max(1, slot - gap);
  let maxIndex = -1;
  numbers.forEach((number, index) => {
    if (maxIndex < 0 || Math.abs(number) > Math.abs(numbers[maxIndex])) maxIndex = index;
  });
  return {
    zero: top === 0 && bottom === 0 ? height : zero,
    max: maxIndex < 0 ? "0" : bars[maxIndex].value,
    bars: bars.map((bar, index) => {
      const number = numbers[index];
      const length = (Math.abs(number) / span) * height;
      const base = top === 0 && bottom === 0 ? height : zero;
      return {
        ...bar,
        x: index * slot + gap / 2,
        width: barWidth,
        y: number >= 0 ? base - length : base,
        height: length,
        negative: number < 0,
      };
    }),
  };
}

/** The first instant (UTC) of the month of `date`, moved by `months`. */
export function monthStart(date: Date, months = 0): Date {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + months, 1));
}

/** "2026-11" for a date in November 2026 (UTC). */
export function monthKey(date: Date): string {
  return date.toISOString().slice(0, 7);
}

/** The `count` months ending with the month of `now`, oldest first, as keys. */
export function lastMonths(now: Date, count: number): string[] {
  return Array.from({ length: count }, (_, index) => monthKey(monthStart(now, index - count + 1)));
}

/** "2026-11-05" for a date (UTC). */
export function dayKey(date: Date): string {
  return date.toISOString().slice(0, 10);
}
