"use client";

import { useState } from "react";

import { Failure, Loaded, Shell } from "@/components/ui";
import { may, useCaller } from "@/lib/caller";
import { client, describeError } from "@/lib/client";
import { enumName, formatTime } from "@/lib/format";
import { collectPages } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import { EventOutcome, IngestService, RejectedEventState, type EventResult, type RejectedEvent } from "@/gen/tally/ingest/v1/ingest_pb";

const MAX_PAGES = 10;

/** Seconds of a protobuf Duration as "12.5 s" (geometry-free: a display of the wire value). */
function seconds(duration: { seconds: bigint; nanos: number } | undefined): string {
  if (!duration) return "0 s";
  const fraction = duration.nanos === 0 ? "" : `.${String(duration.nanos).padStart(9, "0").replace(/0+$/, "")}`;
  return `${duration.seconds.toString()}${fraction} s`;
}

/**
 * Usage operations: ingest's lag and counters (GetIngestStats), and open
 * rejected events grouped by the first rule they broke, each replayable
 * (ReplayRejectedEvents, `write`) with its verdict shown.
 */
export default function UsagePage() {
  const [load, reload] = useLoad(async () => {
    const ingest = await client(IngestService);
    const [rejected, stats] = await Promise.all([
      step(
        "Listing rejected events",
        collectPages(async (pageToken) => {
          const page = await ingest.listRejectedEvents({ state: RejectedEventState.OPEN, pageSize: 500, pageToken });
          return { items: page.rejectedEvents, nextPageToken: page.nextPageToken };
        }, MAX_PAGES),
      ),
      step("Reading ingest's counters and lag", ingest.getIngestStats({})),
    ]);
    const byRule = new Map<string, RejectedEvent[]>();
    for (const event of rejected.items) {
      const rule = event.rejection?.violations[0]?.rule || "unknown";
      byRule.set(rule, [...(byRule.get(rule) ?? []), event]);
    }
    return { byRule: [...byRule.entries()].sort(([a], [b]) => a.localeCompare(b)), truncated: rejected.truncated, count: rejected.items.length, stats };
  }, []);
  const caller = useCaller();
  const canReplay = may(caller, "write");
  const [verdicts, setVerdicts] = useState<Record<string, EventResult | string>>({});

  async function replay(rejectionId: string) {
    try {
      const ingest = await client(IngestService);
      const answer = await ingest.replayRejectedEvents({ rejectionIds: [rejectionId] });
      setVerdicts((known) => ({ ...known, [rejectionId]: answer.results[0] ?? "no result" }));
    } catch (error) {
      setVerdicts((known) => ({ ...known, [rejectionId]: describeError(`Replaying ${rejectionId}`, error) }));
    }
  }

  return (
    <Shell title="Usage operations">
      <Loaded load={load} what="rejected events and ingest's lag" retry={reload}>
        {({ byRule, truncated, count, stats }) => (
          <>
            <h2>Ingest and rating lag</h2>
            <table data-testid="ingest-lag">
              <tbody>
                <tr>
                  <th>Relay lag (oldest committed event not yet on usage-accepted)</th>
                  <td className="amount" data-testid="relay-lag">
                    {seconds(stats.relayLag)}
                  </td>
                </tr>
                <tr>
                  <th>Event log high-water sequence number</th>
                  <td className="amount" data-testid="log-high-water">
                    {stats.logHighWaterSequenceNumber.toString()}
                  </td>
                </tr>
                <tr>
                  <th>Published to rating (usage-accepted) up to</th>
                  <td className="amount" data-testid="published">
                    {stats.publishedSequenceNumber.toString()}
                  </td>
                </tr>
                <tr>
                  <th>Events behind (high-water − published)</th>
                  <td className="amount" data-testid="events-behind">
                    {(stats.logHighWaterSequenceNumber - stats.publishedSequenceNumber).toString()}
                  </td>
                </tr>
                <tr>
                  <th>
                    Since {formatTime(stats.startedAt)}: accepted / duplicate / conflict / dead-lettered
                  </th>
                  <td className="amount">
                    {stats.accepted.toString()} / {stats.duplicate.toString()} / {stats.conflict.toString()} / {stats.deadLettered.toString()}
                  </td>
                </tr>
              </tbody>
            </table>
            <p className="notice">
              Rating&apos;s own consumer lag has no RPC yet: an event published here is rated when rating&apos;s subscription delivers it (a
              customer&apos;s live cost says up to which sequence number it has rated).
            </p>
            <h2>Rejected events</h2>
            <p className="notice">
              {count} open rejected events{truncated ? " (the first pages: more exist)" : ""}. Replay one after its cause is fixed (an opened backfill, a
              corrected configuration): it goes through validation again, and is resolved once accepted. In bulk:{" "}
              <code>tally rejected replay --rule RULE</code>.
              {!canReplay && caller.state === "loaded" && " This key may only read: replaying needs the write scope."}
            </p>
            {byRule.length === 0 && <p className="notice">No open rejected events.</p>}
            {byRule.map(([rule, events]) => (
              <section key={rule} data-rule={rule}>
                <h3>
                  {rule} ({events.length})
                </h3>
                <table>
                  <thead>
                    <tr>
                      <th>Rejection</th>
                      <th>Event</th>
                      <th>Customer</th>
                      <th>Violations</th>
                      <th>Rejected</th>
                      <th>Replay</th>
                    </tr>
                  </thead>
                  <tbody>
                    {events.slice(0, 100).map((event) => {
                      const id = event.rejection?.rejectionId ?? "";
                      return (
                        <tr key={id} data-rejection-id={id} data-event-id={event.rejection?.event?.id}>
                          <td>
                            <code>{id}</code>
                          </td>
                          <td>{event.rejection?.event?.id}</td>
                          <td>{event.rejection?.event?.customerId}</td>
                          <td>{event.rejection?.violations.map((violation) => `${violation.field}: ${violation.description}`).join("; ")}</td>
                          <td>
                            {formatTime(event.rejection?.rejectedAt)}
                            {event.replayCount > 0 && ` (replayed ${event.replayCount}×)`}
                          </td>
                          <td>
                            {canReplay && (
                              <button type="button" onClick={() => void replay(id)}>
                                Replay
                              </button>
                            )}
                            <Verdict verdict={verdicts[id]} />
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </section>
            ))}
            {Object.keys(verdicts).length > 0 && (
              <button type="button" onClick={reload}>
                Refresh the list
              </button>
            )}
          </>
        )}
      </Loaded>
    </Shell>
  );
}

function Verdict({ verdict }: { verdict: EventResult | string | undefined }) {
  if (verdict === undefined) return null;
  if (typeof verdict === "string") return <Failure message={verdict} />;
  return (
    <div data-testid="verdict" data-outcome={enumName(EventOutcome, verdict.outcome, "")}>
      <strong>{enumName(EventOutcome, verdict.outcome, "")}</strong>
      {verdict.violations.length > 0 && `: ${verdict.violations.map((violation) => `${violation.rule} (${violation.field})`).join("; ")}`}
    </div>
  );
}
