"use client";

import { CustomerHistory } from "@/components/CustomerHistory";
import { CustomerView } from "@/components/CustomerView";
import { Failure, Shell } from "@/components/ui";
import { useQueryParam } from "@/lib/useLoad";

export default function CustomerPage() {
  const id = useQueryParam("id");
  return (
    <Shell title="Customer">
      {id === undefined ? null : id === null ? (
        <Failure message="No customer named: open one from the customers list (/customer/?id=cus_…)." />
      ) : (
        <>
          <CustomerView customerId={id} usage invoiceHref={(invoice) => `/invoice/?id=${encodeURIComponent(invoice.id)}`} />
          <CustomerHistory customerId={id} />
        </>
      )}
    </Shell>
  );
}
