// What an API key may do, as crates/runtime/src/auth.rs decides it: `admin`
// implies every scope and `write` implies `read`. The console hides the
// actions a key cannot take; the services refuse them anyway.

export type Scope = "ingest" | "read" | "write" | "admin";

/** Whether a key with `scopes` (as `GetCaller` names them) may call a method needing `required`. */
export function allows(scopes: readonly string[], required: Scope): boolean {
  return scopes.includes("admin") || scopes.includes(required) || (required === "read" && scopes.includes("write"));
}

/** "read, write" — the scopes as the header shows them. */
export function scopeList(scopes: readonly string[]): string {
  return scopes.length === 0 ? "no scopes" : [...scopes].join(", ");
}
