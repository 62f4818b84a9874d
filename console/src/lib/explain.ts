// Where an invoice line's amount comes from: the same lines `tally invoices
// show` prints under it (crates/cli/src/admin/invoices.rs, `explain`).

import { formatRange } from "./format";
import type { InvoiceLine } from "@/gen/tally/invoicing/v1/invoices_pb";
import { BreakdownStepKind, type UsageCharge } from "@/gen/tally/rating/v1/rating_pb";

type MoneyLike = { amount: string; currency: string } | undefined;

/** As the CLI prints money: the service's decimal string and the currency. */
function money(value: MoneyLike): string {
  return value ? `${value.amount} ${value.currency}` : "-";
}

function usageBreakdown(charge: UsageCharge): string[] {
  const group = Object.entries(charge.group)
    .map(([key, value]) => `${key}=${value}`)
    .sort();
  const details = [
    `meter ${charge.meterCode}${group.length ? ` [${group.join(", ")}]` : ""}: ${charge.eventCount} events, quantity ${charge.quantity?.value ?? ""}, billable ${charge.billableQuantity?.value ?? ""}; precise ${money(charge.preciseAmount)}`,
  ];
  for (const step of charge.breakdown) {
    const kind = (BreakdownStepKind[step.kind] ?? String(step.kind)).toLowerCase().replaceAll("_", " ");
    let text = `· ${kind}`;
    if (step.description) text += ` (${step.description})`;
    if (step.quantity) text += `: ${step.quantity.value}`;
    if (step.unitPrice) text += ` × ${step.unitPrice.value}`;
    if (step.flatAmount) text += ` + ${money(step.flatAmount)}`;
    text += ` = ${money(step.amount)}`;
    details.push(text);
  }
  return details;
}

export function explain(line: InvoiceLine): string[] {
  const details = [`period ${formatRange(line.period)}`];
  const detail = line.detail;
  switch (detail.case) {
    case "recurring":
      details.push(`charge ${detail.value.chargeKey} of ${detail.value.planVersionId}: ${money(detail.value.periodAmount)} per period`);
      break;
    case "usage":
      if (detail.value.charge) details.push(...usageBreakdown(detail.value.charge));
      break;
    case "proration":
      details.push(
        `charge ${detail.value.chargeKey}: ${money(detail.value.periodAmount)} × factor ${detail.value.factor?.value ?? ""} (${formatRange(detail.value.proratedPeriod)} of ${formatRange(detail.value.fullPeriod)})`,
      );
      break;
    case "minimumTrueUp":
      details.push(`minimum commitment ${money(detail.value.minimumCommitment)} against charges of ${money(detail.value.chargesTotal)}`);
      break;
    case "creditsApplied":
      for (const application of detail.value.applications) details.push(`grant ${application.creditGrantId}: ${money(application.amount)}`);
      break;
    case "adjustment":
      details.push(`adjusts ${detail.value.originalInvoiceId} line ${detail.value.originalLineId}: ${detail.value.reason}`);
      if (detail.value.repricedCharge) details.push(...usageBreakdown(detail.value.repricedCharge));
      break;
    default:
      break;
  }
  return details;
}
