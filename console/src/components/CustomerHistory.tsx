"use client";

import Link from "next/link";
import { useState, type ReactNode } from "react";

import { Loaded, Pager } from "@/components/ui";
import { client } from "@/lib/client";
import { enumName, formatTime } from "@/lib/format";
import { formatMoneyValue } from "@/lib/money";
import { FIRST_PAGE, currentToken, withNextToken, type PageState } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import { ActorKind, AuditService } from "@/gen/tally/audit/v1/audit_pb";
import { CreditLedgerEntryKind, CreditService } from "@/gen/tally/invoicing/v1/credits_pb";
import { PaymentService, PaymentStatus, RefundReason, RefundStatus } from "@/gen/tally/payments/v1/payments_pb";

const PAGE_SIZE = 50;

/**
 * What the console (not the portal) adds to a customer: payments and their
 * refunds, the credit ledger and the audit timeline. Each section loads at
 * once beside the customer's own calls and fails on its own (a payments
 * service that does not run here leaves the rest of the page).
 */
export function CustomerHistory({ customerId }: { customerId: string }) {
  return (
    <>
      <Payments customerId={customerId} />
      <CreditLedger customerId={customerId} />
      <AuditTimeline customerId={customerId} />
    </>
  );
}

/** A paged list call: the page state, and the load keyed by the current token. */
function usePaged<T>(what: string, fetch: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>, deps: unknown[]) {
  const [page, setPage] = useState<PageState>(FIRST_PAGE);
  const token = currentToken(page);
  const [load, reload] = useLoad(async () => {
    const answer = await step(what, fetch(token));
    setPage((state) => withNextToken(state, answer.nextPageToken));
    return answer.items;
  }, [...deps, token]);
  return { page, setPage, load, reload };
}

type Paged<T> = ReturnType<typeof usePaged<T>>;

/** A heading, one paged list call's items (or `empty` when there are none) and its pager. */
function PagedSection<T>({
  title,
  what,
  paged,
  empty,
  emptyTestId,
  children,
}: {
  title: string;
  what: string;
  paged: Paged<T>;
  empty: string;
  emptyTestId?: string;
  children: (items: T[]) => ReactNode;
}) {
  return (
    <>
      <h2>{title}</h2>
      <Loaded load={paged.load} what={what} retry={paged.reload}>
        {(items) =>
          items.length === 0 ? (
            <p className="notice" data-testid={emptyTestId}>
              {empty}
            </p>
          ) : (
            children(items)
          )
        }
      </Loaded>
      <Pager page={paged.page} setPage={paged.setPage} />
    </>
  );
}

function invoiceLink(invoiceId: string) {
  return invoiceId ? <Link href={`/invoice/?id=${encodeURIComponent(invoiceId)}`}>{invoiceId}</Link> : "—";
}

function Payments({ customerId }: { customerId: string }) {
  const paged = usePaged(
    "Listing payments",
    async (pageToken) => {
      const payments = await client(PaymentService);
      const answer = await payments.listPayments({ customerId, pageSize: PAGE_SIZE, pageToken });
      return { items: answer.payments, nextPageToken: answer.nextPageToken };
    },
    [customerId],
  );
  return (
    <PagedSection title="Payments and refunds" what="payments" paged={paged} empty="No payments." emptyTestId="no-payments">
      {(payments) => (
        <table data-testid="payments">
          <thead>
            <tr>
              <th>Payment</th>
              <th>Invoice</th>
              <th>Status</th>
              <th>Created</th>
              <th className="amount">Amount</th>
              <th className="amount">Refunded</th>
            </tr>
          </thead>
          {payments.map((payment) => (
            <tbody key={payment.id} data-payment-id={payment.id}>
              <tr>
                <td>
                  <code>{payment.id}</code>
                </td>
                <td>{invoiceLink(payment.invoiceId)}</td>
                <td>
                  {enumName(PaymentStatus, payment.status, "")}
                  {payment.attempts.length > 0 ? ` (${payment.attempts.length} attempts)` : ""}
                </td>
                <td>{formatTime(payment.createdAt)}</td>
                <td className="amount">{formatMoneyValue(payment.amount)}</td>
                <td className="amount">{formatMoneyValue(payment.amountRefunded)}</td>
              </tr>
              {payment.refunds.map((refund) => (
                <tr key={refund.id} className="explanation" data-refund-id={refund.id}>
                  <td />
                  <td colSpan={3}>
                    refund <code>{refund.id}</code>: {enumName(RefundStatus, refund.status, "")}, {enumName(RefundReason, refund.reason, "")}
                    {refund.memo ? ` — ${refund.memo}` : ""}
                    {refund.failureReason ? ` (failed: ${refund.failureReason})` : ""}, {formatTime(refund.createdAt)}
                  </td>
                  <td />
                  <td className="amount">{formatMoneyValue(refund.amount)}</td>
                </tr>
              ))}
            </tbody>
          ))}
        </table>
      )}
    </PagedSection>
  );
}

