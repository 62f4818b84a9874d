"use client";

// The signed-in key's id, name and scopes (`tally.auth.v1.AuthService/GetCaller`),
// asked once per key and tab: pages show only the actions those scopes allow.

import { Code } from "@connectrpc/connect";

import { client, describeError, isCode } from "./client";
import { allows, type Scope } from "./scopes";
import { apiKey } from "./session";
import { useLoad, type Load } from "./useLoad";
import { AuthService } from "@/gen/tally/auth/v1/auth_pb";

export interface Caller {
  keyId: string;
  name: string;
  scopes: string[];
  /** False when the services are older than `GetCaller`: every action is shown and the services decide. */
  known: boolean;
}

let asked: { key: string; caller: Promise<Caller> } | null = null;

async function ask(): Promise<Caller> {
  const auth = await client(AuthService);
  try {
    const answer = await auth.getCaller({});
    return { keyId: answer.keyId, name: answer.name, scopes: answer.scopes, known: true };
  } catch (error) {
    if (isCode(error, Code.Unimplemented)) return { keyId: "", name: "", scopes: ["admin"], known: false };
    throw new Error(describeError("Reading this key's scopes", error));
  }
}

/** The caller, asked once for the key this tab is signed in with. */
export function loadCaller(): Promise<Caller> {
  const key = apiKey() ?? "";
  if (asked?.key !== key) {
    const caller = ask();
    // A failure is asked again next time, not remembered.
    caller.catch(() => {
      if (asked?.caller === caller) asked = null;
    });
    asked = { key, caller };
  }
  return asked.caller;
}

export function useCaller(): Load<Caller> {
  return useLoad(loadCaller, [])[0];
}

/** Whether the caller (once known) may call methods needing `scope`; false while loading or failed. */
export function may(caller: Load<Caller>, scope: Scope): boolean {
  return caller.state === "loaded" && allows(caller.value.scopes, scope);
}
