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
// fails to read another customer. On the way: the overview's MRR, ARR and
// MRR movements against `tally finance mrr|movements`, a customer's usage per
// meter per day against `tally usage show`, ingest's lag, and a rejected event
// replayed (its cause unfixed: rejected again; its cause fixed: accepted). Screenshots of every page go
// to test-output/ (checked at the end; .ci/console-test prints the path).
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

/** Polls the async `check` (every 250 ms, within BOUND) until it answers true; else fails with its last answer. */
async function eventually(check) {
  const deadline = Date.now() + BOUND;
  for (;;) {
    const answer = await check();
    if (answer === true) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${answer}`);
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

/** The overview: MRR and ARR as the CLI prints them, the month's movements' totals to the cent, the charts drawn. */
async function checkOverview(page, cli) {
  const mrr = JSON.parse(cli("finance", "mrr", "--currency", "USD", "--output", "json"));
  assert.equal(await page.getByTestId("mrr").locator(".value").textContent(), consoleMoney(mrr.mrr), "MRR as the CLI prints it");
  assert.equal(await page.getByTestId("arr").locator(".value").textContent(), consoleMoney(mrr.arr), "ARR as the CLI prints it");
  const movements = page.getByTestId("mrr-movements");
  await movements.waitFor();
  const [from, to] = [await movements.getAttribute("data-from"), await movements.getAttribute("data-to")];
  const cliMovements = JSON.parse(cli("finance", "movements", "--currency", "USD", "--from", from, "--to", to, "--output", "json"));
  for (const [testId, field] of [["movement-new", "newMrr"], ["movement-expansion", "expansionMrr"], ["movement-contraction", "contractionMrr"], ["movement-churn", "churnedMrr"], ["movement-reactivation", "reactivationMrr"]]) {
    const expected = cliMovements[field] ? consoleMoney(cliMovements[field]) : "—";
    assert.equal(await page.getByTestId(testId).textContent(), expected, `${field} over ${from} → ${to}`);
  }
  assert.ok((cliMovements.movements ?? []).length > 0, "the demo has MRR movements");
  // One bar per month; the months with movements have a row each.
  assert.equal(await page.getByTestId("mrr-chart").locator("rect.bar").count(), 12, "twelve monthly bars");
  const months = new Set(cliMovements.movements.map((movement) => movement.occurredAt.slice(0, 7)));
  assert.deepEqual(
    (await movements.locator("tr[data-month]").evaluateAll((rows) => rows.map((row) => row.dataset.month))).sort(),
    [...months].sort(),
    "a row for each month with movements",
  );
  await page.getByTestId("billed-chart-USD").locator("rect.bar").nth(2).waitFor();
  const recognised = await page.getByTestId("recognised-USD").textContent();
  assert.match(recognised, /^-?[\d,]+\.\d{2,} USD$/, `recognised revenue from finance's ledger: ${recognised}`);
  console.log(`ok: overview MRR ${consoleMoney(mrr.mrr)}, ${cliMovements.movements.length} movements, recognised ${recognised}`);
}

/** The customer's usage per meter per day over the open period: totals equal `tally usage show`'s, days add up. */
async function checkCustomerUsage(page, cli, customerId, send) {
  const sections = page.getByTestId("meter-usage");
  await sections.first().waitFor();
  // Tokens on the open period's first two days: 1500 + 2500 on the first, 700 on the second.
  const tokens = page.locator('[data-testid="meter-usage"][data-meter="llm_tokens"]');
  const start = Date.parse(await tokens.getAttribute("data-from"));
  const at = (ms) => new Date(start + ms).toISOString().replace(/\.000Z$/, "Z");
  const hour = 3_600_000;
  send("open-period.jsonl", [
    { id: "e2e-usage-1", customerId, eventType: "llm_tokens", timestamp: at(hour), properties: { tokens: "1500" } },
    { id: "e2e-usage-2", customerId, eventType: "llm_tokens", timestamp: at(2 * hour), properties: { tokens: "2500" } },
    { id: "e2e-usage-3", customerId, eventType: "llm_tokens", timestamp: at(24 * hour + 300_000), properties: { tokens: "700" } },
  ]);
  await eventually(async () => {
    await page.reload();
    await tokens.getByTestId("period-events").waitFor();
    const events = await tokens.getByTestId("period-events").textContent();
    return events === "3" || `llm_tokens shows ${events} events in the open period`;
  });
  const day = (ms) => at(ms).slice(0, 10);
  assert.deepEqual(
    await tokens.locator("tbody tr[data-day]").evaluateAll((rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent))),
    [
      [day(0), "4000", "2"],
      [day(24 * hour), "700", "1"],
    ],
    "llm_tokens per day",
  );
  assert.equal(await tokens.getByTestId("period-quantity").textContent(), "4700");
  // The live cost catches up once rating has rated them (over the bus).
  await eventually(async () => {
    await page.reload();
    await page.getByTestId("live-cost").waitFor();
    const quantity = await page.locator('[data-testid="live-cost"] tr[data-charge="tokens"] [data-testid="charge-quantity"]').first().textContent();
    return quantity === "4700" || `the live cost's tokens quantity is ${quantity}`;
  });
  await sections.first().waitFor();
  const meters = await sections.evaluateAll((nodes) => nodes.map((node) => [node.dataset.meter, node.dataset.from, node.dataset.to]));
  assert.ok(meters.length > 0, "a metered charge on Globex Labs");
  for (const [meter, from, to] of meters) {
    const shown = JSON.parse(cli("usage", "show", "--customer", customerId, "--meter", meter, "--from", from, "--to", to, "--output", "json"));
    const answer = Array.isArray(shown) ? shown[0] : shown;
    const value = answer.values?.[0] ?? {};
    const section = page.locator(`[data-testid="meter-usage"][data-meter="${meter}"]`);
    assert.equal(await section.getByTestId("period-quantity").textContent(), value.quantity?.value ?? "0", `${meter}: the period's quantity`);
    const events = Number(value.eventCount ?? 0);
    assert.equal(Number(await section.getByTestId("period-events").textContent()), events, `${meter}: the period's events`);
    const days = (await section.getByTestId("day-events").allTextContents()).map(Number);
    assert.equal(days.reduce((sum, count) => sum + count, 0), events, `${meter}: the days' events add up to the period's`);
    assert.ok((await section.locator("rect.bar").count()) >= days.length, `${meter}: a bar per day`);
  }
  assert.match(await page.getByTestId("live-cost-total").textContent(), /\d USD/);
  console.log(`ok: usage per meter per day (${meters.map(([meter]) => meter).join(", ")}) equals \`tally usage show\``);
}

