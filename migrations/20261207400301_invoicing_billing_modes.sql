-- Invoicing: who bills a customer, as connectors decides it when the customer
-- moves from an external billing system (CustomerService.SetBillingMode;
-- docs/architecture.md, "Connectors: billing system of record"). No row: Tally
-- bills. A row without `tally_bills_after`: every invoice of the customer is
-- held as a draft (shadow billing). With it: invoices of boundaries after it
-- are finalized as usual, the drafts up to it stay held. A held draft's grace
-- period ends at 9999-12-31 (`billing_mode::held_until`), so no bill run ever
-- finalizes it, and FinalizeInvoice refuses it.

CREATE TABLE invoicing.billing_modes (
    customer_id        text PRIMARY KEY REFERENCES invoicing.customers (id),
    tally_bills_after  timestamptz,
    version            bigint NOT NULL CHECK (version >= 1),
    updated_at         timestamptz NOT NULL
);
