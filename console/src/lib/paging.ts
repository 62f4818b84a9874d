// Paging over the list RPCs: page tokens are opaque; the console keeps the
// tokens of the pages it has seen so "previous" needs no second request kind.

/** Where a paged table is: the token of each page seen, the current index. */
export interface PageState {
  /** tokens[i] is the page token that fetches page i ("" for the first). */
  tokens: string[];
  index: number;
}

export const FIRST_PAGE: PageState = { tokens: [""], index: 0 };

/** The token to fetch the current page with. */
export function currentToken(state: PageState): string {
  return state.tokens[state.index] ?? "";
}

/** Records the next page's token once a page arrived ("" means no next page). */
export function withNextToken(state: PageState, nextPageToken: string): PageState {
  const tokens = state.tokens.slice(0, state.index + 1);
  if (nextPageToken !== "") tokens.push(nextPageToken);
  return { tokens, index: state.index };
}

export function hasNext(state: PageState): boolean {
  return state.index + 1 < state.tokens.length;
}

export function hasPrevious(state: PageState): boolean {
  return state.index > 0;
}

export function next(state: PageState): PageState {
  return hasNext(state) ? { ...state, index: state.index + 1 } : state;
}

export function previous(state: PageState): PageState {
  return hasPrevious(state) ? { ...state, index: state.index - 1 } : state;
}

/** "Page 2" or "Page 2 of 2" once the last page is known. */
export function pageLabel(state: PageState, lastKnown: boolean): string {
  return lastKnown && !hasNext(state) ? `Page ${state.index + 1} of ${state.index + 1}` : `Page ${state.index + 1}`;
}

/**
 * Every item of a list RPC, page after page, up to `maxPages` (a bound so a
 * page never loads an unbounded table); `truncated` says whether more were left.
 */
export async function collectPages<T>(
  fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>,
  maxPages: number,
): Promise<{ items: T[]; truncated: boolean }> {
  const items: T[] = [];
  let token = "";
  for (let page = 0; page < maxPages; page += 1) {
    const result = await fetchPage(token);
    items.push(...result.items);
    if (result.nextPageToken === "") return { items, truncated: false };
    token = result.nextPageToken;
  }
  return { items, truncated: true };
}
