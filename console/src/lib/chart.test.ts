import { describe, expect, it } from "vitest";
import { dayKey, lastMonths, monthKey, monthStart, placeBars } from "./chart";

describe("placeBars", () => {
  it("places positive bars on a bottom zero line, the largest full height", () => {
    const geometry = placeBars([{ label: "a", value: "50" }, { label: "b", value: "100.00" }], 200, 100, 0);
    expect(geometry.zero).toBe(100);
    expect(geometry.max).toBe("100.00");
    expect(geometry.bars.map((bar) => [bar.x, bar.width, bar.y, bar.height])).toEqual([
      [0, 100, 50, 50],
      [100, 100, 0, 100],
    ]);
  });
  it("hangs negative bars below a zero line placed by the range", () => {
    const geometry = placeBars([{ label: "gain", value: "30" }, { label: "loss", value: "-10" }], 100, 40, 0);
    expect(geometry.zero).toBe(30);
    expect(geometry.bars[0]).toMatchObject({ y: 0, height: 30, negative: false });
    expect(geometry.bars[1]).toMatchObject({ y: 30, height: 10, negative: true });
    expect(geometry.max).toBe("30");
  });
  it("keeps the value strings exact: only geometry is a number", () => {
    const geometry = placeBars([{ label: "x", value: "9007199254740993.01" }], 10, 10, 0);
    expect(geometry.bars[0].value).toBe("9007199254740993.01");
    expect(geometry.max).toBe("9007199254740993.01");
  });
  it("draws all zeros and no bars flat", () => {
    expect(placeBars([{ label: "x", value: "0" }], 10, 10).bars[0].height).toBe(0);
    expect(placeBars([], 10, 10)).toEqual({ bars: [], zero: 10, max: "0" });
  });
});

describe("months and days", () => {
  it("counts months back across a year in UTC", () => {
    expect(lastMonths(new Date("2027-02-10T23:00:00Z"), 4)).toEqual(["2026-11", "2026-12", "2027-01", "2027-02"]);
    expect(monthStart(new Date("2026-11-30T23:59:59Z"), 1).toISOString()).toBe("2026-12-01T00:00:00.000Z");
    expect(monthKey(new Date("2026-01-01T00:00:00Z"))).toBe("2026-01");
    expect(dayKey(new Date("2026-11-05T12:00:00Z"))).toBe("2026-11-05");
  });
});
