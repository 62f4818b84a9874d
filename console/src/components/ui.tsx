"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, type ReactNode } from "react";

import { hasNext, hasPrevious, next, pageLabel, previous, type PageState } from "@/lib/paging";
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

const LINKS = [
  ["/", "Overview"],
  ["/customers/", "Customers"],
  ["/invoices/", "Invoices"],
  ["/usage/", "Usage operations"],
] as const;

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
        <nav>
          {LINKS.map(([href, label]) => (
            <Link key={href} href={href}>
              {label}
            </Link>
          ))}
        </nav>
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
