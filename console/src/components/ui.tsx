"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, type ReactNode } from "react";

import { may, useCaller } from "@/lib/caller";
import { hasNext, hasPrevious, next, pageLabel, previous, type PageState } from "@/lib/paging";
import { scopeList, type Scope } from "@/lib/scopes";
import { useBrowserValue, type Load } from "@/lib/useLoad";
import { apiKey, signOut } from "@/lib/session";

export function Loading({ what }: { what: string }) {
  return (
    <p className="loading" role="status">
      Loading {what}…
    </p>
  );
}

export function Failure({ message, retry }: { message: string; retry?: () => void }) {
  return (
    <div className="error" role="alert">
      <p>{message}</p>
      {retry && (
        <button type="button" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

/** Renders `loaded` once `load` has its value; loading and failure otherwise. */
export function Loaded<T>({ load, what, retry, children }: { load: Load<T>; what: string; retry?: () => void; children: (value: T) => ReactNode }) {
  if (load.state === "loading") return <Loading what={what} />;
  if (load.state === "failed") return <Failure message={load.message} retry={retry} />;
  return <>{children(load.value)}</>;
}

/** The navigation; a link shows when the key has the scope its page reads with. */
const LINKS: Array<[string, string, Scope]> = [
  ["/", "Overview", "read"],
  ["/customers/", "Customers", "read"],
  ["/invoices/", "Invoices", "read"],
  ["/catalog/", "Catalog", "read"],
  ["/usage/", "Usage operations", "read"],
  ["/reconciliation/", "Reconciliation", "admin"],
];

/** Every console page: the navigation, and sign-in first when there is no key. */
export function Shell({ title, children }: { title: string; children: ReactNode }) {
  const router = useRouter();
  const signedIn = useBrowserValue(() => apiKey() !== null);
  useEffect(() => {
    if (signedIn === false) router.replace("/sign-in/");
  }, [signedIn, router]);
  return (
    <>
      <header className="top">
        <strong>Tally</strong>
        {signedIn && <Navigation />}
        <button
          type="button"
          className="link"
          onClick={() => {
            signOut();
            router.push("/sign-in/");
          }}
        >
          Sign out
        </button>
      </header>
      <main>
        <h1>{title}</h1>
        {signedIn ? children : <Loading what="your session" />}
      </main>
    </>
  );
}

/** The links the key may follow, and which key it is (name and scopes). */
function Navigation() {
  const caller = useCaller();
  return (
    <>
      <nav>
        {LINKS.filter(([, , scope]) => scope === "read" || may(caller, scope)).map(([href, label]) => (
          <Link key={href} href={href}>
            {label}
          </Link>
        ))}
      </nav>
      {caller.state === "loaded" && caller.value.known && (
        <span className="caller" data-testid="caller" title={caller.value.keyId}>
          {caller.value.name || caller.value.keyId} ({scopeList(caller.value.scopes)})
        </span>
      )}
      {caller.state === "failed" && (
        <span className="caller" role="alert">
          {caller.message}
        </span>
      )}
    </>
  );
}

/** A definition list of label → value rows. */
export function Fields({ rows }: { rows: Array<[string, ReactNode]> }) {
  return (
    <dl className="fields">
      {rows.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

/** Previous / next over a paged list RPC's tokens. */
export function Pager({ page, setPage }: { page: PageState; setPage: (change: (state: PageState) => PageState) => void }) {
  return (
    <div className="pager">
      <button type="button" disabled={!hasPrevious(page)} onClick={() => setPage(previous)}>
        Previous
      </button>
      <span>{pageLabel(page, true)}</span>
      <button type="button" disabled={!hasNext(page)} onClick={() => setPage(next)}>
        Next
      </button>
    </div>
  );
}

/** A labelled select over `options` ([label, value] pairs; enum numbers or strings). */
export function Choice<V extends string | number>({
  label,
  name,
  value,
  options,
  onChange,
  disabled,
}: {
  label: string;
  name: string;
  value: V;
  options: Array<[string, V]>;
  onChange: (value: V) => void;
  disabled?: boolean;
}) {
  return (
    <label>
      {label}
      <select
        name={name}
        value={String(value)}
        disabled={disabled}
        onChange={(event) => onChange(options.find(([, option]) => String(option) === event.target.value)?.[1] ?? value)}
      >
        {options.map(([text, option]) => (
          <option key={String(option)} value={String(option)}>
            {text}
          </option>
        ))}
      </select>
    </label>
  );
}
