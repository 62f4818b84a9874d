"use client";

import { Loaded, Shell } from "@/components/ui";
import { client } from "@/lib/client";
import { formatTime } from "@/lib/format";
import { collectPages } from "@/lib/paging";
import { step, useLoad } from "@/lib/useLoad";
import { IngestService, RejectedEventState, type RejectedEvent } from "@/gen/tally/ingest/v1/ingest_pb";

const MAX_PAGES = 10;

/** Open rejected events grouped by the first rule they broke. */
export default function UsagePage() {
  const [load, reload] = useLoad(async () => {
    const ingest = await client(IngestService);
    const rejected = await step(
      "Listing rejected events",
      collectPages(async (pageToken) => {
        const page = await ingest.listRejectedEvents({ state: RejectedEventState.OPEN, pageSize: 500, pageToken });
        return { items: page.rejectedEvents, nextPageToken: page.nextPageToken };
      }, MAX_PAGES),
    );
    const byRule = new Map<string, RejectedEvent[]>();
    for (const event of rejected.items) {
      const rule = event.rejection?.violations[0]?.rule || "unknown";
      byRule.set(rule, [...(byRule.get(rule) ?? []), event]);
    }
    return { byRule: [...byRule.entries()].sort(([a], [b]) => a.localeCompare(b)), truncated: rejected.truncated, count: rejected.items.length };
  }, []);

  return (
    <Shell title="Usage operations">
      <Loaded load={load} what="rejected events" retry={reload}>
        {({ byRule, truncated, count }) => (
          <>
            <p className="notice">
              {count} open rejected events{truncated ? " (the first pages: more exist)" : ""}. Replay after a fix with{" "}
              <code>tally rejected replay --rule RULE</code>.
            </p>
            {byRule.length === 0 && <p className="notice">No open rejected events.</p>}
            {byRule.map(([rule, events]) => (
              <section key={rule} data-rule={rule}>
                <h2>
                  {rule} ({events.length})
                </h2>
                <table>
                  <thead>
                    <tr>
                      <th>Rejection</th>
                      <th>Event</th>
                      <th>Customer</th>
                      <th>Violations</th>
                      <th>Rejected</th>
                    </tr>
                  </thead>
                  <tbody>
                    {events.slice(0, 100).map((event) => (
                      <tr key={event.rejection?.rejectionId}>
                        <td>
                          <code>{event.rejection?.rejectionId}</code>
                        </td>
                        <td>{event.rejection?.event?.id}</td>
                        <td>{event.rejection?.event?.customerId}</td>
                        <td>{event.rejection?.violations.map((violation) => `${violation.field}: ${violation.description}`).join("; ")}</td>
                        <td>{formatTime(event.rejection?.rejectedAt)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </section>
            ))}
          </>
        )}
      </Loaded>
    </Shell>
  );
}
