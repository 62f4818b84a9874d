// Clients of the services over gRPC-web (Connect-Web's transport), with the
// API key sent as `authorization: Bearer <key>` — what crates/runtime/src/auth.rs reads.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";

import { apiKey } from "./session";

/** Where the services are: `/config.json`'s `apiUrl` (tally dev writes it), else this page's origin. */
let apiUrl: Promise<string> | null = null;

export function serviceUrl(): Promise<string> {
  apiUrl ??= fetch("/config.json", { cache: "no-store" })
    .then((response) => (response.ok ? response.json() : {}))
    .then((config: { apiUrl?: string }) => config.apiUrl || window.location.origin)
    .catch(() => window.location.origin);
  return apiUrl;
}

function bearer(key: () => string | null): Interceptor {
  return (next) => async (request) => {
    const value = key();
    if (value) request.header.set("authorization", `Bearer ${value}`);
    return next(request);
  };
}

/** A client of `service` signed with the console's key (or `key`, e.g. the portal token). */
export async function client<T extends DescService>(service: T, key: () => string | null = apiKey): Promise<Client<T>> {
  const transport = createGrpcWebTransport({
    baseUrl: await serviceUrl(),
    interceptors: [bearer(key)],
  });
  return createClient(service, transport);
}

/** What failed and what to do, from a failed call. */
export function describeError(what: string, error: unknown): string {
  const failure = ConnectError.from(error);
  const hint: Partial<Record<Code, string>> = {
    [Code.Unauthenticated]: "sign in again with a valid API key",
    [Code.PermissionDenied]: "this key lacks the scope (or customer) this needs",
    [Code.Unavailable]: "is Tally running, and does grpc.cors_allowed_origins admit this page?",
    [Code.NotFound]: "check the id",
    [Code.Unimplemented]: "this service is not running here",
  };
  const advice = hint[failure.code];
  return `${what} failed: ${Code[failure.code]} — ${failure.rawMessage}${advice ? ` (${advice})` : ""}`;
}

export function isCode(error: unknown, code: Code): boolean {
  return ConnectError.from(error).code === code;
}
