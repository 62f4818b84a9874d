// The customer list at scale: 10,000 customers behind a fake CustomerService
// (Connect's router transport, in memory: deterministic and fast), paged the
// way the customers page pages. Every call asks for one page of 50, and
// walking to any page never loads the rest.

import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import { CUSTOMER_PAGE_SIZE, customerPage } from "./customers";
import { FIRST_PAGE, currentToken, hasNext, next, previous, withNextToken, type PageState } from "./paging";
import { CustomerSchema, CustomerService, CustomerStatus } from "@/gen/tally/invoicing/v1/customers_pb";

const TOTAL = 10_000;

function fakeService() {
  const all = Array.from({ length: TOTAL }, (_, index) =>
    create(CustomerSchema, { id: `cus_${String(index).padStart(5, "0")}`, name: `Customer ${index}`, currency: "USD", status: CustomerStatus.ACTIVE }),
  );
  const calls: Array<{ pageSize: number; pageToken: string; returned: number }> = [];
  const transport = createRouterTransport(({ service }) => {
    service(CustomerService, {
      listCustomers(request) {
        // The server's rule: page_size clamped to 1000; the token is where the page starts.
        const size = Math.min(request.pageSize || 50, 1000);
        const start = request.pageToken === "" ? 0 : Number(request.pageToken.replace("after:", ""));
        const customers = all.slice(start, start + size);
        const end = start + customers.length;
        calls.push({ pageSize: request.pageSize, pageToken: request.pageToken, returned: customers.length });
        return { customers, nextPageToken: end < all.length ? `after:${end}` : "" };
      },
    });
  });
  return { client: createClient(CustomerService, transport), calls };
}

/** What the page does on a load: fetch the current page, record the next token. */
async function show(client: ReturnType<typeof fakeService>["client"], state: PageState) {
  const page = await customerPage(client, CustomerStatus.UNSPECIFIED, currentToken(state));
  return { rows: page.customers, state: withNextToken(state, page.nextPageToken) };
}

describe("the customer list with 10,000 customers", () => {
  it("shows the first page with one call of 50, and knows there is a next", async () => {
    const { client, calls } = fakeService();
    const { rows, state } = await show(client, FIRST_PAGE);
    expect(rows.map((customer) => customer.id)).toEqual(Array.from({ length: 50 }, (_, index) => `cus_${String(index).padStart(5, "0")}`));
    expect(calls).toEqual([{ pageSize: CUSTOMER_PAGE_SIZE, pageToken: "", returned: 50 }]);
    expect(hasNext(state)).toBe(true);
  });

  it("pages forward and back a page at a time, loading only the pages shown", async () => {
    const { client, calls } = fakeService();
    let state = FIRST_PAGE;
    let rows;
    for (let page = 0; page < 3; page += 1) {
      ({ rows, state } = await show(client, state));
      state = next(state);
    }
    ({ rows, state } = await show(client, state));
    expect(rows[0].id).toBe("cus_00150");
    // Back: the token of page 3 was kept, so one call of 50 again.
    state = previous(state);
    ({ rows, state } = await show(client, state));
    expect(rows[0].id).toBe("cus_00100");
    expect(calls.map((call) => call.pageToken)).toEqual(["", "after:50", "after:100", "after:150", "after:100"]);
    expect(calls.every((call) => call.pageSize === CUSTOMER_PAGE_SIZE && call.returned === CUSTOMER_PAGE_SIZE)).toBe(true);
    // 250 rows fetched of 10,000, never more than one page at once.
    expect(calls.reduce((sum, call) => sum + call.returned, 0)).toBe(250);
  });

  it("reaches the last page after 200 pages of 50, and it has no next", async () => {
    const { client, calls } = fakeService();
    let state = FIRST_PAGE;
    let rows: Awaited<ReturnType<typeof show>>["rows"] = [];
    for (;;) {
      ({ rows, state } = await show(client, state));
      if (!hasNext(state)) break;
      state = next(state);
    }
    expect(calls).toHaveLength(TOTAL / CUSTOMER_PAGE_SIZE);
    expect(Math.max(...calls.map((call) => call.returned))).toBe(CUSTOMER_PAGE_SIZE);
    expect(rows.at(-1)?.id).toBe("cus_09999");
    expect(state.index).toBe(199);
  });
});
