// Where an object a page mentions is shown: Tally's own pages for invoices
// and customers, Stripe's dashboard for Stripe's objects (reconciliation
// findings link to both sides).

/** The console page of a Tally id, when there is one (invoices, customers). */
export function tallyHref(id: string): string | null {
  if (id.startsWith("inv_")) return `/invoice/?id=${encodeURIComponent(id)}`;
  if (id.startsWith("cus_")) return `/customer/?id=${encodeURIComponent(id)}`;
  return null;
}

const STRIPE_PATHS: Array<[string, string]> = [
  ["in_", "invoices"],
  ["pi_", "payments"],
  ["ch_", "payments"],
  ["py_", "payments"],
  ["re_", "refunds"],
  ["pyr_", "refunds"],
  ["txn_", "balance-transactions"],
  ["cus_", "customers"],
];

/** Stripe's dashboard page of a Stripe id, by its prefix; null for an unknown prefix. */
export function stripeHref(id: string): string | null {
  const found = STRIPE_PATHS.find(([prefix]) => id.startsWith(prefix));
  return found ? `https://dashboard.stripe.com/${found[1]}/${encodeURIComponent(id)}` : null;
}
