"use client";

import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";

import { Failure } from "@/components/ui";
import { client, describeError } from "@/lib/client";
import { signIn, signOut } from "@/lib/session";
import { CustomerService } from "@/gen/tally/invoicing/v1/customers_pb";

export default function SignInPage() {
  const router = useRouter();
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setChecking(true);
    setError(null);
    signIn(key);
    try {
      // One read proves the key works (and reaches the services) before any page.
      await (await client(CustomerService)).listCustomers({ pageSize: 1 });
      router.push("/");
    } catch (failure) {
      signOut();
      setError(describeError("Checking the key", failure));
      setChecking(false);
    }
  }

  return (
    <main className="signin">
      <h1>Sign in to Tally</h1>
      <p className="notice">
        Paste an API key (<code>tally keys create --name console --scope read,write</code>, or the admin key{" "}
        <code>tally dev</code> printed). It stays in this tab&apos;s session storage only.
      </p>
      <form onSubmit={submit}>
        <label>
          API key
          <input
            name="apiKey"
            type="password"
            autoComplete="off"
            value={key}
            onChange={(event) => setKey(event.target.value)}
            placeholder="tally_…"
            required
          />
        </label>
        <p>
          <button type="submit" disabled={checking}>
            {checking ? "Checking…" : "Sign in"}
          </button>
        </p>
      </form>
      {error && <Failure message={error} />}
    </main>
  );
}
