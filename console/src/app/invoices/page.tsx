"use client";

import { useState } from "react";

import { InvoiceTable } from "@/components/CustomerView";
import { Loaded, Pager, Shell } from "@/components/ui";
import { client } from "@/lib/client";
import { FIRST_PAGE, currentToken, withNextToken } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import { InvoiceService, InvoiceStatus } from "@/gen/tally/invoicing/v1/invoices_pb";

const STATUSES: Array<[string, InvoiceStatus[]]> = [
  ["all", []],
  ["draft", [InvoiceStatus.DRAFT]],
  ["finalized", [InvoiceStatus.FINALIZED]],
  ["paid", [InvoiceStatus.PAID]],
  ["void", [InvoiceStatus.VOID]],
  ["uncollectible", [InvoiceStatus.UNCOLLECTIBLE]],
];

export default function InvoicesPage() {
  const [status, setStatus] = useState("all");
  const [customerInput, setCustomerInput] = useState("");
  const [customerId, setCustomerId] = useState("");
  const [page, setPage] = useState(FIRST_PAGE);
  const token = currentToken(page);
  const statuses = STATUSES.find(([name]) => name === status)?.[1] ?? [];
  const [load, reload] = useLoad(async () => {
    const invoices = await client(InvoiceService);
    const response = await step("Listing invoices", invoices.listInvoices({ statuses, customerId, pageSize: 50, pageToken: token }));
    setPage((state) => withNextToken(state, response.nextPageToken));
    return response.invoices;
  }, [status, customerId, token]);

  return (
    <Shell title="Invoices">
      <form
        className="inline"
        onSubmit={(event) => {
          event.preventDefault();
          setCustomerId(customerInput.trim());
          setPage(FIRST_PAGE);
        }}
      >
        <label>
          Customer
          <input name="invoiceCustomer" value={customerInput} onChange={(event) => setCustomerInput(event.target.value)} placeholder="cus_… (empty: all)" />
        </label>
        <button type="submit">Filter</button>
        <label>
          Status
          <select
            name="status"
            value={status}
            onChange={(event) => {
              setStatus(event.target.value);
              setPage(FIRST_PAGE);
            }}
          >
            {STATUSES.map(([name]) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
      </form>
      <Loaded load={load} what="invoices" retry={reload}>
        {(invoices) => (
          <>
            <InvoiceTable invoices={invoices} href={(invoice) => `/invoice/?id=${encodeURIComponent(invoice.id)}`} />
            <Pager page={page} setPage={setPage} />
          </>
        )}
      </Loaded>
    </Shell>
  );
}
