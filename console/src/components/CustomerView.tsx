"use client";

import { Code } from "@connectrpc/connect";
import Link from "next/link";

import { CustomerUsage } from "@/components/CustomerUsage";
import { Failure, Fields, Loaded } from "@/components/ui";
import { client, isCode } from "@/lib/client";
import { enumName, formatRange, formatTime } from "@/lib/format";
import { formatMoney, formatMoneyValue, totalsByCurrency } from "@/lib/money";
import { step, useLoad } from "@/lib/useLoad";
import { CreditService } from "@/gen/tally/invoicing/v1/credits_pb";
import { CustomerService } from "@/gen/tally/invoicing/v1/customers_pb";
import { InvoiceService, InvoiceStatus, type Invoice } from "@/gen/tally/invoicing/v1/invoices_pb";
import { SubscriptionService, SubscriptionStatus } from "@/gen/tally/invoicing/v1/subscriptions_pb";
import { RatingService } from "@/gen/tally/rating/v1/rating_pb";

/**
 * One customer: subscriptions, live cost of the open period, the upcoming
 * invoice, past invoices and the credit balance. The console and the portal
 * both show it; `credential` is the key the calls are signed with, and
 * `invoiceHref` where an invoice links to (none in the portal), `usage`
 * whether to chart usage per meter per day (not in the portal: a portal
 * token may not call GetUsage).
 */
