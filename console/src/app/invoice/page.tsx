"use client";

import { useState, type FormEvent } from "react";

import { Failure, Fields, Loaded, Shell } from "@/components/ui";
import { may, useCaller } from "@/lib/caller";
import { client, describeError } from "@/lib/client";
import { explain } from "@/lib/explain";
import { enumName, formatRange, formatTime } from "@/lib/format";
import { formatMoneyValue } from "@/lib/money";
import { step, useLoad, useQueryParam } from "@/lib/useLoad";
import {
  CreditNoteReason,
  InvoiceLineKind,
  InvoiceService,
  InvoiceStatus,
  type Invoice,
} from "@/gen/tally/invoicing/v1/invoices_pb";

function newKey(action: string): string {
  return `console-${action}-${crypto.randomUUID()}`;
}

export default function InvoicePage() {
  const id = useQueryParam("id");
  return (
    <Shell title="Invoice">
      {id === undefined ? null : id === null ? (
        <Failure message="No invoice named: open one from the invoices list (/invoice/?id=inv_…)." />
      ) : (
        <InvoiceView invoiceId={id} />
      )}
    </Shell>
  );
}

function InvoiceView({ invoiceId }: { invoiceId: string }) {
  const [load, reload] = useLoad(async () => {
    const invoices = await client(InvoiceService);
    const [invoice, notes] = await Promise.all([
      step("Reading the invoice", invoices.getInvoice({ invoiceId })),
      step("Listing its credit notes", invoices.listCreditNotes({ invoiceId, pageSize: 100 })),
    ]);
    return { invoice: invoice.invoice, creditNotes: notes.creditNotes };
  }, [invoiceId]);

  return (
    <Loaded load={load} what="the invoice" retry={reload}>
      {({ invoice, creditNotes }) =>
        invoice ? (
          <>
            <Fields
              rows={[
                ["Number", invoice.number || "—"],
                ["Id", <code key="id">{invoice.id}</code>],
                ["Customer", <a key="c" href={`/customer/?id=${encodeURIComponent(invoice.customerId)}`}>{invoice.customerId}</a>],
                ["Subscription", <code key="s">{invoice.subscriptionId}</code>],
                ["Status", <span key="st" data-testid="invoice-status">{enumName(InvoiceStatus, invoice.status, "")}</span>],
                ["Period", formatRange(invoice.period)],
                ["Finalized", formatTime(invoice.finalizedAt)],
                ["Due", formatTime(invoice.dueAt)],
                ...(invoice.voidedAt ? ([["Voided", `${formatTime(invoice.voidedAt)}: ${invoice.voidReason}`]] as Array<[string, string]>) : []),
              ]}
            />
            <h2>Lines</h2>
            <table data-testid="invoice-lines">
              <thead>
                <tr>
                  <th>Kind</th>
                  <th>Description</th>
                  <th>Quantity</th>
                  <th>Unit price</th>
                  <th className="amount">Amount</th>
                </tr>
              </thead>
              {invoice.lines.map((line) => (
                <tbody key={line.id} data-line-id={line.id}>
                  <tr>
                    <td>{enumName(InvoiceLineKind, line.kind, "")}</td>
                    <td>{line.description}</td>
                    <td>{line.quantity?.value ?? ""}</td>
                    <td>{line.unitPrice?.value ?? ""}</td>
                    <td className="amount" data-testid="line-amount">
                      {formatMoneyValue(line.amount)}
                    </td>
                  </tr>
                  {explain(line).map((text, index) => (
                    <tr key={index} className="explanation">
                      <td />
                      <td colSpan={4}>{text}</td>
                    </tr>
                  ))}
                </tbody>
              ))}
            </table>
            <h2>Totals</h2>
            <Fields
              rows={[
                ["Subtotal", <span key="a" data-testid="total-subtotal">{formatMoneyValue(invoice.subtotal)}</span>],
                ["Credits applied", <span key="b" data-testid="total-credits-applied">{formatMoneyValue(invoice.creditsApplied)}</span>],
                ["Total", <span key="c" data-testid="total-total">{formatMoneyValue(invoice.total)}</span>],
                ["Paid", <span key="d" data-testid="total-paid">{formatMoneyValue(invoice.amountPaid)}</span>],
                ["Credited", <span key="e" data-testid="total-credited">{formatMoneyValue(invoice.amountCredited)}</span>],
                ["Amount due", <span key="f" data-testid="total-amount-due">{formatMoneyValue(invoice.amountDue)}</span>],
              ]}
            />
            <h2>Credit notes</h2>
            {creditNotes.length === 0 ? (
              <p className="notice">None.</p>
            ) : (
              <table data-testid="credit-notes">
                <thead>
                  <tr>
                    <th>Number</th>
                    <th>Reason</th>
                    <th>Memo</th>
                    <th>Created</th>
                    <th className="amount">Total</th>
                  </tr>
                </thead>
                <tbody>
                  {creditNotes.map((note) => (
                    <tr key={note.id}>
                      <td>{note.number || note.id}</td>
                      <td>{enumName(CreditNoteReason, note.reason, "")}</td>
                      <td>{note.memo}</td>
                      <td>{formatTime(note.createdAt)}</td>
                      <td className="amount">{formatMoneyValue(note.total)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
            <Actions invoice={invoice} done={reload} />
          </>
        ) : (
          <Failure message="The service answered without an invoice." />
        )
      }
    </Loaded>
  );
}

const REASONS: Array<[string, CreditNoteReason]> = [
  ["billing error", CreditNoteReason.BILLING_ERROR],
  ["duplicate", CreditNoteReason.DUPLICATE],
  ["order change", CreditNoteReason.ORDER_CHANGE],
  ["product unsatisfactory", CreditNoteReason.PRODUCT_UNSATISFACTORY],
  ["fraudulent", CreditNoteReason.FRAUDULENT],
];

/** Void and credit note, for a key that may write; a read-only key is told why there are none. */
function Actions({ invoice, done }: { invoice: Invoice; done: () => void }) {
  const caller = useCaller();
  if (caller.state === "loading") return null;
  if (caller.state === "failed") return <Failure message={caller.message} />;
  if (!may(caller, "write")) {
    return (
      <>
        <h2>Actions</h2>
        <p className="notice" data-testid="read-only">
          This key ({caller.value.name || caller.value.keyId}) may only read: voiding and credit notes need a key with the{" "}
          <code>write</code> scope.
        </p>
      </>
    );
  }
  return <WriteActions invoice={invoice} done={done} />;
}

/** Void (with a reason) and credit note (an amount or the whole invoice, with a reason). */
function WriteActions({ invoice, done }: { invoice: Invoice; done: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [voidReason, setVoidReason] = useState("");
  const [amount, setAmount] = useState("");
  const [reason, setReason] = useState(String(CreditNoteReason.BILLING_ERROR));
  const [memo, setMemo] = useState("");

  async function run(what: string, call: () => Promise<unknown>) {
    setBusy(true);
    setError(null);
    try {
      await call();
      done();
    } catch (failure) {
      setError(describeError(what, failure));
    } finally {
      setBusy(false);
    }
  }

  async function voidInvoice(event: FormEvent) {
    event.preventDefault();
    const invoices = await client(InvoiceService);
    await run("Voiding the invoice", () =>
      invoices.voidInvoice({ idempotencyKey: newKey("void"), invoiceId: invoice.id, reason: voidReason }),
    );
  }

  async function creditNote(event: FormEvent) {
    event.preventDefault();
    const invoices = await client(InvoiceService);
    const trimmed = amount.trim();
    await run("Issuing the credit note", () =>
      invoices.createCreditNote({
        idempotencyKey: newKey("credit-note"),
        invoiceId: invoice.id,
        reason: Number(reason) as CreditNoteReason,
        memo,
        amount:
          trimmed === ""
            ? { case: "full", value: true }
            : { case: "partial", value: { lines: [{ amount: { amount: trimmed, currency: invoice.currency } }] } },
        creditToBalance: false,
      }),
    );
  }

  const creditable = [InvoiceStatus.FINALIZED, InvoiceStatus.PAID].includes(invoice.status);
  const voidable = [InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE].includes(invoice.status);
  return (
    <>
      <h2>Actions</h2>
      {creditable && (
        <form className="inline" onSubmit={creditNote} aria-label="credit note">
          <label>
            Credit amount ({invoice.currency}; empty: the whole invoice)
            <input name="creditAmount" value={amount} onChange={(event) => setAmount(event.target.value)} placeholder="12.34" inputMode="decimal" pattern="\d+(\.\d+)?" />
          </label>
          <label>
            Reason
            <select name="creditReason" value={reason} onChange={(event) => setReason(event.target.value)}>
              {REASONS.map(([label, value]) => (
                <option key={value} value={String(value)}>
                  {label}
                </option>
              ))}
            </select>
          </label>
          <label>
            Memo
            <input name="creditMemo" value={memo} onChange={(event) => setMemo(event.target.value)} />
          </label>
          <button type="submit" disabled={busy}>
            Issue credit note
          </button>
        </form>
      )}
      {voidable && (
        <form className="inline" onSubmit={voidInvoice} aria-label="void">
          <label>
            Void reason
            <input name="voidReason" value={voidReason} onChange={(event) => setVoidReason(event.target.value)} required />
          </label>
          <button type="submit" disabled={busy}>
            Void invoice
          </button>
        </form>
      )}
      {!creditable && !voidable && <p className="notice">No action applies to a {enumName(InvoiceStatus, invoice.status, "")} invoice.</p>}
      {error && <Failure message={error} />}
    </>
  );
}
