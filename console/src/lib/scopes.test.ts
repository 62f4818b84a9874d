import { describe, expect, it } from "vitest";
import { allows, scopeList } from "./scopes";

describe("allows", () => {
  it("admin implies every scope", () => {
    for (const scope of ["ingest", "read", "write", "admin"] as const) expect(allows(["admin"], scope)).toBe(true);
  });
  it("write implies read, not admin or ingest", () => {
    expect(allows(["write"], "read")).toBe(true);
    expect(allows(["write"], "write")).toBe(true);
    expect(allows(["write"], "admin")).toBe(false);
    expect(allows(["write"], "ingest")).toBe(false);
  });
  it("read is read only", () => {
    expect(allows(["read"], "read")).toBe(true);
    expect(allows(["read"], "write")).toBe(false);
    expect(allows(["read"], "admin")).toBe(false);
    expect(allows(["ingest"], "read")).toBe(false);
    expect(allows([], "read")).toBe(false);
  });
  it("lists scopes", () => {
    expect(scopeList(["read", "write"])).toBe("read, write");
    expect(scopeList([])).toBe("no scopes");
  });
});
