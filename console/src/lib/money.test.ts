import { describe, expect, it } from "vitest";
import { addDecimals, formatMoney, formatMoneyValue, minorDigits, totalsByCurrency } from "./money";

describe("formatMoney", () => {
  it("pads to the currency's minor units and groups thousands", () => {
    expect(formatMoney("1234.5", "USD")).toBe("1,234.50 USD");
    expect(formatMoney("499", "USD")).toBe("499.00 USD");
    expect(formatMoney("1234567", "JPY")).toBe("1,234,567 JPY");
    expect(formatMoney("1.5", "KWD")).toBe("1.500 KWD");
  });
  it("keeps every digit of precise amounts, never rounding", () => {
    expect(formatMoney("30.2718225", "USD")).toBe("30.2718225 USD");
    expect(formatMoney("9007199254740993.01", "USD")).toBe("9,007,199,254,740,993.01 USD");
    expect(formatMoney("0.10", "USD")).toBe("0.10 USD");
  });
  it("keeps signs and zeros", () => {
    expect(formatMoney("-24.50", "USD")).toBe("-24.50 USD");
    expect(formatMoney("-0", "USD")).toBe("0.00 USD");
    expect(formatMoney("0007.1", "EUR")).toBe("7.10 EUR");
  });
  it("shows what is not a decimal as it came", () => {
    expect(formatMoney("1e3", "USD")).toBe("1e3 USD");
    expect(formatMoneyValue(undefined)).toBe("—");
    expect(formatMoneyValue({ amount: "", currency: "USD" })).toBe("—");
  });
  it("knows exponents", () => {
    expect(minorDigits("usd")).toBe(2);
    expect(minorDigits("JPY")).toBe(0);
  });
});

describe("addDecimals", () => {
  it("adds exactly where floats do not", () => {
    expect(0.1 + 0.2).not.toBe(0.3);
    expect(addDecimals(["0.1", "0.2"])).toBe("0.3");
    expect(addDecimals(["9007199254740993", "0.01"])).toBe("9007199254740993.01");
    expect(addDecimals(["-24.50", "249.50", "30.27"])).toBe("255.27");
    expect(addDecimals(["-1.25", "0.5"])).toBe("-0.75");
    expect(addDecimals([])).toBe("0");
  });
  it("totals by currency", () => {
    expect(
      totalsByCurrency([
        { amount: "1.10", currency: "USD" },
        { amount: "2", currency: "EUR" },
        { amount: "3.005", currency: "USD" },
        undefined,
      ]),
    ).toEqual({ USD: "4.105", EUR: "2" });
  });
});
