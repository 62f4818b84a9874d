"use client";

import { useCallback, useEffect, useState, useSyncExternalStore } from "react";

/** The state of one round of calls: loading, failed (with what failed), or loaded. */
export type Load<T> = { state: "loading" } | { state: "failed"; message: string } | { state: "loaded"; value: T };

/**
 * Runs `load` when `deps` change (and on `reload()`); `load` throws an
 * Error whose message says what failed (see describeError). While a new
 * round runs (other deps, a reload) the state is "loading" again: a table
 * never shows the rows of the previous filter or page as if they were the
 * answer.
 */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): [Load<T>, () => void] {
  const [round, setRound] = useState(0);
  // Which round a result belongs to: the deps (ids, tokens, filters: plain values) and the reload count.
  const current = JSON.stringify([...deps, round]);
  const [result, setResult] = useState<{ round: string; load: Load<T> } | null>(null);
  const reload = useCallback(() => setRound((value) => value + 1), []);
  useEffect(() => {
    let live = true;
    load().then(
      (value) => live && setResult({ round: current, load: { state: "loaded", value } }),
      (error: unknown) =>
        live &&
        setResult({ round: current, load: { state: "failed", message: error instanceof Error ? error.message : String(error) } }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [current]);
  return [result !== null && result.round === current ? result.load : { state: "loading" }, reload];
}

/** `promise`, its failure worded as "<what> failed: …". */
export async function step<T>(what: string, promise: Promise<T>): Promise<T> {
  const { describeError } = await import("./client");
  try {
    return await promise;
  } catch (error) {
    throw new Error(describeError(what, error));
  }
}

/**
 * The `name` query parameter of the page (static export: no dynamic routes);
 * `undefined` until the page has read it, `null` when absent.
 */
export function useQueryParam(name: string): string | null | undefined {
  return useBrowserValue(() => new URLSearchParams(window.location.search).get(name));
}

const noSubscription = () => () => {};

/** A value only the browser knows (`undefined` while prerendering); read again at each render. */
export function useBrowserValue<T>(read: () => T): T | undefined {
  return useSyncExternalStore(noSubscription, read, () => undefined);
}
