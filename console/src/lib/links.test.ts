import { describe, expect, it } from "vitest";
import { stripeHref, tallyHref } from "./links";

describe("links", () => {
  it("Tally ids open console pages", () => {
    expect(tallyHref("inv_01abc")).toBe("/invoice/?id=inv_01abc");
    expect(tallyHref("cus_01abc")).toBe("/customer/?id=cus_01abc");
    expect(tallyHref("pay_01abc")).toBeNull();
  });
  it("Stripe ids open the dashboard by prefix", () => {
    expect(stripeHref("in_123")).toBe("https://dashboard.stripe.com/invoices/in_123");
    expect(stripeHref("pi_123")).toBe("https://dashboard.stripe.com/payments/pi_123");
    expect(stripeHref("re_123")).toBe("https://dashboard.stripe.com/refunds/re_123");
    expect(stripeHref("txn_123")).toBe("https://dashboard.stripe.com/balance-transactions/txn_123");
    expect(stripeHref("zz_1")).toBeNull();
    expect(stripeHref("")).toBeNull();
  });
});
