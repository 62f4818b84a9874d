"use client";

import { Code } from "@connectrpc/connect";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";

import { BarChart } from "@/components/BarChart";
import { Loaded } from "@/components/ui";
import { client, isCode } from "@/lib/client";
import { dayKey } from "@/lib/chart";
import { formatRange } from "@/lib/format";
import { step, useLoad } from "@/lib/useLoad";
import type { TimeRange } from "@/gen/tally/common/v1/common_pb";
import { RatingService } from "@/gen/tally/rating/v1/rating_pb";

const DAY_MS = 86_400_000;

/**
 * Usage per meter per day over the open period (rating's GetUsage with
 * one-day buckets; every accepted event, rated or not), a chart and a table
 * per meter, and the period's total from the same RPC without buckets. One
 * round: every meter's two calls at once. Quantities stay decimal strings.
 */
export function CustomerUsage({ customerId, meters, period }: { customerId: string; meters: string[]; period: TimeRange | undefined }) {
  const key = JSON.stringify([customerId, meters, period?.startTime?.seconds.toString(), period?.endTime?.seconds.toString()]);
  const [load, reload] = useLoad(async () => {
    if (!period?.startTime || !period.endTime || meters.length === 0) return [];
    const rating = await client(RatingService);
    return Promise.all(
      meters.map(async (meterCode) => {
        const ask = (bucketed: boolean) =>
          rating
            .getUsage({ customerId, meterCode, timeRange: period, bucketSize: bucketed ? durationFromMs(DAY_MS) : undefined })
            .catch((error: unknown) => {
              // A meter gone from the catalog since it was billed: nothing to chart.
              if (isCode(error, Code.NotFound)) return { values: [] };
              throw error;
            });
        const [daily, total] = await Promise.all([
          step(`Reading ${meterCode} usage per day`, ask(true)),
          step(`Reading ${meterCode} usage over the period`, ask(false)),
        ]);
        const days = daily.values
          .filter((value) => Object.keys(value.group).length === 0)
          .map((value) => ({
            day: value.timeRange?.startTime ? dayKey(timestampDate(value.timeRange.startTime)) : "",
            quantity: value.quantity?.value ?? "0",
            events: value.eventCount,
          }));
        const whole = total.values[0];
        return { meterCode, days, quantity: whole?.quantity?.value ?? "0", events: whole?.eventCount ?? 0n };
      }),
    );
  }, [key]);

  return (
    <>
      <h2>Usage per meter per day</h2>
      <p className="notice">Over the open period {formatRange(period)}: every accepted event, rated or not.</p>
      <Loaded load={load} what="usage" retry={reload}>
        {(usage) =>
          usage.length === 0 ? (
            <p className="notice" data-testid="no-usage">
              No metered charge in an open period.
            </p>
          ) : (
            usage.map(({ meterCode, days, quantity, events }) => (
              <section
                key={meterCode}
                data-testid="meter-usage"
                data-meter={meterCode}
                data-from={period?.startTime ? timestampDate(period.startTime).toISOString() : ""}
                data-to={period?.endTime ? timestampDate(period.endTime).toISOString() : ""}
              >
                <h3>{meterCode}</h3>
                <BarChart
                  testId={`usage-chart-${meterCode}`}
                  title={`${meterCode} per day`}
                  bars={days.map(({ day, quantity: value }) => ({ label: day.slice(5), title: day, value }))}
                  format={(value) => value}
                />
                <table data-testid={`usage-${meterCode}`}>
                  <thead>
                    <tr>
                      <th>Day (UTC)</th>
                      <th className="amount">Quantity</th>
                      <th className="amount">Events</th>
                    </tr>
                  </thead>
                  <tbody>
                    {days
                      .filter((day) => day.events > 0n)
                      .map((day) => (
                        <tr key={day.day} data-day={day.day}>
                          <td>{day.day}</td>
                          <td className="amount">{day.quantity}</td>
                          <td className="amount" data-testid="day-events">
                            {day.events.toString()}
                          </td>
                        </tr>
                      ))}
                    <tr>
                      <td>
                        <strong>Period</strong>
                      </td>
                      <td className="amount" data-testid="period-quantity">
                        <strong>{quantity}</strong>
                      </td>
                      <td className="amount" data-testid="period-events">
                        <strong>{events.toString()}</strong>
                      </td>
                    </tr>
                  </tbody>
                </table>
              </section>
            ))
          )
        }
      </Loaded>
    </>
  );
}
