import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";

import { describePrice } from "./price";
import { PriceSchema, type Price } from "@/gen/tally/rating/v1/catalog_pb";

const money = (amount: string) => ({ amount, currency: "USD" });
const price = (init: Parameters<typeof create<typeof PriceSchema>>[1]): Price => create(PriceSchema, init);

describe("describePrice", () => {
  it("graduated tiers: ranges, every digit of the unit price, an open last tier", () => {
    const view = describePrice(
      price({
        model: {
          case: "graduated",
          value: {
            tiers: [
              { upTo: { value: "10000000" }, unitPrice: { value: "0.0000021" } },
              { upTo: { value: "100000000" }, unitPrice: { value: "0.0000015" }, flatAmount: money("5") },
              { unitPrice: { value: "0.0000009" } },
            ],
          },
        },
      }),
      "USD",
    );
    expect(view.model).toBe("graduated");
    expect(view.tiers).toEqual([
      { from: "0", upTo: "10000000", unitPrice: "0.0000021 USD", flat: "—" },
      { from: "10000000", upTo: "100000000", unitPrice: "0.0000015 USD", flat: "5.00 USD" },
      { from: "100000000", upTo: "∞", unitPrice: "0.0000009 USD", flat: "—" },
    ]);
  });
  it("bulk brackets are amounts", () => {
    const view = describePrice(
      price({ model: { case: "bulk", value: { brackets: [{ upTo: { value: "100" }, amount: money("1234.5") }, { amount: money("2000") }] } } }),
      "USD",
    );
    expect(view.tiers.map((row) => [row.from, row.upTo, row.flat])).toEqual([
      ["0", "100", "1,234.50 USD"],
      ["100", "∞", "2,000.00 USD"],
    ]);
  });
  it("matrix cells, sorted dimensions, and the fallback", () => {
    const view = describePrice(
      price({
        model: {
          case: "matrix",
          value: {
            dimensions: ["gpu_type"],
            cells: [{ dimensionValues: { gpu_type: "h100" }, unitPrice: { value: "0.00125" } }],
          },
        },
      }),
      "USD",
    );
    expect(view.summary).toBe("by gpu_type; other combinations are rejected");
    expect(view.cells).toEqual([{ match: "gpu_type=h100", unitPrice: "0.00125 USD" }]);
  });
  it("the single-line models", () => {
    expect(describePrice(price({ model: { case: "perUnit", value: { unitPrice: { value: "0.0001" } } } }), "USD").summary).toBe("0.0001 USD per unit");
    expect(describePrice(price({ model: { case: "flatFee", value: { amount: money("499.00") } } }), "USD").summary).toBe("499.00 USD per period");
    expect(
      describePrice(price({ model: { case: "package", value: { packageSize: { value: "1000" }, packagePrice: money("2.5"), freeUnits: { value: "100" } } } }), "USD").summary,
    ).toBe("2.50 USD per 1000 units, rounded up, first 100 free");
    expect(
      describePrice(price({ model: { case: "percentage", value: { ratePercent: { value: "2.9" }, fixedFeePerEvent: money("0.30"), freeEvents: 10n } } }), "USD").summary,
    ).toBe("2.9% of each event's amount, plus 0.30 USD per event, first 10 events free");
    expect(describePrice(undefined, "USD").model).toBe("none");
  });
});
