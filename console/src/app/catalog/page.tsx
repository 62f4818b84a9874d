"use client";

import { Fragment } from "react";

import { Loaded, Shell } from "@/components/ui";
import { client } from "@/lib/client";
import { enumName, formatTime } from "@/lib/format";
import { formatMoneyValue } from "@/lib/money";
import { collectPages } from "@/lib/paging";
import { describePrice } from "@/lib/price";
import { step, useLoad } from "@/lib/useLoad";
import {
  Aggregation,
  BillingInterval,
  BillingTiming,
  CatalogService,
  FilterOperator,
  PlanVersionStatus,
  type Charge,
  type Meter,
  type PlanVersion,
} from "@/gen/tally/rating/v1/catalog_pb";

/** Pages read of each list (a bound, said on the page when reached). */
const MAX_PAGES = 10;

/** Meters, and plans with every version and charge (rating's CatalogService). */
export default function CatalogPage() {
  const [load, reload] = useLoad(async () => {
    const catalog = await client(CatalogService);
    const [meters, plans] = await Promise.all([
      step(
        "Listing meters",
        collectPages(async (pageToken) => {
          const page = await catalog.listMeters({ pageSize: 200, pageToken });
          return { items: page.meters, nextPageToken: page.nextPageToken };
        }, MAX_PAGES),
      ),
      step(
        "Listing plans",
        collectPages(async (pageToken) => {
          const page = await catalog.listPlans({ pageSize: 200, pageToken });
          return { items: page.plans, nextPageToken: page.nextPageToken };
        }, MAX_PAGES),
      ),
    ]);
    // Versions are listed per plan: the one call that needs the plans first.
    const versions = await Promise.all(
      plans.items.map((plan) =>
        step(
          `Listing the versions of ${plan.code}`,
          collectPages(async (pageToken) => {
            const page = await catalog.listPlanVersions({ planId: plan.id, pageSize: 100, pageToken });
            return { items: page.planVersions, nextPageToken: page.nextPageToken };
          }, MAX_PAGES),
        ),
      ),
    );
    return {
      meters: meters.items,
      plans: plans.items.map((plan, index) => ({ plan, versions: [...versions[index].items].sort((a, b) => b.version - a.version) })),
      truncated: meters.truncated || plans.truncated || versions.some((list) => list.truncated),
    };
  }, []);

  return (
    <Shell title="Catalog">
      <Loaded load={load} what="the catalog" retry={reload}>
        {({ meters, plans, truncated }) => (
          <>
            {truncated && <p className="notice">Only the first pages are shown: the catalog is larger.</p>}
            <h2>Meters ({meters.length})</h2>
            <MeterTable meters={meters} />
            <h2>Plans ({plans.length})</h2>
            {plans.length === 0 && <p className="notice">No plans yet: `tally catalog apply -f catalog.yaml`.</p>}
            {plans.map(({ plan, versions }) => (
              <section key={plan.id} data-plan={plan.code}>
                <h3>
                  {plan.name} <code>{plan.code}</code>
                </h3>
                {plan.description && <p className="notice">{plan.description}</p>}
                {versions.map((version) => (
                  <VersionView key={version.id} version={version} latest={version.id === plan.latestPublishedVersionId} />
                ))}
              </section>
            ))}
          </>
        )}
      </Loaded>
    </Shell>
  );
}

