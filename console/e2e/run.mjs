// End-to-end test of the console in a real browser (Debian's Chromium driven
// by playwright-core) against a `tally dev --demo` this script starts on free
// loopback ports with its own data directory, and stops by pid.
//
//   npm run test:e2e            (after npm run build; TALLY_BIN names the binary,
//                                CHROMIUM_PATH the browser)
//
// It signs in, opens a customer and its month-end invoice, checks every line
// and total against `tally invoices show --output json` to the cent, issues a
// credit note and sees it, then opens the portal with a customer token and
// fails to read another customer. Screenshots go to test-output/.
// Every wait is on a condition with a generous bound: never a fixed sleep.

import { spawn, spawnSync, execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const consoleDir = path.resolve(here, "..");
const repo = path.resolve(consoleDir, "..");
const output = path.join(consoleDir, "test-output");
const BOUND = Number(process.env.E2E_BOUND_MS ?? 180_000);

function tallyBinary() {
  const candidates = [
    process.env.TALLY_BIN,
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, "debug", "tally"),
    path.join(process.env.HOME ?? "", ".cache", "tally-target", "debug", "tally"),
    path.join(repo, "target", "debug", "tally"),
  ].filter(Boolean);
  const found = candidates.find((candidate) => existsSync(candidate));
  if (!found) throw new Error(`no tally binary (looked at ${candidates.join(", ")}): cargo build -p tally-cli --bin tally, or set TALLY_BIN`);
  return found;
}

function chromiumBinary() {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium-headless-shell", "/usr/bin/chromium"].filter(Boolean);
  const found = candidates.find((candidate) => existsSync(candidate));
  if (!found) throw new Error("no Chromium: apt-get update && apt-get install -y chromium-headless-shell (or set CHROMIUM_PATH)");
  return found;
}

/** Resolves when `text` (a RegExp) matches the output so far; rejects if the process ends first. */
function waitForOutput(child, state, pattern, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; output:\n${state.out}`)), BOUND);
    const check = () => {
      const match = pattern.exec(state.out);
      if (match) {
        clearTimeout(timer);
        child.stdout.off("data", check);
        child.off("exit", ended);
        resolve(match);
      }
    };
    const ended = (code) => {
      clearTimeout(timer);
      reject(new Error(`tally dev exited (${code}) before ${what}; output:\n${state.out}`));
    };
    child.stdout.on("data", check);
    child.on("exit", ended);
    check();
  });
}

async function startTally(tally, dataDir) {
  // Port 0 everywhere: the OS picks free ports; the banner says which.
  const child = spawn(
    tally,
    ["dev", "--demo", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--webhook-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"],
    {
      cwd: repo,
      env: {
        ...process.env,
        TALLY_CLOCK__START: "2026-11-01T00:00:00Z",
        TALLY_CONSOLE_DIR: path.join(consoleDir, "out"),
        // A new portal token is known to the services within a second.
        TALLY_AUTH__REFRESH_INTERVAL_SECONDS: "1",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const state = { out: "" };
  child.stdout.on("data", (chunk) => (state.out += chunk));
  child.stderr.on("data", (chunk) => (state.out += chunk));
  const [, grpc] = await waitForOutput(child, state, /gRPC \(all services\)\s+http:\/\/(\S+)/, "the banner");
  const [, consoleUrl] = await waitForOutput(child, state, /console\s+(http:\/\/\S+?)\/\s/, "the console URL");
  const [, apiKey] = await waitForOutput(child, state, /API key \(admin\)\s+(tally_[0-9a-f]+)/, "the admin key");
  const [, databaseUrl] = await waitForOutput(child, state, /PostgreSQL\s+(postgres:\/\/\S+)/, "the database URL");
  await waitForOutput(child, state, /demo {2}done/, "the demo to finish");
  return { child, state, grpc, consoleUrl, apiKey, databaseUrl };
}

/** Polls `condition` (every 250 ms, within BOUND) until it holds. */
async function until(condition, what) {
  const deadline = Date.now() + BOUND;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  await exited;
  clearTimeout(timer);
}

/** The CLI's amounts: "249.50" + "USD" → "249.50 USD" as the console prints them (grouped). */
function consoleMoney(money) {
  const [whole, fraction = ""] = money.amount.replace(/^-/, "").split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${money.amount.startsWith("-") ? "-" : ""}${grouped}${fraction ? `.${fraction.padEnd(2, "0")}` : ".00"} ${money.currency}`;
}