export function CustomerView({
  customerId,
  credential,
  invoiceHref,
  usage = false,
}: {
  customerId: string;
  credential?: () => string | null;
  invoiceHref?: (invoice: Invoice) => string;
  usage?: boolean;
}) {
  const [load, reload] = useLoad(async () => {
    const [customers, subscriptions, rating, invoices, credits] = await Promise.all([
      client(CustomerService, credential),
      client(SubscriptionService, credential),
      client(RatingService, credential),
      client(InvoiceService, credential),
      client(CreditService, credential),
    ]);
    // One round: every independent call at once.
    const [customer, subscriptionList, cost, invoiceList, balance] = await Promise.all([
      step("Reading the customer", customers.getCustomer({ lookup: { case: "customerId", value: customerId } })),
      step("Listing subscriptions", subscriptions.listSubscriptions({ customerId, pageSize: 100 })),
      step(
        "Reading the live cost",
        // No subscription known to rating yet: no open period to price.
        rating.getCurrentCost({ customerId }).catch((error: unknown) => {
          if (isCode(error, Code.NotFound)) return { costs: [], computedAt: undefined };
          throw error;
        }),
      ),
      step("Listing invoices", invoices.listInvoices({ customerId, pageSize: 50 })),
      step("Reading the credit balance", credits.getCreditBalance({ customerId })),
    ]);
    const open = subscriptionList.subscriptions.filter((subscription) =>
      [SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING].includes(subscription.status),
    );
    const upcoming = await Promise.all(
      open.map((subscription) =>
        invoices.previewUpcomingInvoice({ subscriptionId: subscription.id }).then(
          (response) => ({ subscriptionId: subscription.id, invoice: response.invoice, error: null as string | null }),
          (error: unknown) => ({ subscriptionId: subscription.id, invoice: undefined, error: String(error) }),
        ),
      ),
    );
    return { customer: customer.customer, subscriptions: subscriptionList.subscriptions, cost, invoices: invoiceList.invoices, balance, upcoming };
  }, [customerId]);

  return (
    <Loaded load={load} what="the customer" retry={reload}>
      {({ customer, subscriptions, cost, invoices, balance, upcoming }) => (
        <>
          <Fields
            rows={[
              ["Name", customer?.name ?? "—"],
              ["External id", customer?.externalId ?? "—"],
              ["Id", <code key="id">{customer?.id}</code>],
              ["Currency", customer?.currency ?? "—"],
              ["Email", customer?.billingEmail || "—"],
              ["Credit balance", formatMoneyValue(balance.available)],
              ["Pending credits", formatMoneyValue(balance.pending)],
            ]}
          />
          <h2>Subscriptions</h2>
          <table>
            <thead>
              <tr>
                <th>Id</th>
                <th>Plan version</th>
                <th>Status</th>
                <th>Current period</th>
              </tr>
            </thead>
            <tbody>
              {subscriptions.map((subscription) => (
                <tr key={subscription.id}>
                  <td>
                    <code>{subscription.id}</code>
                  </td>
                  <td>
                    <code>{subscription.planVersionId}</code>
                  </td>
                  <td>{enumName(SubscriptionStatus, subscription.status, "")}</td>
                  <td>{formatRange(subscription.currentPeriod)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Live cost of the open period</h2>
          <p className="notice">Computed {formatTime(cost.computedAt)}</p>
          <table data-testid="live-cost">
            <thead>
              <tr>
                <th>Subscription</th>
                <th>Period</th>
                <th>Charge</th>
                <th>Quantity</th>
                <th className="amount">Amount</th>
              </tr>
            </thead>
            <tbody>
              {cost.costs.flatMap((subscriptionCost) => [
                ...subscriptionCost.charges.map((charge) => (
                  <tr key={`${subscriptionCost.subscriptionId}-${charge.chargeKey}-${JSON.stringify(charge.group)}`} data-charge={charge.chargeKey}>
                    <td>
                      <code>{subscriptionCost.subscriptionId}</code>
                    </td>
                    <td>{formatRange(subscriptionCost.period)}</td>
                    <td>{charge.chargeName || charge.chargeKey}</td>
                    <td data-testid="charge-quantity">{charge.quantity?.value ?? ""}</td>
                    <td className="amount">{formatMoneyValue(charge.amount)}</td>
                  </tr>
                )),
                <tr key={`${subscriptionCost.subscriptionId}-total`}>
                  <td colSpan={4}>
                    <strong>Usage total</strong>
                  </td>
                  <td className="amount">
                    <strong>{formatMoneyValue(subscriptionCost.usageTotal)}</strong>
                  </td>
                </tr>,
              ])}
            </tbody>
          </table>
          <p className="notice">
            Live usage cost of the open period:{" "}
            <strong data-testid="live-cost-total">
              {Object.entries(totalsByCurrency(cost.costs.map((subscriptionCost) => subscriptionCost.usageTotal)))
                .map(([currency, amount]) => formatMoney(amount, currency))
                .join(", ") || "—"}
            </strong>
          </p>
          {usage && (
            <CustomerUsage
              customerId={customerId}
              meters={[...new Set(cost.costs.flatMap((subscriptionCost) => subscriptionCost.charges.map((charge) => charge.meterCode)))].sort()}
              period={cost.costs[0]?.period}
            />
          )}
          <h2>Upcoming invoice</h2>
          {upcoming.length === 0 && <p className="notice">No open subscription.</p>}
          {upcoming.map(({ subscriptionId, invoice, error }) =>
            error ? (
              <Failure key={subscriptionId} message={`Previewing the upcoming invoice of ${subscriptionId} failed: ${error}`} />
            ) : (
              <Fields
                key={subscriptionId}
                rows={[
                  ["Subscription", <code key="s">{subscriptionId}</code>],
                  ["Period", formatRange(invoice?.period)],
                  ["Subtotal", formatMoneyValue(invoice?.subtotal)],
                  ["Total so far", formatMoneyValue(invoice?.total)],
                ]}
              />
            ),
          )}
          <h2>Invoices</h2>
          <InvoiceTable invoices={invoices} href={invoiceHref} />
        </>
      )}
    </Loaded>
  );
}

export function InvoiceTable({ invoices, href }: { invoices: Invoice[]; href?: (invoice: Invoice) => string }) {
  if (invoices.length === 0) return <p className="notice">No invoices.</p>;
  return (
    <table data-testid="invoices">
      <thead>
        <tr>
          <th>Number</th>
          <th>Status</th>
          <th>Customer</th>
          <th>Period</th>
          <th className="amount">Total</th>
          <th className="amount">Amount due</th>
        </tr>
      </thead>
      <tbody>
        {invoices.map((invoice) => (
          <tr key={invoice.id}>
            <td>{href ? <Link href={href(invoice)}>{invoice.number || invoice.id}</Link> : invoice.number || invoice.id}</td>
            <td>{enumName(InvoiceStatus, invoice.status, "")}</td>
            <td>
              <code>{invoice.customerId}</code>
            </td>
            <td>{formatRange(invoice.period)}</td>
            <td className="amount">{formatMoneyValue(invoice.total)}</td>
            <td className="amount">{formatMoneyValue(invoice.amountDue)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
