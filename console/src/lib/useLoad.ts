"use client";

import { useCallback, useEffect, useState, useSyncExternalStore } from "react";

/** The state of one round of calls: loading, failed (with what failed), or loaded. */
export type Load<T> = { state: "loading" } | { state: "failed"; message: string } | { state: "loaded"; value: T };

/**
 * Runs `load` when `deps` change (and on `reload()`); `load` throws an
 * Error whose message says what failed (see describeError).
 */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): [Load<T>, () => void] {
  const [result, setResult] = useState<Load<T>>({ state: "loading" });
  const [round, setRound] = useState(0);
  const reload = useCallback(() => setRound((value) => value + 1), []);
  useEffect(() => {
    let current = true;
    load().then(
      (value) => current && setResult({ state: "loaded", value }),
      (error: unknown) =>
        current && setResult({ state: "failed", message: error instanceof Error ? error.message : String(error) }),
    );
    return () => {
      current = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, round]);
  return [result, reload];
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
