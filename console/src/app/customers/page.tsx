"use client";

import Link from "next/link";
import { useState } from "react";

import { Loaded, Pager, Shell } from "@/components/ui";
import { client } from "@/lib/client";
import { formatTime } from "@/lib/format";
import { FIRST_PAGE, currentToken, withNextToken } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import { CustomerService, CustomerStatus } from "@/gen/tally/invoicing/v1/customers_pb";

const PAGE_SIZE = 50;

export default function CustomersPage() {
  const [page, setPage] = useState(FIRST_PAGE);
  const token = currentToken(page);
  const [load, reload] = useLoad(async () => {
    const customers = await client(CustomerService);
    const response = await step("Listing customers", customers.listCustomers({ pageSize: PAGE_SIZE, pageToken: token }));
    setPage((state) => withNextToken(state, response.nextPageToken));
    return response.customers;
  }, [token]);

  return (
    <Shell title="Customers">
      <Loaded load={load} what="customers" retry={reload}>
        {(customers) => (
          <>
            <table>
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
            {customers.length === 0 && <p className="notice">No customers yet: `tally customers create` or `tally dev --demo`.</p>}
            <Pager page={page} setPage={setPage} />
          </>
        )}
      </Loaded>
    </Shell>
  );
}
