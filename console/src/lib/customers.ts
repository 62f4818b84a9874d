// One page of the customer list: what the customers page asks for, kept
// here so a test drives it against a fake service (customers.test.ts).

import type { Client } from "@connectrpc/connect";

import type { Customer, CustomerService, CustomerStatus } from "@/gen/tally/invoicing/v1/customers_pb";

/** Rows per page of the customers table. */
export const CUSTOMER_PAGE_SIZE = 50;

/**
 * The customers of the page that `pageToken` fetches ("" for the first): one
 * ListCustomers call of CUSTOMER_PAGE_SIZE rows, never the whole list.
 */
export async function customerPage(
  customers: Client<typeof CustomerService>,
  status: CustomerStatus,
  pageToken: string,
): Promise<{ customers: Customer[]; nextPageToken: string }> {
  const response = await customers.listCustomers({ status, pageSize: CUSTOMER_PAGE_SIZE, pageToken });
  return { customers: response.customers, nextPageToken: response.nextPageToken };
}
