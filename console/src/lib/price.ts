// A charge's price model in words and rows, for the catalog page: every model
// of tally.rating.v1.Price, tiers and matrix cells as rows. Unit prices are
// the catalog's decimal strings as they came (never a JavaScript number);
// money goes through formatMoney.

import { formatMoneyValue } from "./money";
import {
  PackageRounding,
  PercentageAllowancePolicy,
  type Price,
} from "@/gen/tally/rating/v1/catalog_pb";

type DecimalLike = { value: string } | undefined;

/** One row of a tier or bracket table: the quantity range and what it costs. */
export interface TierRow {
  from: string;
  upTo: string;
  unitPrice: string;
  flat: string;
}

export interface PriceView {
  /** The model's name: "per unit", "graduated", "matrix", … */
  model: string;
  /** One line saying the rest (package size, rate, default price). */
  summary: string;
  tiers: TierRow[];
  cells: Array<{ match: string; unitPrice: string }>;
}

function decimal(value: DecimalLike): string {
  return value?.value ?? "";
}

/** A unit price: the catalog's decimal and the currency, every digit kept. */
export function unitPrice(value: DecimalLike, currency: string): string {
  const text = decimal(value);
  return text === "" ? "—" : `${text} ${currency}`;
}

/** Tier ranges: each starts where the previous ended; the last may be open ("∞"). */
function ranges<T extends { upTo?: { value: string } }>(tiers: T[]): Array<{ tier: T; from: string; upTo: string }> {
  let from = "0";
  return tiers.map((tier) => {
    const upTo = decimal(tier.upTo) || "∞";
    const row = { tier, from, upTo };
    from = upTo;
    return row;
  });
}

const EMPTY: Omit<PriceView, "model" | "summary"> = { tiers: [], cells: [] };

export function describePrice(price: Price | undefined, currency: string): PriceView {
  const model = price?.model;
  switch (model?.case) {
    case "perUnit":
      return { ...EMPTY, model: "per unit", summary: `${unitPrice(model.value.unitPrice, currency)} per unit` };
    case "package": {
      const rounding = model.value.rounding === PackageRounding.DOWN ? "down" : "up";
      const free = decimal(model.value.freeUnits);
      return {
        ...EMPTY,
        model: "package",
        summary: `${formatMoneyValue(model.value.packagePrice)} per ${decimal(model.value.packageSize)} units, rounded ${rounding}${free && free !== "0" ? `, first ${free} free` : ""}`,
      };
    }
    case "graduated":
    case "volume":
      return {
        ...EMPTY,
        model: model.case,
        summary:
          model.case === "graduated"
            ? "each tier prices the units within it"
            : "the tier the total reaches prices every unit",
        tiers: ranges(model.value.tiers).map(({ tier, from, upTo }) => ({
          from,
          upTo,
          unitPrice: unitPrice(tier.unitPrice, currency),
          flat: formatMoneyValue(tier.flatAmount),
        })),
      };
    case "bulk":
      return {
        ...EMPTY,
        model: "bulk",
        summary: "the bracket the total reaches sets the amount",
        tiers: ranges(model.value.brackets).map(({ tier, from, upTo }) => ({
          from,
          upTo,
          unitPrice: "—",
          flat: formatMoneyValue(tier.amount),
        })),
      };
    case "percentage": {
      const value = model.value;
      const parts = [`${decimal(value.ratePercent)}% of each event's amount`];
      if (value.fixedFeePerEvent) parts.push(`plus ${formatMoneyValue(value.fixedFeePerEvent)} per event`);
      if (value.minimumPerEvent) parts.push(`at least ${formatMoneyValue(value.minimumPerEvent)}`);
      if (value.maximumPerEvent) parts.push(`at most ${formatMoneyValue(value.maximumPerEvent)}`);
      if (value.freeEvents > 0n) parts.push(`first ${value.freeEvents} events free`);
      const freeAmount = decimal(value.freeAmount);
      if (freeAmount && freeAmount !== "0") parts.push(`first ${freeAmount} ${currency} free`);
      if (value.allowancePolicy === PercentageAllowancePolicy.FIRST_EXHAUSTED) parts.push("allowances: first exhausted");
      return { ...EMPTY, model: "percentage", summary: parts.join(", ") };
    }
    case "matrix": {
      const fallback = decimal(model.value.defaultUnitPrice);
      return {
        ...EMPTY,
        model: "matrix",
        summary: `by ${model.value.dimensions.join(", ")}${fallback ? `; otherwise ${unitPrice(model.value.defaultUnitPrice, currency)} per unit` : "; other combinations are rejected"}`,
        cells: model.value.cells.map((cell) => ({
          match: Object.entries(cell.dimensionValues)
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([key, value]) => `${key}=${value}`)
            .join(", "),
          unitPrice: unitPrice(cell.unitPrice, currency),
        })),
      };
    }
    case "flatFee":
      return { ...EMPTY, model: "flat fee", summary: `${formatMoneyValue(model.value.amount)} per period` };
    default:
      return { ...EMPTY, model: "none", summary: "no price set" };
  }
}
