"use client";

import { CustomerView } from "@/components/CustomerView";
import { Failure } from "@/components/ui";
import { portalToken, setPortalToken } from "@/lib/session";
import { useBrowserValue } from "@/lib/useLoad";

/** Moves a token from the link's fragment into session storage (once), then names the customer to show. */
function portalCustomer(): string {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const fromLink = fragment.get("token");
  if (fromLink) {
    setPortalToken(fromLink);
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  const token = portalToken();
  return new URLSearchParams(window.location.search).get("customer") ?? (token ? (customerOf(token) ?? "") : "");
}

/**
 * The customer portal: read-only, one customer, reached with the link
 * `tally portal link` prints (`/portal/#token=…`). The token is taken from
 * the fragment (never sent to a server or logged), kept in session storage,
 * and the fragment is cleared.
 */
export default function PortalPage() {
  const customerId = useBrowserValue(portalCustomer);

  return (
    <main>
      <h1>Your usage and invoices</h1>
      {customerId === undefined ? null : customerId === "" ? (
        <Failure message="This page needs the link your provider gave you (it holds an access token): ask them for a new one." />
      ) : (
        <CustomerView customerId={customerId} credential={portalToken} />
      )}
    </main>
  );
}

/** A portal token names its customer: `tallyp_<customer id>.<secret>`. */
function customerOf(token: string): string | null {
  const match = /^tallyp_(cus_[A-Za-z0-9]+)\./.exec(token);
  return match ? match[1] : null;
}