function CreditLedger({ customerId }: { customerId: string }) {
  const paged = usePaged(
    "Listing the credit ledger",
    async (pageToken) => {
      const credits = await client(CreditService);
      const answer = await credits.listCreditLedgerEntries({ customerId, pageSize: PAGE_SIZE, pageToken });
      return { items: answer.entries, nextPageToken: answer.nextPageToken };
    },
    [customerId],
  );
  return (
    <PagedSection title="Credit ledger" what="the credit ledger" paged={paged} empty="No credit movements." emptyTestId="no-ledger">
      {(entries) => (
        <table data-testid="credit-ledger">
          <thead>
            <tr>
              <th>Effective</th>
              <th>Kind</th>
              <th>Grant</th>
              <th>Invoice</th>
              <th>Description</th>
              <th className="amount">Amount</th>
              <th className="amount">Balance after</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((entry) => (
              <tr key={entry.id} data-entry-id={entry.id}>
                <td>{formatTime(entry.effectiveAt)}</td>
                <td>{enumName(CreditLedgerEntryKind, entry.kind, "")}</td>
                <td>{entry.creditGrantId ? <code>{entry.creditGrantId}</code> : "—"}</td>
                <td>{invoiceLink(entry.invoiceId)}</td>
                <td>{entry.description}</td>
                <td className="amount" data-testid="ledger-amount">
                  {formatMoneyValue(entry.amount)}
                </td>
                <td className="amount" data-testid="ledger-balance">
                  {formatMoneyValue(entry.balanceAfter)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </PagedSection>
  );
}

function AuditTimeline({ customerId }: { customerId: string }) {
  const paged = usePaged(
    "Listing the audit entries",
    async (pageToken) => {
      const audit = await client(AuditService);
      const answer = await audit.listAuditEntries({ resourceId: customerId, pageSize: PAGE_SIZE, pageToken });
      return { items: answer.entries, nextPageToken: answer.nextPageToken };
    },
    [customerId],
  );
  return (
    <PagedSection title="Audit timeline" what="the audit timeline" paged={paged} empty="No audit entries about this customer.">
      {(entries) => (
        <table data-testid="audit">
          <thead>
            <tr>
              <th>Recorded</th>
              <th>Action</th>
              <th>By</th>
              <th>Reason</th>
              <th>Entry</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((entry) => (
              <tr key={entry.id} data-action={entry.action}>
                <td>{formatTime(entry.recordedAt)}</td>
                <td>{entry.action}</td>
                <td>
                  {entry.actor ? `${entry.actor.name || entry.actor.id} (${enumName(ActorKind, entry.actor.kind, "")})` : "—"}
                </td>
                <td>{[entry.reason, entry.comment].filter(Boolean).join(" — ") || "—"}</td>
                <td>
                  <code>
                    {entry.chain}#{String(entry.sequence)}
                  </code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </PagedSection>
  );
}