async function main() {
  const tally = tallyBinary();
  const executablePath = chromiumBinary();
  if (!existsSync(path.join(consoleDir, "out", "index.html"))) throw new Error("console/out is not built: npm run build");
  rmSync(output, { recursive: true, force: true });
  mkdirSync(output, { recursive: true });
  const dataDir = mkdtempSync(path.join(tmpdir(), "tally-console-e2e-"));
  // The private PostgreSQL runs as the postgres user, which must reach its directory.
  chmodSync(dataDir, 0o755);
  const tallyDev = await startTally(tally, dataDir);
  const cliEnv = { ...process.env, TALLY_ADDRESS: `http://${tallyDev.grpc}`, TALLY_API_KEY: tallyDev.apiKey, DATABASE_URL: tallyDev.databaseUrl };
  const cli = (...args) => execFileSync(tally, args, { env: cliEnv, encoding: "utf8" });

  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(BOUND);
    const base = tallyDev.consoleUrl;

    // Sign in.
    await page.goto(`${base}/`);
    await page.waitForURL(/\/sign-in\/$/);
    await page.fill("input[name=apiKey]", tallyDev.apiKey);
    await page.click("button[type=submit]");
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.getByTestId("billed-vs-collected").waitFor();
    await page.screenshot({ path: path.join(output, "overview.png"), fullPage: true });
    console.log("ok: signed in, overview shown");

    // A customer: Globex Labs (moved from Starter to Pro mid-month).
    await page.click("text=Customers");
    await page.getByRole("link", { name: "Globex Labs" }).click();
    await page.getByTestId("invoices").waitFor();
    await page.getByTestId("live-cost").waitFor();
    await page.screenshot({ path: path.join(output, "customer.png"), fullPage: true });
    const customerId = new URL(page.url()).searchParams.get("id");
    console.log(`ok: customer ${customerId} shown`);

    // First contentful paint of the customer page, loaded afresh (the issue's budget: 1 s):
    // the best of three loads, so a moment of a loaded CI machine's contention is not a failure.
    const paints = [];
    for (let load = 0; load < 3; load += 1) {
      await page.goto(page.url());
      await page.getByTestId("invoices").waitFor();
      paints.push(await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null));
    }
    assert.ok(paints.every((paint) => paint !== null), "the browser reports a first contentful paint");
    const fcp = Math.min(...paints);
    const budget = Number(process.env.E2E_FCP_BUDGET_MS ?? 1000);
    assert.ok(fcp < budget, `first contentful paint of the customer page ${fcp.toFixed(0)} ms, over ${budget} ms`);
    console.log(`ok: customer page first contentful paint ${fcp.toFixed(0)} ms, best of ${paints.map((paint) => paint.toFixed(0)).join(", ")} (budget ${budget} ms)`);

    // Its month-end invoice, against the CLI, to the cent.
    const listed = (text, field) => {
      const answer = JSON.parse(text);
      return Array.isArray(answer) ? answer : answer[field];
    };
    const invoices = listed(cli("invoices", "list", "--customer", customerId, "--output", "json"), "invoices");
    // The latest number: the month's usage and next month's fees.
    const monthEnd = [...invoices].sort((a, b) => b.number.localeCompare(a.number))[0];
    const showJson = () => {
      const answer = JSON.parse(cli("invoices", "show", monthEnd.id, "--output", "json"));
      return answer.invoice ?? answer;
    };
    const shown = showJson();
    await page.getByRole("link", { name: shown.number }).click();
    await page.getByTestId("invoice-lines").waitFor();
    const amounts = await page.getByTestId("line-amount").allTextContents();
    assert.deepEqual(amounts, shown.lines.map((line) => consoleMoney(line.amount)), "every line's amount as the CLI prints it");
    assert.equal(await page.getByTestId("total-total").textContent(), consoleMoney(shown.total));
    assert.equal(await page.getByTestId("total-amount-due").textContent(), consoleMoney(shown.amountDue));
    for (const line of shown.lines) {
      await page.locator(`[data-line-id="${line.id}"] tr.explanation`).first().waitFor();
    }
    await page.screenshot({ path: path.join(output, "invoice.png"), fullPage: true });
    console.log(`ok: invoice ${shown.number}: ${amounts.length} lines and totals equal the CLI's`);

    // A credit note of 1.00 appears on the invoice.
    await page.fill("input[name=creditAmount]", "1.00");
    await page.fill("input[name=creditMemo]", "console e2e");
    await page.click("text=Issue credit note");
    await page.getByTestId("credit-notes").getByText("console e2e").waitFor();
    await page.getByTestId("total-credited").getByText(consoleMoney({ amount: "1.00", currency: shown.currency })).waitFor();
    assert.equal(showJson().amountCredited.amount, "1.00", "the CLI sees the credit note too");
    await page.screenshot({ path: path.join(output, "invoice-credited.png"), fullPage: true });
    console.log("ok: credit note issued and shown");

    // Usage operations: an event dated 2099 is rejected by ingest and shown under its rule.
    const bad = path.join(dataDir, "future.jsonl");
    const future = { id: "e2e-future-1", customerId, eventType: "llm_tokens", timestamp: "2099-01-01T00:00:00Z", properties: { tokens: "5" } };
    writeFileSync(bad, `${JSON.stringify(future)}\n`);
    spawnSync(tally, ["events", "send", "--file", bad], { env: cliEnv, encoding: "utf8" });
    await until(() => cli("rejected", "list").includes("e2e-future-1"), "the rejection listed by `tally rejected list`");
    await page.click("text=Usage operations");
    await page.locator('section[data-rule="too_far_in_future"]').getByText("e2e-future-1").waitFor();
    await page.screenshot({ path: path.join(output, "usage.png"), fullPage: true });
    console.log("ok: a rejected event shown under its rule on the usage page");

    // The portal, with a token for this customer only.
    const link = cli("portal", "link", "--customer", customerId, "--ttl", "1h", "--console-url", base).trim();
    const token = new URL(link).hash.replace("#token=", "");
    const asPortal = (customer) =>
      spawnSync(tally, ["customers", "show", customer, "--api-key", token], { env: cliEnv, encoding: "utf8" });
    await until(() => asPortal(customerId).status === 0, "the services to know the new portal token");
    const other = listed(cli("customers", "list", "--output", "json"), "customers").find((customer) => customer.id !== customerId);
    const refused = asPortal(other.id);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stdout + refused.stderr, /PermissionDenied|PERMISSION_DENIED|permission denied/i, "over gRPC too");
    const portal = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    portal.setDefaultTimeout(BOUND);
    await portal.goto(link);
    await portal.getByTestId("invoices").waitFor();
    await portal.getByText("Globex Labs").first().waitFor();
    assert.ok(!portal.url().includes("token="), "the token leaves the address bar");
    await portal.screenshot({ path: path.join(output, "portal.png"), fullPage: true });
    await portal.goto(`${base}/portal/?customer=${other.id}`);
    await portal.getByRole("alert").getByText(/PermissionDenied/).waitFor();
    await portal.screenshot({ path: path.join(output, "portal-other-customer.png"), fullPage: true });
    console.log(`ok: the portal reads ${customerId} and is refused ${other.id}`);
  } catch (error) {
    for (const [index, open] of browser.contexts().flatMap((context) => context.pages()).entries()) {
      await open.screenshot({ path: path.join(output, `failure-${index}.png`), fullPage: true }).catch(() => {});
    }
    console.error(`tally dev output:\n${tallyDev.state.out.slice(-4000)}`);
    throw error;
  } finally {
    await browser.close();
    await stop(tallyDev.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(
  () => console.log("console e2e: passed"),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
