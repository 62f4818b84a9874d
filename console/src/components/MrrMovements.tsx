"use client";

import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";

import { BarChart } from "@/components/BarChart";
import { Loaded } from "@/components/ui";
import { client } from "@/lib/client";
import { lastMonths, monthKey, monthStart } from "@/lib/chart";
import { addDecimals, formatMoney, formatMoneyValue } from "@/lib/money";
import { step, useLoad } from "@/lib/useLoad";
import { ClockService } from "@/gen/tally/clock/v1/clock_pb";
import { AnalyticsService, MovementKind, type MrrMovement } from "@/gen/tally/finance/v1/finance_pb";

const MONTHS = 12;
const CURRENCY = "USD";

const KINDS: Array<[string, MovementKind]> = [
  ["new", MovementKind.NEW],
  ["expansion", MovementKind.EXPANSION],
  ["contraction", MovementKind.CONTRACTION],
  ["churn", MovementKind.CHURN],
  ["reactivation", MovementKind.REACTIVATION],
];

/** Per month: the exact sum of each kind's changes and the net change. */
export function movementsByMonth(months: string[], movements: MrrMovement[]) {
  return months.map((month) => {
    const inMonth = movements.filter((movement) => movement.occurredAt && monthKey(timestampDate(movement.occurredAt)) === month);
    const byKind = Object.fromEntries(
      KINDS.map(([name, kind]) => [name, addDecimals(["0", ...inMonth.filter((m) => m.kind === kind).map((m) => m.change?.amount ?? "0")])]),
    );
    return { month, byKind, net: addDecimals(["0", ...inMonth.map((m) => m.change?.amount ?? "0")]), count: inMonth.length };
  });
}

/**
 * MRR movements of the last twelve months (finance's ListMrrMovements over
 * one range, summed per month here, exactly), as a chart of the net change
 * and a table per kind. The months end with the service clock's (an admin
 * key reads it; another key uses this browser's clock).
 */
export function MrrMovements() {
  const [load, reload] = useLoad(async () => {
    const [clock, analytics] = await Promise.all([client(ClockService), client(AnalyticsService)]);
    const now = await clock.getTime({}).then(
      (response) => (response.now ? timestampDate(response.now) : new Date()),
      () => new Date(),
    );
    const from = monthStart(now, -(MONTHS - 1));
    const to = monthStart(now, 1);
    const response = await step(
      "Listing MRR movements",
      analytics.listMrrMovements({ currency: CURRENCY, range: { startTime: timestampFromDate(from), endTime: timestampFromDate(to) } }),
    );
    return { response, from, to, months: movementsByMonth(lastMonths(now, MONTHS), response.movements) };
  }, []);
  return (
    <Loaded load={load} what="MRR movements" retry={reload}>
      {({ response, from, to, months }) => (
        <section data-testid="mrr-movements" data-from={from.toISOString()} data-to={to.toISOString()}>
          <BarChart
            testId="mrr-chart"
            title={`Net MRR change per month (${CURRENCY})`}
            bars={months.map(({ month, net }) => ({ label: month, value: net }))}
            format={(value) => formatMoney(value, CURRENCY)}
          />
          <table>
            <thead>
              <tr>
                <th>Month</th>
                {KINDS.map(([name]) => (
                  <th key={name} className="amount">
                    {name}
                  </th>
                ))}
                <th className="amount">net</th>
              </tr>
            </thead>
            <tbody>
              {months
                .filter(({ count }) => count > 0)
                .map(({ month, byKind, net }) => (
                  <tr key={month} data-month={month}>
                    <td>{month}</td>
                    {KINDS.map(([name]) => (
                      <td key={name} className="amount">
                        {formatMoney(byKind[name], CURRENCY)}
                      </td>
                    ))}
                    <td className="amount">{formatMoney(net, CURRENCY)}</td>
                  </tr>
                ))}
              <tr data-testid="movement-totals">
                <td>
                  <strong>Total</strong>
                </td>
                <td className="amount" data-testid="movement-new">{formatMoneyValue(response.newMrr)}</td>
                <td className="amount" data-testid="movement-expansion">{formatMoneyValue(response.expansionMrr)}</td>
                <td className="amount" data-testid="movement-contraction">{formatMoneyValue(response.contractionMrr)}</td>
                <td className="amount" data-testid="movement-churn">{formatMoneyValue(response.churnedMrr)}</td>
                <td className="amount" data-testid="movement-reactivation">{formatMoneyValue(response.reactivationMrr)}</td>
                <td className="amount" data-testid="movement-ending">
                  {formatMoneyValue(response.startingMrr)} → {formatMoneyValue(response.endingMrr)}
                </td>
              </tr>
            </tbody>
          </table>
        </section>
      )}
    </Loaded>
  );
}