/** Ingest's lag: the numbers GetIngestStats gives, caught up in the end. */
async function checkLag(page) {
  await page.getByTestId("ingest-lag").waitFor();
  const high = BigInt(await page.getByTestId("log-high-water").textContent());
  const published = BigInt(await page.getByTestId("published").textContent());
  assert.ok(high > 0n && published <= high, `high-water ${high}, published ${published}`);
  assert.equal(BigInt(await page.getByTestId("events-behind").textContent()), high - published);
  assert.match(await page.getByTestId("relay-lag").textContent(), /^\d+(\.\d+)? s$/);
  console.log(`ok: ingest lag shown (high-water ${high}, published ${published})`);
}

/** The invoices page by status and by customer: every row shown matches the filter. */
async function checkInvoiceFilters(page, customerId) {
  await page.click("text=Invoices");
  const table = page.getByTestId("invoices");
  const column = (index) => table.locator(`tbody tr td:nth-child(${index})`).allTextContents();
  await table.waitFor();
  await page.selectOption("select[name=status]", { label: "void" });
  await page.getByText("No invoices.").waitFor();
  await page.selectOption("select[name=status]", { label: "finalized" });
  await table.waitFor();
  const statuses = await column(2);
  assert.ok(statuses.length > 0 && statuses.every((status) => status === "finalized"), `finalized only: ${statuses}`);
  await page.fill("input[name=invoiceCustomer]", customerId);
  await page.click("text=Filter");
  await eventually(async () => {
    const customers = await column(3);
    return (customers.length > 0 && customers.every((customer) => customer === customerId)) || `customer filter shows ${customers}`;
  });
  await page.screenshot({ path: path.join(output, "invoices-filtered.png"), fullPage: true });
  console.log("ok: invoices filtered by status and by customer");
}

