"use client";

import { Code } from "@connectrpc/connect";

import { BarChart } from "@/components/BarChart";
import { MrrMovements } from "@/components/MrrMovements";
import { Loaded, Shell } from "@/components/ui";
import { client, describeError, isCode } from "@/lib/client";
import { formatMoney, formatMoneyValue, totalsByCurrency } from "@/lib/money";
import { collectPages } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import { AccountKind, AnalyticsService, LedgerService, type GetTrialBalanceResponse } from "@/gen/tally/finance/v1/finance_pb";
import { InvoiceService, InvoiceStatus } from "@/gen/tally/invoicing/v1/invoices_pb";

/** Invoices read for billed vs collected: a bound, said on the page when reached. */
const MAX_INVOICE_PAGES = 20;

export default function OverviewPage() {
  const [load, reload] = useLoad(async () => {
    const [analytics, ledger, invoices] = await Promise.all([client(AnalyticsService), client(LedgerService), client(InvoiceService)]);
    const [mrr, books, billed] = await Promise.all([
      // The finance service may not run here: say so instead of failing the page.
      analytics.getMrr({ currency: "USD" }).then(
        (response) => ({ response, note: null as string | null }),
        (error: unknown) => ({
          response: null,
          note: isCode(error, Code.Unimplemented) ? "The finance service does not run here." : describeError("Reading MRR", error),
        }),
      ),
      ledger.getTrialBalance({}).then(
        (response) => ({ recognised: recognisedRevenue(response), note: null as string | null }),
        (error: unknown) => ({
          recognised: null,
          note: isCode(error, Code.Unimplemented) ? "The finance service does not run here: nothing recognised to show." : describeError("Reading the trial balance", error),
        }),
      ),
      step(
        "Listing finalized and paid invoices",
        collectPages(async (pageToken) => {
          const page = await invoices.listInvoices({ statuses: [InvoiceStatus.FINALIZED, InvoiceStatus.PAID], pageSize: 200, pageToken });
          return { items: page.invoices, nextPageToken: page.nextPageToken };
        }, MAX_INVOICE_PAGES),
      ),
    ]);
    return {
      mrr,
      invoiceCount: billed.items.length,
      truncated: billed.truncated,
      billed: totalsByCurrency(billed.items.map((invoice) => invoice.total)),
      collected: totalsByCurrency(billed.items.map((invoice) => invoice.amountPaid)),
      credited: totalsByCurrency(billed.items.map((invoice) => invoice.amountCredited)),
      due: totalsByCurrency(billed.items.map((invoice) => invoice.amountDue)),
      recognised: books.recognised,
      booksNote: books.note,
    };
  }, []);

  return (
    <Shell title="Overview">
      <Loaded load={load} what="the overview" retry={reload}>
        {(overview) => (
          <>
            <h2>Recurring revenue (USD)</h2>
            {overview.mrr.response ? (
              <div className="cards">
                <Card label="MRR" value={formatMoneyValue(overview.mrr.response.mrr)} testId="mrr" />
                <Card label="ARR" value={formatMoneyValue(overview.mrr.response.arr)} testId="arr" />
                <Card label="Paying customers" value={String(overview.mrr.response.payingCustomers)} />
                <Card label="ARPA" value={formatMoneyValue(overview.mrr.response.arpa)} />
              </div>
            ) : (
              <p className="notice">{overview.mrr.note}</p>
            )}
            <h2>MRR movements by month</h2>
            <MrrMovements />
            <h2>Billed vs collected vs recognised</h2>
            <p className="notice">
              Over {overview.invoiceCount} finalized and paid invoices
              {overview.truncated ? ` (the first ${overview.invoiceCount}: more exist)` : ""}.
            </p>
            <table data-testid="billed-vs-collected">
              <thead>
                <tr>
                  <th>Currency</th>
                  <th className="amount">Billed</th>
                  <th className="amount">Collected</th>
                  <th className="amount">Recognised</th>
                  <th className="amount">Credited</th>
                  <th className="amount">Outstanding</th>
                </tr>
              </thead>
              <tbody>
                {Object.keys(overview.billed)
                  .sort()
                  .map((currency) => (
                    <tr key={currency}>
                      <td>{currency}</td>
                      <td className="amount">{formatMoney(overview.billed[currency], currency)}</td>
                      <td className="amount">{formatMoney(overview.collected[currency] ?? "0", currency)}</td>
                      <td className="amount" data-testid={`recognised-${currency}`}>
                        {overview.recognised ? formatMoney(overview.recognised[currency] ?? "0", currency) : "—"}
                      </td>
                      <td className="amount">{formatMoney(overview.credited[currency] ?? "0", currency)}</td>
                      <td className="amount">{formatMoney(overview.due[currency] ?? "0", currency)}</td>
                    </tr>
                  ))}
              </tbody>
            </table>
            {overview.booksNote && <p className="notice">{overview.booksNote}</p>}
            {Object.keys(overview.billed)
              .sort()
              .map((currency) => (
                <BarChart
                  key={currency}
                  testId={`billed-chart-${currency}`}
                  title={`Billed, collected and recognised (${currency})`}
                  bars={[
                    { label: "billed", value: overview.billed[currency] },
                    { label: "collected", value: overview.collected[currency] ?? "0" },
                    { label: "recognised", value: overview.recognised?.[currency] ?? "0" },
                  ]}
                  format={(value) => formatMoney(value, currency)}
                />
              ))}
          </>
        )}
      </Loaded>
    </Shell>
  );
}

/**
 * Revenue recognised so far per currency: the balances of finance's revenue
 * accounts (recurring fees 4000, one-off 4100, usage 4200/<meter>, net of
 * contra-revenue 4900, itself a revenue-kind account), summed exactly.
 */
function recognisedRevenue(response: GetTrialBalanceResponse): Record<string, string> {
  return totalsByCurrency(
    response.balances.flatMap((balance) => balance.accounts.filter((account) => account.kind === AccountKind.REVENUE).map((account) => account.balance)),
  );
}

function Card({ label, value, testId }: { label: string; value: string; testId?: string }) {
  return (
    <div className="card" data-testid={testId}>
      <div className="notice">{label}</div>
      <div className="value">{value}</div>
    </div>
  );
}
