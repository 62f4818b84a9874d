// The API key lives in sessionStorage only: gone when the tab closes, never
// in a URL, a cookie or a log. The portal token likewise, under its own name.

const KEY = "tally.apiKey";
const PORTAL = "tally.portalToken";

function storage(): Storage | null {
  return typeof window === "undefined" ? null : window.sessionStorage;
}

export function apiKey(): string | null {
  return storage()?.getItem(KEY) ?? null;
}

export function signIn(key: string): void {
  storage()?.setItem(KEY, key.trim());
}

export function signOut(): void {
  storage()?.removeItem(KEY);
}

export function portalToken(): string | null {
  return storage()?.getItem(PORTAL) ?? null;
}

export function setPortalToken(token: string): void {
  storage()?.setItem(PORTAL, token.trim());
}
