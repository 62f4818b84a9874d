import { describe, expect, it } from "vitest";
import { FIRST_PAGE, collectPages, currentToken, hasNext, hasPrevious, next, pageLabel, previous, withNextToken } from "./paging";

describe("page state", () => {
  it("walks forward and back with the tokens it has seen", () => {
    let state = withNextToken(FIRST_PAGE, "t1");
    expect(currentToken(state)).toBe("");
    expect(hasNext(state)).toBe(true);
    expect(hasPrevious(state)).toBe(false);
    state = next(state);
    expect(currentToken(state)).toBe("t1");
    state = withNextToken(state, "");
    expect(hasNext(state)).toBe(false);
    expect(pageLabel(state, true)).toBe("Page 2 of 2");
    expect(next(state)).toBe(state);
    state = previous(state);
    expect(currentToken(state)).toBe("");
    expect(hasNext(state)).toBe(true);
    expect(pageLabel(state, true)).toBe("Page 1");
  });
  it("forgets later tokens when a page answers differently", () => {
    const state = withNextToken(withNextToken(next(withNextToken(FIRST_PAGE, "a")), "b"), "c");
    expect(state.tokens).toEqual(["", "a", "c"]);
  });
});

describe("collectPages", () => {
  it("follows tokens until the last page", async () => {
    const pages: Record<string, { items: number[]; nextPageToken: string }> = {
      "": { items: [1, 2], nextPageToken: "p2" },
      p2: { items: [3], nextPageToken: "" },
    };
    const seen: string[] = [];
    const result = await collectPages(async (token) => {
      seen.push(token);
      return pages[token];
    }, 10);
    expect(result).toEqual({ items: [1, 2, 3], truncated: false });
    expect(seen).toEqual(["", "p2"]);
  });
  it("stops at the bound and says so", async () => {
    const result = await collectPages(async (token) => ({ items: [token], nextPageToken: `${token}x` }), 3);
    expect(result).toEqual({ items: ["", "x", "xx"], truncated: true });
  });
});
