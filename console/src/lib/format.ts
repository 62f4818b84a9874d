// Times, enums and ranges as the CLI prints them (RFC 3339 UTC to the second).

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

export function formatTime(timestamp: Timestamp | undefined): string {
  if (!timestamp) return "—";
  return timestampDate(timestamp).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function formatRange(range: { startTime?: Timestamp; endTime?: Timestamp } | undefined): string {
  if (!range) return "—";
  return `${formatTime(range.startTime)} → ${formatTime(range.endTime)}`;
}

/** An enum value's name without its prefix, lower case, spaces for underscores. */
export function enumName(names: Record<number, string>, value: number, prefix: string): string {
  const name = names[value];
  return name === undefined ? String(value) : name.replace(prefix, "").toLowerCase().replaceAll("_", " ");
}
