"use client";

import { useState, type ReactNode } from "react";

import { Choice, Failure, Loaded, Pager, Shell } from "@/components/ui";
import { may, useCaller } from "@/lib/caller";
import { client } from "@/lib/client";
import { enumName, formatRange, formatTime } from "@/lib/format";
import { stripeHref, tallyHref } from "@/lib/links";
import { formatMoneyValue } from "@/lib/money";
import { FIRST_PAGE, currentToken, withNextToken } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import {
  FindingKind,
  ReconciledObject,
  ReconciliationService,
  ReconciliationState,
  type ReconciliationReport,
} from "@/gen/tally/payments/v1/reconciliation_pb";

const PAGE_SIZE = 20;

/** Stripe reconciliation reports (the payments service) and a chosen report's findings. */
export default function ReconciliationPage() {
  const caller = useCaller();
  return (
    <Shell title="Reconciliation">
      {caller.state === "failed" ? (
        <Failure message={caller.message} />
      ) : caller.state === "loading" ? null : may(caller, "admin") ? (
        <Reports />
      ) : (
        <p className="notice" data-testid="needs-admin">
          Reconciliation reports need a key with the <code>admin</code> scope; this one has {caller.value.scopes.join(", ") || "none"}.
        </p>
      )}
    </Shell>
  );
}

function Reports() {
  const [page, setPage] = useState(FIRST_PAGE);
  const [chosen, setChosen] = useState<string | null>(null);
  const token = currentToken(page);
  const [load, reload] = useLoad(async () => {
    const reconciliation = await client(ReconciliationService);
    const response = await step("Listing reconciliation reports", reconciliation.listReconciliationReports({ pageSize: PAGE_SIZE, pageToken: token }));
    setPage((state) => withNextToken(state, response.nextPageToken));
    return response.reports;
  }, [token]);

  return (
    <Loaded load={load} what="reconciliation reports" retry={reload}>
      {(reports) => {
        const report = reports.find((candidate) => candidate.id === chosen) ?? reports[0];
        return (
          <>
            {reports.length === 0 ? (
              <p className="notice">No reconciliation reports yet: `tally reconcile --from … --to …`, or wait for the scheduled run.</p>
            ) : (
              <ReportTable reports={reports} chosen={report?.id} choose={setChosen} />
            )}
            <Pager page={page} setPage={setPage} />
            {report && <Findings key={report.id} report={report} />}
          </>
        );
      }}
    </Loaded>
  );
}

function ReportTable({ reports, chosen, choose }: { reports: ReconciliationReport[]; chosen?: string; choose: (id: string) => void }) {
  return (
    <table data-testid="reports">
      <thead>
        <tr>
          <th>Report</th>
          <th>Window</th>
          <th>State</th>
          <th>Matched</th>
          <th>Missing in Tally</th>
          <th>Missing in Stripe</th>
          <th>Amount mismatch</th>
          <th>Status mismatch</th>
          <th>Finished</th>
        </tr>
      </thead>
      <tbody>
        {reports.map((report) => (
          <tr key={report.id} data-report-id={report.id} className={report.id === chosen ? "chosen" : undefined}>
            <td>
              <button type="button" className="link" onClick={() => choose(report.id)}>
                <code>{report.id}</code>
              </button>
              {report.scheduled ? " (scheduled)" : ""}
            </td>
            <td>{formatRange(report.window)}</td>
            <td data-testid="report-state">
              {enumName(ReconciliationState, report.state, "")}
              {report.error ? `: ${report.error}` : ""}
            </td>
            <td>{String(report.summary?.matched ?? 0n)}</td>
            <td>{String(report.summary?.missingInTally ?? 0n)}</td>
            <td>{String(report.summary?.missingInStripe ?? 0n)}</td>
            <td>{String(report.summary?.amountMismatch ?? 0n)}</td>
            <td>{String(report.summary?.statusMismatch ?? 0n)}</td>
            <td>{formatTime(report.finishedAt)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const KINDS: Array<[string, FindingKind]> = [
  ["all", FindingKind.UNSPECIFIED],
  ["missing in Tally", FindingKind.MISSING_IN_TALLY],
  ["missing in Stripe", FindingKind.MISSING_IN_STRIPE],
  ["amount mismatch", FindingKind.AMOUNT_MISMATCH],
  ["status mismatch", FindingKind.STATUS_MISMATCH],
];

function linked(id: string, href: string | null, external = false): ReactNode {
  if (!id) return "—";
  if (!href) return <code>{id}</code>;
  return (
    <a href={href} {...(external ? { target: "_blank", rel: "noreferrer" } : {})}>
      <code>{id}</code>
    </a>
  );
}

/** One report's findings, filtered by kind (the RPC's filter), paged. */
function Findings({ report }: { report: ReconciliationReport }) {
  const [kind, setKind] = useState(FindingKind.UNSPECIFIED);
  const [page, setPage] = useState(FIRST_PAGE);
  const token = currentToken(page);
  const [load, reload] = useLoad(async () => {
    const reconciliation = await client(ReconciliationService);
    const response = await step(
      `Listing the findings of ${report.id}`,
      reconciliation.listReconciliationFindings({ reportId: report.id, kind, pageSize: 100, pageToken: token }),
    );
    setPage((state) => withNextToken(state, response.nextPageToken));
    return response.findings;
  }, [report.id, kind, token]);

  return (
    <section data-testid="findings-of" data-report-id={report.id}>
      <h2>
        Findings of <code>{report.id}</code>
      </h2>
      <form className="inline" onSubmit={(event) => event.preventDefault()}>
        <Choice
          label="Kind"
          name="findingKind"
          value={kind}
          options={KINDS}
          onChange={(value) => {
            setKind(value);
            setPage(FIRST_PAGE);
          }}
        />
      </form>
      <Loaded load={load} what="findings" retry={reload}>
        {(findings) =>
          findings.length === 0 ? (
            <p className="notice" data-testid="no-findings">
              No findings{kind === FindingKind.UNSPECIFIED ? "" : " of this kind"}.
            </p>
          ) : (
            <table data-testid="findings">
              <thead>
                <tr>
                  <th>Kind</th>
                  <th>Object</th>
                  <th>Tally</th>
                  <th>Stripe</th>
                  <th className="amount">Tally amount</th>
                  <th className="amount">Stripe amount</th>
                  <th>Statuses (Tally / Stripe)</th>
                  <th>Description</th>
                </tr>
              </thead>
              <tbody>
                {findings.map((finding) => (
                  <tr key={finding.id}>
                    <td>{enumName(FindingKind, finding.kind, "")}</td>
                    <td>{enumName(ReconciledObject, finding.object, "")}</td>
                    <td>{linked(finding.tallyId, tallyHref(finding.tallyId))}</td>
                    <td>{linked(finding.stripeId, stripeHref(finding.stripeId), true)}</td>
                    <td className="amount">{formatMoneyValue(finding.tallyAmount)}</td>
                    <td className="amount">{formatMoneyValue(finding.stripeAmount)}</td>
                    <td>
                      {finding.tallyStatus || "—"} / {finding.stripeStatus || "—"}
                    </td>
                    <td>{finding.description}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
      <Pager page={page} setPage={setPage} />
    </section>
  );
}