/** The catalog page: the demo's meters, plans, charges, graduated tiers and matrix cells, every digit. */
async function checkCatalog(page) {
  await page.click("text=Catalog");
  await page.locator('[data-testid="meters"] tr[data-meter="gpu_seconds"]').waitFor();
  const pro = page.locator('section[data-plan="inference_pro"]');
  await pro.getByText("Inference Pro").first().waitFor();
  const tokens = pro.locator('tr[data-charge="tokens"]');
  assert.match(await tokens.textContent(), /graduated/);
  const rows = (table) => table.locator("tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((cell) => cell.textContent)));
  assert.deepEqual(
    await rows(pro.getByTestId("tiers").first()),
    [
      ["0", "10000000", "0.0000021 USD", "—"],
      ["10000000", "100000000", "0.0000015 USD", "—"],
      ["100000000", "∞", "0.0000009 USD", "—"],
    ],
    "the graduated tiers, every digit",
  );
  const cells = await rows(pro.getByTestId("matrix").first());
  assert.ok(cells.some(([match, price]) => match === "gpu_type=h100" && price === "0.00125 USD"), `the matrix cells: ${JSON.stringify(cells)}`);
  assert.match(await pro.locator('tr[data-charge="platform_fee"]').textContent(), /flat fee.*499\.00 USD per period/);
  await page.locator('section[data-plan="inference_starter"]').getByText("14-day trial").waitFor();
  await page.screenshot({ path: path.join(output, "catalog.png"), fullPage: true });
  console.log("ok: catalog page shows meters, plans, charges, tiers and matrix cells");
}

/** Customers: status filter and lookup by external id; Acme AI's credit ledger equals the CLI's to the cent. */
async function checkCustomersAndLedger(page, cli, listed) {
  await page.click("text=Customers");
  await page.getByRole("link", { name: "Globex Labs" }).waitFor();
  await page.selectOption("select[name=customerStatus]", { label: "archived" });
  await page.getByText("No customers in this status.").waitFor();
  await page.selectOption("select[name=customerStatus]", { label: "all" });
  await page.getByRole("link", { name: "Globex Labs" }).waitFor();
  await page.fill("input[name=customerQuery]", "demo-acme");
  await page.click("text=Find");
  await page.getByRole("button", { name: "Show all" }).waitFor();
  // The table keeps the last page until the lookup answers: wait for the answer.
  await eventually(async () => {
    const names = await page.getByTestId("customers").locator("tbody tr td:first-child").allTextContents();
    return JSON.stringify(names) === JSON.stringify(["Acme AI"]) || `the lookup shows ${JSON.stringify(names)}`;
  });
  await page.fill("input[name=customerQuery]", "no-such-customer");
  await page.click("text=Find");
  await page.getByTestId("no-match").waitFor();
  await page.fill("input[name=customerQuery]", "demo-acme");
  await page.click("text=Find");
  await page.getByRole("link", { name: "Acme AI" }).click();
  await page.getByTestId("credit-ledger").waitFor();
  const acme = new URL(page.url()).searchParams.get("id");
  const entries = listed(cli("credits", "history", "--customer", acme, "--output", "json"), "entries");
  assert.ok(entries.length > 0, "Acme AI has prepaid credits");
  assert.deepEqual(
    await page.getByTestId("ledger-amount").allTextContents(),
    entries.map((entry) => consoleMoney(entry.amount)),
    "every ledger amount as the CLI prints it",
  );
  assert.deepEqual(
    await page.getByTestId("ledger-balance").allTextContents(),
    entries.map((entry) => consoleMoney(entry.balanceAfter)),
    "every balance after as the CLI prints it",
  );
  await page.screenshot({ path: path.join(output, "customer-ledger.png"), fullPage: true });
  console.log(`ok: customers filter and lookup; ${entries.length} credit ledger entries of ${acme} equal the CLI's`);
}

/** A reconciliation run (without Stripe it fails, and says why) is listed with its state and findings. */
async function checkReconciliation(page, tally, cliEnv) {
  spawnSync(tally, ["reconcile", "--from", "2026-10-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z", "--wait-seconds", "60"], { env: cliEnv, encoding: "utf8" });
  await page.click("text=Reconciliation");
  const row = page.locator("[data-testid=reports] tr[data-report-id]").first();
  await row.waitFor();
  assert.match(await row.getByTestId("report-state").textContent(), /completed|failed|running|pending/);
  assert.match(await row.textContent(), /2026-10-01T00:00:00Z → 2026-11-01T00:00:00Z/);
  await page.locator('[data-testid="findings"], [data-testid="no-findings"]').first().waitFor();
  await page.screenshot({ path: path.join(output, "reconciliation.png"), fullPage: true });
  console.log(`ok: reconciliation report shown (${(await row.getByTestId("report-state").textContent()).slice(0, 80)})`);
}

/** A `read` key signs in, reads an invoice and is offered no void or credit note, nor the reconciliation page. */
async function checkReadOnlyKey(browser, base, cli, invoiceId) {
  const key = cli("keys", "create", "--name", "console-e2e-readonly", "--scope", "read").trim();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(BOUND);
  await page.goto(`${base}/sign-in/`);
  // The services learn a new key within a refresh interval: sign in until it is known.
  const deadline = Date.now() + BOUND;
  for (;;) {
    await page.fill("input[name=apiKey]", key);
    await page.click("button[type=submit]");
    const outcome = await Promise.race([
      page.getByRole("heading", { name: "Overview" }).waitFor().then(() => "in", () => "gone"),
      // Not any role=alert: Next's route announcer is one.
      page.getByRole("alert").filter({ hasText: "Checking the key failed" }).waitFor().then(() => "refused", () => "gone"),
    ]);
    if (outcome === "in") break;
    if (Date.now() > deadline) throw new Error("the read-only key was never accepted");
    await page.reload();
  }
  await page.getByTestId("caller").getByText("console-e2e-readonly (read)").waitFor();
  assert.equal(await page.getByRole("link", { name: "Reconciliation" }).count(), 0, "no reconciliation link without admin");
  await page.goto(`${base}/invoice/?id=${invoiceId}`);
  await page.getByTestId("invoice-lines").waitFor();
  await page.getByTestId("read-only").waitFor();
  assert.equal(await page.getByRole("button", { name: "Void invoice" }).count(), 0, "no void button for a read key");
  assert.equal(await page.getByRole("button", { name: "Issue credit note" }).count(), 0, "no credit-note button for a read key");
  await page.screenshot({ path: path.join(output, "invoice-read-only.png"), fullPage: true });
  await page.goto(`${base}/reconciliation/`);
  await page.getByTestId("needs-admin").waitFor();
  await context.close();
  console.log("ok: a read-only key sees no void or credit-note action and no reconciliation");
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
    await page.screenshot({ path: path.join(output, "sign-in.png"), fullPage: true });
    await page.fill("input[name=apiKey]", tallyDev.apiKey);
    await page.click("button[type=submit]");
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.getByTestId("billed-vs-collected").waitFor();
    await checkOverview(page, cli);
    await page.screenshot({ path: path.join(output, "overview.png"), fullPage: true });
    // The header names the key and its scopes (GetCaller); the admin key sees every page.
    await page.getByTestId("caller").getByText(/admin/).waitFor();
    await page.getByRole("link", { name: "Reconciliation" }).waitFor();
    console.log("ok: signed in, overview shown, the key's scopes in the header");

    // A customer: Globex Labs (moved from Starter to Pro mid-month).
    await page.click("text=Customers");
    await page.getByRole("link", { name: "Globex Labs" }).waitFor();
    await page.screenshot({ path: path.join(output, "customers.png"), fullPage: true });
    await page.getByRole("link", { name: "Globex Labs" }).click();
    await page.getByTestId("invoices").waitFor();
    await page.getByTestId("live-cost").waitFor();
    const customerId = new URL(page.url()).searchParams.get("id");
    // Payments (none without Stripe, or the CLI's), the credit ledger and the audit timeline.
    await page.locator('[data-testid="payments"], [data-testid="no-payments"]').first().waitFor();
    await page.locator('[data-testid="credit-ledger"], [data-testid="no-ledger"]').first().waitFor();
    await page.locator('[data-testid="audit"] tr[data-action="customer.created"]').waitFor();
    const send = (name, events) => {
      const file = path.join(dataDir, name);
      writeFileSync(file, events.map((event) => JSON.stringify(event)).join("\n") + "\n");
      const sent = spawnSync(tally, ["events", "send", "--file", file], { env: cliEnv, encoding: "utf8" });
      assert.equal(sent.status, 0, `tally events send: ${sent.stdout}${sent.stderr}`);
    };
    await checkCustomerUsage(page, cli, customerId, send);
    await page.screenshot({ path: path.join(output, "customer.png"), fullPage: true });
    console.log(`ok: customer ${customerId} shown with payments, credit ledger and audit timeline`);

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
    await checkLag(page);
    // Replayed with its cause unfixed: rejected again by the same rule, and still open.
    const rejectedRow = page.locator('section[data-rule="too_far_in_future"] tr[data-event-id="e2e-future-1"]');
    await rejectedRow.getByRole("button", { name: "Replay" }).click();
    const verdict = rejectedRow.getByTestId("verdict");
    await verdict.waitFor();
    assert.equal(await verdict.getAttribute("data-outcome"), "rejected", "the replay's verdict");
    assert.match(await verdict.textContent(), /too_far_in_future/);
    await page.screenshot({ path: path.join(output, "usage.png"), fullPage: true });
    await page.getByRole("button", { name: "Refresh the list" }).click();
    await rejectedRow.getByText("(replayed 1×)").waitFor();
    assert.match(cli("rejected", "list"), /e2e-future-1/, "still open for the CLI too");
    console.log("ok: a rejected event shown under its rule on the usage page, replayed and rejected again (too_far_in_future)");

    // Replayed after its cause is fixed: 20 minutes ahead of the service clock is too far;
    // once the clock has moved an hour it is not, and the replay is accepted and resolved.
    const [now] = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/.exec(cli("clock", "show"));
    const soon = new Date(Date.parse(now) + 20 * 60_000).toISOString().replace(/\.000Z$/, "Z");
    const soonEvent = { id: "e2e-soon-1", customerId, eventType: "llm_tokens", timestamp: soon, properties: { tokens: "10" } };
    writeFileSync(bad, `${JSON.stringify(soonEvent)}\n`);
    spawnSync(tally, ["events", "send", "--file", bad], { env: cliEnv, encoding: "utf8" });
    await until(() => cli("rejected", "list").includes("e2e-soon-1"), "the early event rejected");
    cli("clock", "advance", "1h");
    await page.getByRole("button", { name: "Refresh the list" }).click();
    const soonRow = page.locator('section[data-rule="too_far_in_future"] tr[data-event-id="e2e-soon-1"]');
    await soonRow.getByRole("button", { name: "Replay" }).click();
    await soonRow.getByTestId("verdict").waitFor();
    assert.equal(await soonRow.getByTestId("verdict").getAttribute("data-outcome"), "accepted", "replayed once the clock caught up");
    await page.screenshot({ path: path.join(output, "usage-replayed.png"), fullPage: true });
    await page.getByRole("button", { name: "Refresh the list" }).click();
    await eventually(async () => (await soonRow.count()) === 0 || "the accepted event is still in the open list");
    await rejectedRow.waitFor();
    assert.doesNotMatch(cli("rejected", "list"), /e2e-soon-1/, "resolved for the CLI too");
    console.log(`ok: an event rejected as ${soon} (ahead of ${now}) replayed after the clock moved: accepted and resolved`);

    await checkInvoiceFilters(page, customerId);
    await checkCatalog(page);
    await checkCustomersAndLedger(page, cli, listed);
    await checkReconciliation(page, tally, cliEnv);
    await checkReadOnlyKey(browser, base, cli, monthEnd.id);

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

    // A screenshot of every page, for CI to keep and a person to look at.
    const pages = ["sign-in", "overview", "customers", "customer", "invoice", "invoices-filtered", "catalog", "usage", "reconciliation", "portal"];
    const missing = pages.filter((name) => !existsSync(path.join(output, `${name}.png`)));
    assert.deepEqual(missing, [], "a screenshot of each page");
    console.log(`ok: screenshots of ${pages.length} pages in ${output}`);
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
