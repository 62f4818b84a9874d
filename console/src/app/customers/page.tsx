"use client";

import { Code } from "@connectrpc/connect";
import Link from "next/link";
import { useState, type FormEvent } from "react";

import { Choice, Loaded, Pager, Shell } from "@/components/ui";
import { client, isCode } from "@/lib/client";
import { formatTime } from "@/lib/format";
import { FIRST_PAGE, currentToken, withNextToken } from "@/lib/paging";
import { customerPage } from "@/lib/customers";
import { step, useLoad } from "@/lib/useLoad";
import { CustomerService, CustomerStatus, type Customer } from "@/gen/tally/invoicing/v1/customers_pb";

const STATUSES: Array<[string, CustomerStatus]> = [
  ["all", CustomerStatus.UNSPECIFIED],
  ["active", CustomerStatus.ACTIVE],
  ["archived", CustomerStatus.ARCHIVED],
];

/**
 * Customers, a page at a time (page tokens: the table is never loaded whole),
 * filtered by status; the search finds one customer by its id or external id
 * (GetCustomer's lookups: the RPCs have no text search).
 */
export default function CustomersPage() {
  const [status, setStatus] = useState(CustomerStatus.UNSPECIFIED);
  const [page, setPage] = useState(FIRST_PAGE);
  const [query, setQuery] = useState("");
  const [search, setSearch] = useState("");
  const token = currentToken(page);
  const [load, reload] = useLoad(async () => {
    const customers = await client(CustomerService);
    if (search !== "") {
      const lookup = search.startsWith("cus_") ? ({ case: "customerId", value: search } as const) : ({ case: "externalId", value: search } as const);
      const found = await step(
        `Looking up ${search}`,
        customers.getCustomer({ lookup }).catch((error: unknown) => {
          if (isCode(error, Code.NotFound)) return { customer: undefined };
          throw error;
        }),
      );
      return found.customer ? [found.customer] : [];
    }
    const answer = await step("Listing customers", customerPage(customers, status, token));
    setPage((state) => withNextToken(state, answer.nextPageToken));
    return answer.customers;
  }, [status, token, search]);

  function find(event: FormEvent) {
    event.preventDefault();
    setSearch(query.trim());
  }

  return (
    <Shell title="Customers">
      <form className="inline" onSubmit={find} aria-label="find a customer">
        <label>
          Id or external id
          <input name="customerQuery" value={query} onChange={(event) => setQuery(event.target.value)} placeholder="cus_… or your id" />
        </label>
        <button type="submit">Find</button>
        {search !== "" && (
          <button
            type="button"
            onClick={() => {
              setQuery("");
              setSearch("");
            }}
          >
            Show all
          </button>
        )}
        <Choice
          label="Status"
          name="customerStatus"
          value={status}
          options={STATUSES}
          disabled={search !== ""}
          onChange={(value) => {
            setStatus(value);
            setPage(FIRST_PAGE);
          }}
        />
      </form>
      <Loaded load={load} what="customers" retry={reload}>
        {(customers) => (
          <>
            <CustomerTable customers={customers} />
            {customers.length === 0 &&
              (search !== "" ? (
                <p className="notice" data-testid="no-match">
                  No customer has the id or external id {search}.
                </p>
              ) : (
                <p className="notice">No customers{status === CustomerStatus.UNSPECIFIED ? " yet: `tally customers create` or `tally dev --demo`" : " in this status"}.</p>
              ))}
            {search === "" && <Pager page={page} setPage={setPage} />}
          </>
        )}
      </Loaded>
    </Shell>
  );
}

function CustomerTable({ customers }: { customers: Customer[] }) {
  return (
    <table data-testid="customers">
      <thead>
        <tr>
          <th>Name</th>
          <th>External id</th>
          <th>Id</th>
          <th>Currency</th>
          <th>Status</th>
          <th>Created</th>
        </tr>
      </thead>
      <tbody>
        {customers.map((customer) => (
          <tr key={customer.id}>
            <td>
              <Link href={`/customer/?id=${encodeURIComponent(customer.id)}`}>{customer.name}</Link>
            </td>
            <td>{customer.externalId}</td>
            <td>
              <code>{customer.id}</code>
            </td>
            <td>{customer.currency}</td>
            <td>{CustomerStatus[customer.status]?.toLowerCase()}</td>
            <td>{formatTime(customer.createdAt)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