function MeterTable({ meters }: { meters: Meter[] }) {
  if (meters.length === 0) return <p className="notice">No meters.</p>;
  return (
    <table data-testid="meters">
      <thead>
        <tr>
          <th>Code</th>
          <th>Name</th>
          <th>Aggregation</th>
          <th>Property</th>
          <th>Filters</th>
          <th>Group by</th>
          <th>Unit</th>
        </tr>
      </thead>
      <tbody>
        {meters.map((meter) => (
          <tr key={meter.id} data-meter={meter.code}>
            <td>
              <code>{meter.code}</code>
            </td>
            <td>{meter.name}</td>
            <td>{enumName(Aggregation, meter.aggregation, "")}</td>
            <td>{meter.property || "—"}</td>
            <td>
              {meter.filters.map((filter) => `${filter.property} ${enumName(FilterOperator, filter.operator, "")} ${filter.values.join(", ")}`.trim()).join("; ") ||
                "—"}
            </td>
            <td>{meter.groupBy.join(", ") || "—"}</td>
            <td>{meter.unit || "—"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function VersionView({ version, latest }: { version: PlanVersion; latest: boolean }) {
  const spec = version.spec;
  const currency = spec?.currency ?? "";
  return (
    <div className="version" data-version-id={version.id}>
      <h4>
        Version {version.version}: {enumName(PlanVersionStatus, version.status, "")}
        {latest ? " (the latest published)" : ""} <code>{version.id}</code>
      </h4>
      <p className="notice">
        {currency}, billed every {spec && spec.intervalCount > 1 ? `${spec.intervalCount} ` : ""}
        {enumName(BillingInterval, spec?.billingInterval ?? 0, "")}
        {spec && spec.intervalCount > 1 ? "s" : ""}
        {spec?.trialDays ? `, ${spec.trialDays}-day trial` : ""}
        {spec?.minimumCommitment ? `, minimum commitment ${formatMoneyValue(spec.minimumCommitment)}` : ""}
        {version.publishedAt ? `; published ${formatTime(version.publishedAt)}` : ""}
      </p>
      <table data-testid="charges">
        <thead>
          <tr>
            <th>Charge</th>
            <th>Meter</th>
            <th>Timing</th>
            <th>Price model</th>
            <th>Price</th>
            <th>Included</th>
            <th>Minimum / maximum</th>
          </tr>
        </thead>
        <tbody>
          {(spec?.charges ?? []).map((charge) => (
            <ChargeRows key={charge.key} charge={charge} currency={currency} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

function ChargeRows({ charge, currency }: { charge: Charge; currency: string }) {
  const price = describePrice(charge.price, currency);
  const bounds = [charge.minimumAmount && `min ${formatMoneyValue(charge.minimumAmount)}`, charge.maximumAmount && `max ${formatMoneyValue(charge.maximumAmount)}`]
    .filter(Boolean)
    .join(", ");
  return (
    <Fragment>
      <tr data-charge={charge.key}>
        <td>
          {charge.name} <code>{charge.key}</code>
        </td>
        <td>{charge.meterCode ? <code>{charge.meterCode}</code> : "—"}</td>
        <td>{enumName(BillingTiming, charge.billingTiming, "")}</td>
        <td>{price.model}</td>
        <td>{price.summary}</td>
        <td>{charge.includedQuantity?.value || "—"}</td>
        <td>{bounds || "—"}</td>
      </tr>
      {price.tiers.length > 0 && (
        <SubTable
          testId="tiers"
          headings={["From", "Up to", "Unit price", "Flat amount"]}
          rows={price.tiers.map((tier) => [tier.from, tier.upTo, tier.unitPrice, tier.flat])}
        />
      )}
      {price.cells.length > 0 && (
        <SubTable testId="matrix" headings={["Match", "Unit price"]} rows={price.cells.map((cell) => [cell.match, cell.unitPrice])} />
      )}
    </Fragment>
  );
}

/** A small table under a charge's row: its tiers, brackets or matrix cells (the first cell keys the row). */
function SubTable({ testId, headings, rows }: { testId: string; headings: string[]; rows: string[][] }) {
  return (
    <tr className="explanation">
      <td />
      <td colSpan={6}>
        <table className="tiers" data-testid={testId}>
          <thead>
            <tr>
              {headings.map((heading) => (
                <th key={heading}>{heading}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map((row) => (
              <tr key={row[0]}>
                {row.map((cell, index) => (
                  <td key={index}>{cell}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </td>
    </tr>
  );
}
