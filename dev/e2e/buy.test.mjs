// A person buys access through the demo page and the Dodo simulator's checkout page, in
// headless Chromium (Debian's package) driven by Playwright. The local server is the real
// one (`make dev`'s binary), on a free port, with a fresh state folder.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const serverBinary = process.env.PAYWALL_DEV_BIN || join(root, "target", "debug", "dev");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const screenshots = join(root, "target", "e2e");

let server;
let baseUrl;
let browser;
let stateDir;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function startServer(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(serverBinary, ["serve"], {
      env: { ...process.env, PORT: String(port), PAYWALL_STATE_DIR: stateDir, DODO_PAYMENTS_API_KEY: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const timer = setTimeout(() => reject(new Error("the local server did not start:\n" + output)), 20000);
    const collect = (chunk) => {
      output += chunk;
      if (output.includes("Ready.")) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the local server exited (${code}):\n${output}`));
    });
  });
}

before(async () => {
  assert.ok(existsSync(serverBinary), `${serverBinary} is missing: run \`cargo build --bins\` first (make test does)`);
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: install Debian's chromium package, or set CHROMIUM_PATH`);
  mkdirSync(screenshots, { recursive: true });
  stateDir = mkdtempSync(join(tmpdir(), "paywall-e2e-"));
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  server = await startServer(port);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGINT"); // Ctrl-C: the server stops cleanly
    await exited;
  }
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

async function signIn(page, user) {
  await page.goto(baseUrl + "/");
  await page.fill("#sub", user);
  await page.fill("#email", `${user}@example.com`);
  await page.click("#signin-button");
  await page.waitForSelector("#account:not([hidden])");
  await assertText(page, "#access", "No access yet");
}

async function assertText(page, selector, expected) {
  await page.waitForFunction(
    ([sel, text]) => document.querySelector(sel)?.textContent.includes(text),
    [selector, expected],
    { timeout: 15000 },
  );
}

// Clicks one of the clock's buttons and waits until the page shows the new time (after
// the status). A month of the simulator's events and 720 hourly reconcile runs takes
// about 2 s on an idle 2-core machine, several times that on a busy one.
async function moveClock(page, button) {
  const before = await page.textContent("#clock-now");
  await page.click(button);
  await page.waitForFunction(
    (was) =>
      document.querySelector("#clock-now").textContent !== was &&
      document.querySelector("#message").textContent.startsWith("It is now"),
    before,
    { timeout: 90000 },
  );
}

test("a buyer pays on Dodo's page and the demo page shows access granted", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-buyer");
  await assertText(page, "#plan", "none");
  // The demo catalogue's free tier, then what the pass adds.
  await assertText(page, "#features", "free: basic");
  await assertText(page, "#limits", "api_calls 0/20 used");

  await page.click("#buy");
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await assertText(page, "#customer-email", "browser-buyer@example.com");
  await page.screenshot({ path: join(screenshots, "checkout.png") });

  await page.click("#pay");
  await page.waitForURL((url) => url.pathname === "/");
  await assertText(page, "#message", "Payment confirmed");
  await assertText(page, "#access", "Access granted");
  await assertText(page, "#plan", "monthly");
  await assertText(page, "#features", "monthly (pass): basic, export");
  await assertText(page, "#limits", "api_calls 0/1000 used");
  await page.screenshot({ path: join(screenshots, "paid.png") });

  // The server agrees, not just the page.
  const token = await page.evaluate(() => localStorage.getItem("paywall-demo-token"));
  const status = await (await fetch(baseUrl + "/payment/status", { headers: { Authorization: `Bearer ${token}` } })).json();
  assert.equal(status.has_paid, true);
  assert.equal(status.subscription_plan, "monthly");
  await page.close();
});

test("Manage subscription opens Dodo's customer portal once there is a customer", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-portal");
  // Never bought anything: no Dodo customer, nothing to manage.
  await page.click("#portal");
  await assertText(page, "#message", "Nothing to manage yet");

  await page.click("#buy");
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await page.click("#pay");
  await page.waitForURL((url) => url.pathname === "/");
  await assertText(page, "#access", "Access granted");

  await page.click("#portal");
  await page.waitForURL(/\/dodo\/portal\/cus_/);
  await page.screenshot({ path: join(screenshots, "portal.png") });
  await page.close();
});

test("a declined payment grants nothing", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-decliner");
  await page.click("#buy");
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await page.click("#decline");
  await page.waitForURL((url) => url.pathname === "/");
  await assertText(page, "#message", "Payment not confirmed");
  await assertText(page, "#access", "No access yet");
  await assertText(page, "#plan", "pending_monthly");
  await page.screenshot({ path: join(screenshots, "declined.png") });
  await page.close();
});

// Last: it moves the shared server's clock a month on.
test("the test clock: a card declined at renewal puts the subscription on hold and ends access", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-renewer");
  await page.waitForSelector("#clock:not([hidden])");
  const before = await page.textContent("#clock-now");
  assert.match(before, /^\d{4}-\d\d-\d\dT/);

  await page.click("#subscribe");
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await page.click("#pay-then-fail");
  await page.waitForURL((url) => url.pathname === "/");
  await assertText(page, "#access", "Access granted");
  await assertText(page, "#plan", "pro");
  await page.waitForFunction(() => /^\d{4}-/.test(document.querySelector("#next-renewal").textContent));

  // The renewal is a calendar month on, which can be 31 days (30 days from a December
  // date does not reach it): +1 month, then +1 day twice, whatever today's date is.
  await moveClock(page, "#advance-month");
  await moveClock(page, "#advance-day");
  await moveClock(page, "#advance-day");
  await assertText(page, "#access", "No access yet");
  await assertText(page, "#status", "on_hold");
  assert.notEqual(await page.textContent("#clock-now"), before);
  await page.screenshot({ path: join(screenshots, "on-hold.png") });
  await page.close();
});

// After the renewal test: another user's subscription (on hold, with a retry due) exists.
test("the demo page shows the signed-in user's own next renewal, and refuses an empty sign-in", async () => {
  const page = await browser.newPage();
  await page.goto(baseUrl + "/");
  await page.evaluate(() => localStorage.clear());
  await page.goto(baseUrl + "/");
  await page.fill("#sub", "");
  await page.click("#signin-button");
  await assertText(page, "#signin-message", "Enter a user id");
  assert.equal(await page.evaluate(() => localStorage.getItem("paywall-demo-token")), null);
  assert.equal(await page.isHidden("#account"), true);

  // A pass holder has no renewal, whatever other users' subscriptions do.
  await signIn(page, "browser-passholder");
  await page.click("#buy");
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await page.click("#pay");
  await page.waitForURL((url) => url.pathname === "/");
  await assertText(page, "#access", "Access granted");
  await page.waitForSelector("#clock:not([hidden])");
  assert.equal((await page.textContent("#next-renewal")).trim(), "—");
  await page.close();
});
