// Money is formatted from the services' decimal strings, digit by digit:
// never through a JavaScript number, which cannot hold 0.1 or 2^53 + 1.

/** Minor-unit digits of the currencies whose exponent is not 2 (ISO 4217). */
const EXPONENTS: Record<string, number> = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0,
  RWF: 0, UGX: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
};

/** The number of minor-unit digits of `currency` (2 unless listed). */
export function minorDigits(currency: string): number {
  return EXPONENTS[currency.toUpperCase()] ?? 2;
}

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/** A parsed decimal: sign, integer digits, fraction digits. */
interface Parts {
  negative: boolean;
  whole: string;
  fraction: string;
}

function parse(text: string): Parts | null {
  const match = DECIMAL.exec(text.trim());
  if (!match) return null;
  const whole = match[2].replace(/^0+(?=\d)/, "");
  const fraction = match[3] ?? "";
  const zero = /^0*$/.test(whole) && /^0*$/.test(fraction);
  return { negative: match[1] === "-" && !zero, whole, fraction };
}

function group(whole: string): string {
  return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/**
 * `amount` (a decimal string such as "1234.5") in `currency`, padded to the
 * currency's minor units and grouped by thousands: "1,234.50 USD". Extra
 * digits (precise amounts such as "30.2718225") are kept, never rounded; an
 * amount that is not a decimal is shown as it came.
 */
export function formatMoney(amount: string, currency: string): string {
  const parts = parse(amount);
  if (!parts) return `${amount} ${currency}`.trim();
  const digits = minorDigits(currency);
  const fraction = parts.fraction.length >= digits ? parts.fraction : parts.fraction.padEnd(digits, "0");
  const number = group(parts.whole) + (fraction ? `.${fraction}` : "");
  return `${parts.negative ? "-" : ""}${number} ${currency}`;
}

/** A `tally.common.v1.Money`-shaped value, or nothing ("—"). */
export function formatMoneyValue(money: { amount: string; currency: string } | undefined): string {
  if (!money || money.amount === "") return "—";
  return formatMoney(money.amount, money.currency);
}

/** `text` as an integer count of 10^-scale units (exact, BigInt). */
function scaled(text: string, scale: number): bigint {
  const parts = parse(text);
  if (!parts) throw new Error(`not a decimal: ${JSON.stringify(text)}`);
  if (parts.fraction.length > scale) throw new Error("scale too small");
  const units = BigInt(parts.whole + parts.fraction.padEnd(scale, "0"));
  return parts.negative ? -units : units;
}

/** The exact sum of decimal strings, as a decimal string with the most fraction digits of any. */
export function addDecimals(values: string[]): string {
  const scale = Math.max(0, ...values.map((value) => parse(value)?.fraction.length ?? 0));
  const total = values.reduce((sum, value) => sum + scaled(value, scale), 0n);
  const negative = total < 0n;
  const digits = (negative ? -total : total).toString().padStart(scale + 1, "0");
  const whole = digits.slice(0, digits.length - scale);
  const fraction = digits.slice(digits.length - scale);
  return `${negative ? "-" : ""}${whole}${scale > 0 ? `.${fraction}` : ""}`;
}

/** Sums amounts by currency: { USD: "12.30", EUR: "4.00" }. */
export function totalsByCurrency(moneys: Array<{ amount: string; currency: string } | undefined>): Record<string, string> {
  const by: Record<string, string[]> = {};
  for (const money of moneys) {
    if (!money || money.amount === "") continue;
    (by[money.currency] ??= []).push(money.amount);
  }
  return Object.fromEntries(Object.entries(by).map(([currency, amounts]) => [currency, addDecimals(amounts)]));
}
