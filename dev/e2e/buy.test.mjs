// A person buys access through the demo page and the Dodo simulator's checkout page, in
// headless Chromium (Debian's package) driven by Playwright. The local server is the real
// one (`make dev`'s binary), on a free port, with a fresh state folder.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, launchChromium, screenshots } from "./stack.mjs";

let stack;
let baseUrl;
let browser;

before(async () => {
  stack = await startServer();
  baseUrl = stack.url;
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (stack) await stack.stop();
});

async function signIn(page, user, email = `${user}@example.com`) {
  await page.goto(baseUrl + "/");
  await page.fill("#sub", user);
  await page.fill("#email", email);
  await page.click("#signin-button");
  await page.waitForSelector("#account:not([hidden])");
  await assertText(page, "#access", "No access yet");
}

async function assertText(page, selector, expected) {
  try {
    await page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent.includes(text),
      [selector, expected],
      { timeout: 15000 },
    );
  } catch (err) {
    // Say what the page shows instead (and its messages, where errors appear).
    const shown = await page.evaluate((sel) => ({
      [sel]: document.querySelector(sel)?.textContent.trim().slice(0, 300),
      "#message": document.querySelector("#message")?.textContent,
      "#plans-message": document.querySelector("#plans-message")?.textContent,
    }), selector).catch(() => ({}));
    throw new Error(`${selector} never showed ${JSON.stringify(expected)}; the page shows ${JSON.stringify(shown)}`, { cause: err });
  }
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

// What the API says, with the signed-in user's token from the page.
async function apiAs(page, method, path, body) {
  const token = await page.evaluate(() => localStorage.getItem("paywall-demo-token"));
  const response = await fetch(baseUrl + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, data: await response.json() };
}

async function statusOf(page) {
  const { status, data } = await apiAs(page, "GET", "/payment/status");
  assert.equal(status, 200);
  return data;
}

// A button by its accessible name (its aria-label), exactly.
function button(page, name) {
  return page.getByRole("button", { name, exact: true });
}

async function waitForButton(page, name) {
  await button(page, name).waitFor({ state: "visible", timeout: 15000 });
}

async function assertNoButton(page, name) {
  assert.equal(await button(page, name).count(), 0, `no "${name}" button expected`);
}

function row(plan) {
  return `#plans-body tr[data-plan="${plan}"]`;
}

// The preview as the page words it: "$30.00 now, then $99.00/month from 2027-01-06".
function money(amount, currency) {
  return new Intl.NumberFormat("en-US", { style: "currency", currency }).format(amount / 100);
}

// A scheduled change charges nothing now: the preview's charge is made at its date.
function previewWords(change, interval) {
  const p = change.preview;
  const credit = p.credit > 0 ? ` (${money(p.credit, p.currency)} credited)` : "";
  const next = `then ${money(p.next_charge, p.currency)}/${interval} from ${p.next_charge_at.slice(0, 10)}`;
  if (change.effective_at === "immediately") {
    return `${p.charge_now > 0 ? `${money(p.charge_now, p.currency)} now` : "nothing now"}${credit}, ${next}`;
  }
  const first = p.amount !== p.next_charge ? `${money(p.amount, p.currency)} on ${p.effective_at.slice(0, 10)}, ` : "";
  return `nothing now${credit}, ${first}${next}`;
}

// Subscribes the signed-in user to `plan` through the pricing table and Dodo's page.
async function subscribeThroughTable(page, plan) {
  await button(page, `Subscribe to ${plan}`).click();
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await page.click("#pay");
  await page.waitForURL((url) => url.pathname === "/");
  await assertText(page, "#message", "Payment confirmed");
  await assertText(page, "#access", "Access granted");
  await assertText(page, "#plan", plan);
}

// The page's own call, and the API's answer to it, while `action` runs.
async function answerTo(page, method, path, action, matches = () => true) {
  const [response] = await Promise.all([
    page.waitForResponse((r) =>
      r.request().method() === method && new URL(r.url()).pathname === path && matches(r.request()),
      { timeout: 15000 }),
    action(),
  ]);
  return { status: response.status(), data: await response.json() };
}

test("the pricing table is built from GET /payment/plans, with each plan's options for the user", async () => {
  const listing = await (await fetch(baseUrl + "/payment/plans")).json();
  // The demo catalogue (DEMO_PLANS): what the walk below relies on.
  assert.deepEqual(listing.plans.map((p) => p.name), ["starter", "monthly", "pro", "team"]);
  assert.deepEqual(listing.plans.find((p) => p.name === "starter").trial, { days: 7, card: true });
  assert.deepEqual(listing.plans.find((p) => p.name === "team").trial, { days: 14, card: false });

  const page = await browser.newPage();
  await page.goto(baseUrl + "/");
  await page.evaluate(() => localStorage.clear());
  await page.goto(baseUrl + "/");
  await page.waitForSelector(row("team"));
  // Signed out: the table, and no buttons in it.
  assert.equal(await page.locator("#plans-body button").count(), 0);
  assert.equal(await page.locator("#plans-body tr").count(), listing.plans.length + (listing.free ? 1 : 0));
  assert.deepEqual(
    await page.locator("#plans-body tr").evaluateAll((rows) => rows.map((r) => r.dataset.plan)),
    [...(listing.free ? ["free"] : []), ...listing.plans.map((p) => p.name)],
  );
  for (const plan of listing.plans) {
    const cells = page.locator(`${row(plan.name)} > *`);
    assert.equal((await cells.nth(0).textContent()).trim(), plan.name);
    const price = await cells.nth(1).textContent();
    assert.ok(price.includes(plan.price), `${plan.name}: ${price}`);
    assert.ok(price.includes(plan.kind === "pass" ? `${plan.days} days of access` : `billed every ${plan.interval}`), price);
    const trial = (await cells.nth(2).textContent()).trim();
    assert.equal(trial, plan.trial ? `${plan.trial.days} days, ${plan.trial.card ? "card required" : "no card needed"}` : "—");
    const includes = await cells.nth(3).locator("li").allTextContents();
    assert.deepEqual(includes, [...plan.features, ...Object.entries(plan.limits).map(([k, v]) => `${k}: ${v}`)]);
  }
  const free = await page.locator(`${row("free")} li`).allTextContents();
  assert.deepEqual(free, [...listing.free.features, ...Object.entries(listing.free.limits).map(([k, v]) => `${k}: ${v}`)]);

  // Signed in with nothing paid: buy, subscribe, try the card-less trial, or start the
  // card trial (at checkout, so no separate Subscribe).
  await signIn(page, "browser-shopper");
  await waitForButton(page, "Buy monthly");
  await waitForButton(page, "Subscribe to pro");
  await waitForButton(page, "Start 14-day trial of team");
  await waitForButton(page, "Subscribe to team");
  await waitForButton(page, "Start 7-day trial of starter");
  await assertNoButton(page, "Subscribe to starter");
  assert.equal(await page.getByRole("button", { name: /^(Upgrade|Downgrade|Cancel|Resume)/ }).count(), 0);
  assert.equal((await statusOf(page)).status, "none");

  // Another catalogue, another table: nothing in it is the page's own.
  const other = {
    plans: [{ name: "enterprise", kind: "subscription", price: "$990/year", price_amount: 99000, interval: "year",
      days: null, trial: { days: 7, card: true }, features: ["sso", "audit_log"], limits: { seats: 500 } }],
    free: null,
  };
  await page.route("**/payment/plans", (route) =>
    route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(other) }));
  await page.reload();
  await page.waitForSelector(row("enterprise"));
  assert.equal(await page.locator("#plans-body tr").count(), 1);
  await assertText(page, row("enterprise"), "$990/year");
  await assertText(page, row("enterprise"), "billed every year");
  await assertText(page, row("enterprise"), "7 days, card required");
  assert.deepEqual(await page.locator(`${row("enterprise")} li`).allTextContents(), ["sso", "audit_log", "seats: 500"]);
  await waitForButton(page, "Start 7-day trial of enterprise");
  await assertNoButton(page, "Subscribe to enterprise");
  await assertNoButton(page, "Start 14-day trial of team");
  await page.unroute("**/payment/plans");
  await page.close();
});

test("Start 14-day trial: the team trial runs at once, card-less, with its end date; once per person", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-trialist", "trialist@example.com");
  const { data: clock } = { data: await (await fetch(baseUrl + "/dev/clock")).json() };
  const { status: code, data: started } = await answerTo(page, "POST", "/payment/trial",
    () => button(page, "Start 14-day trial of team").click());
  assert.equal(code, 201);

  // What the page shows...
  await assertText(page, "#status", "trialing");
  await assertText(page, "#access", "Access granted");
  await assertText(page, "#plan", "team");
  await assertText(page, "#features", "sso");
  await assertText(page, "#trial-ends", `team trial ends ${started.trial_ends_at}`);
  await assertText(page, "#plans-message", `Your team trial runs until ${started.trial_ends_at}`);
  await assertText(page, row("team"), `On trial until ${started.trial_ends_at.slice(0, 10)}`);
  await assertNoButton(page, "Start 14-day trial of team");
  await waitForButton(page, "Subscribe to team"); // buying converts the trial

  // ...is what the API says: trialing on team, for 14 days from the (test) clock's now.
  const status = await statusOf(page);
  assert.equal(status.status, "trialing");
  assert.equal(status.plan, "team");
  assert.equal(status.has_paid, true);
  assert.equal(status.subscription_id, null);
  assert.equal(status.trial_ends_at, started.trial_ends_at);
  const days = (Date.parse(status.trial_ends_at) - Date.parse(clock.now)) / 86400000;
  assert.ok(days > 13.99 && days < 14.01, `the trial lasts ${days} days`);
  await page.screenshot({ path: join(screenshots, "trialing.png") });

  // Another account with the same e-mail: the same person, no second trial.
  await page.click("#signout");
  await signIn(page, "browser-trialist-again", "trialist@example.com");
  await button(page, "Start 14-day trial of team").click();
  await assertText(page, "#plans-message", "Could not start the trial: trial_used: ");
  await assertText(page, "#plans-message", "already had a trial");
  await assertText(page, "#access", "No access yet");
  const again = await statusOf(page);
  assert.equal(again.status, "none");
  assert.equal(again.has_paid, false);
  assert.equal(again.trial_ends_at, null);
  await page.close();
});

test("Start 7-day trial with a card: Dodo's checkout, then trialing until the first charge", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-card-trialist");
  const clock = await (await fetch(baseUrl + "/dev/clock")).json();
  await button(page, "Start 7-day trial of starter").click();
  await page.waitForURL(/\/dodo\/checkout\/cks_/);
  await page.click("#pay");
  await page.waitForURL((url) => url.pathname === "/");
  // Nothing is paid until the trial ends: Dodo sends back a subscription, not a payment.
  await assertText(page, "#message", "Subscription started: your trial runs until ");
  await assertText(page, "#plan", "starter");
  await assertText(page, "#status", "trialing");

  const status = await statusOf(page);
  await assertText(page, "#message", `your trial runs until ${status.trial_ends_at}.`);
  assert.equal(status.dodo_payment_id, null);
  assert.equal(status.status, "trialing");
  assert.equal(status.plan, "starter");
  assert.equal(status.has_paid, true);
  assert.ok(status.subscription_id, "a card trial is Dodo's subscription");
  const days = (Date.parse(status.trial_ends_at) - Date.parse(clock.now)) / 86400000;
  assert.ok(days > 6.99 && days < 7.01, `the trial lasts ${days} days`);
  await assertText(page, "#trial-ends", `starter trial ends ${status.trial_ends_at}`);
  // A subscriber on trial: theirs to cancel, the others to change to.
  await assertText(page, row("starter"), "Your plan (trial)");
  await waitForButton(page, "Cancel starter subscription");
  await waitForButton(page, "Upgrade to pro");
  await assertNoButton(page, "Start 7-day trial of starter");
  await page.close();
});

test("a subscriber cancels at the end of the period from the table, and resumes", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-canceller");
  await subscribeThroughTable(page, "pro");
  const subscribed = await statusOf(page);
  assert.equal(subscribed.status, "active");
  assert.equal(subscribed.plan, "pro");
  assert.ok(subscribed.subscription_id);
  assert.equal(subscribed.cancel_at_period_end, false);
  await assertText(page, "#cancel-at-period-end", "no");
  // A subscriber's options: cancel theirs, change to the other; no trial, no checkout.
  await waitForButton(page, "Cancel pro subscription");
  await waitForButton(page, "Upgrade to team");
  await waitForButton(page, "Downgrade to starter");
  await assertNoButton(page, "Subscribe to pro");
  await assertNoButton(page, "Start 14-day trial of team");

  await button(page, "Cancel pro subscription").click();
  await waitForButton(page, "Resume pro subscription");
  await assertNoButton(page, "Cancel pro subscription");
  const cancelled = await statusOf(page);
  assert.equal(cancelled.cancel_at_period_end, true);
  assert.equal(cancelled.has_paid, true); // access runs to the period's end...
  assert.equal(cancelled.status, "active");
  // ...and no further (no renewal's grace).
  assert.ok(Date.parse(cancelled.plan_expires_at) <= Date.parse(subscribed.plan_expires_at));
  await assertText(page, "#cancel-at-period-end", `yes: ends at ${cancelled.plan_expires_at}, no renewal`);
  await assertText(page, "#status", "active (ends at period end)");
  await assertText(page, "#plans-message", `Cancelled: access runs until ${cancelled.plan_expires_at}`);
  await assertText(page, "#next-renewal", `— (ends ${cancelled.plan_expires_at})`);
  await page.screenshot({ path: join(screenshots, "cancel-at-period-end.png") });

  await button(page, "Resume pro subscription").click();
  await assertText(page, "#cancel-at-period-end", "no");
  await assertText(page, "#plans-message", "Resumed");
  await waitForButton(page, "Cancel pro subscription");
  await assertNoButton(page, "Resume pro subscription");
  const resumed = await statusOf(page);
  assert.equal(resumed.cancel_at_period_end, false);
  assert.equal(resumed.status, "active");
  assert.equal(resumed.subscription_id, subscribed.subscription_id);
  await page.close();
});

test("a subscriber previews an upgrade, confirms it, schedules a downgrade and cancels that", async () => {
  const page = await browser.newPage();
  await signIn(page, "browser-changer");
  await subscribeThroughTable(page, "pro");
  const before = await statusOf(page);
  assert.equal(before.plan, "pro");

  // Upgrade: first the preview, with its amounts; nothing changes yet.
  const isPreview = (request) => JSON.parse(request.postData() || "{}").preview === true;
  const up = await answerTo(page, "POST", "/payment/change-plan",
    () => button(page, "Upgrade to team").click(), isPreview);
  assert.equal(up.status, 200, JSON.stringify(up.data));
  assert.equal(up.data.direction, "upgrade");
  assert.equal(up.data.effective_at, "immediately");
  assert.ok(up.data.preview.charge_now > 0 && up.data.preview.charge_now <= 9900, JSON.stringify(up.data.preview));
  assert.equal(up.data.preview.next_charge, 9900); // team's $99/month
  await page.waitForSelector("#change-preview:not([hidden])");
  await assertText(page, "#change-preview-text", "Upgrade to team, effective immediately: " + previewWords(up.data, "month"));
  assert.match(await page.textContent("#change-preview-text"), /: \$\d+\.\d\d now, then \$99\.00\/month from \d{4}-\d\d-\d\d\./);
  await page.screenshot({ path: join(screenshots, "upgrade-preview.png") });
  const previewed = await statusOf(page);
  assert.equal(previewed.plan, "pro");
  await assertText(page, "#plan", "pro");

  // Confirm: the subscription is on team, as Dodo says.
  await button(page, "Confirm upgrade to team").click();
  await assertText(page, "#plans-message", "You are now on team.");
  await assertText(page, "#plan", "team");
  assert.equal(await page.isHidden("#change-preview"), true);
  const upgraded = await statusOf(page);
  assert.equal(upgraded.plan, "team");
  assert.equal(upgraded.subscription_plan, "team");
  assert.equal(upgraded.status, "active");
  assert.equal(upgraded.subscription_id, before.subscription_id);
  assert.equal(upgraded.scheduled_change, null);
  await assertText(page, "#features", "sso");
  await waitForButton(page, "Cancel team subscription");

  // Downgrade: at the next billing date, nothing charged now.
  const down = await answerTo(page, "POST", "/payment/change-plan",
    () => button(page, "Downgrade to pro").click(), isPreview);
  assert.equal(down.status, 200, JSON.stringify(down.data));
  assert.equal(down.data.direction, "downgrade");
  assert.equal(down.data.effective_at, "next_billing_date");
  assert.equal(down.data.preview.next_charge, 4900); // pro's $49/month
  const billingDate = down.data.preview.effective_at.slice(0, 10);
  assert.equal(down.data.preview.next_charge_at.slice(0, 10), billingDate);
  await assertText(page, "#change-preview-text",
    `Downgrade to pro, effective at the next billing date (${billingDate}): ` + previewWords(down.data, "month"));
  await assertText(page, "#change-preview-text", `: nothing now, then $49.00/month from ${billingDate}.`);
  await button(page, "Confirm downgrade to pro").click();
  await assertText(page, "#plans-message", "Your plan moves to pro at ");

  const scheduled = await statusOf(page);
  assert.equal(scheduled.plan, "team"); // still team until then
  assert.equal(scheduled.scheduled_change?.plan, "pro");
  assert.equal(scheduled.scheduled_change.at.slice(0, 10), billingDate);
  await assertText(page, "#scheduled-change", `moves to pro at ${scheduled.scheduled_change.at}`);
  await assertText(page, "#plan", "team");
  await assertText(page, row("pro"), `From ${billingDate}`);
  await waitForButton(page, "Cancel scheduled change to pro");
  await assertNoButton(page, "Downgrade to pro");
  await page.screenshot({ path: join(screenshots, "scheduled-downgrade.png") });

  // Cancel the scheduled change: team renews as before.
  await button(page, "Cancel scheduled change to pro").click();
  await assertText(page, "#plans-message", "The scheduled change is cancelled: your plan stays team.");
  await assertText(page, "#scheduled-change", "—");
  await waitForButton(page, "Downgrade to pro");
  await assertNoButton(page, "Cancel scheduled change to pro");
  const kept = await statusOf(page);
  assert.equal(kept.scheduled_change, null);
  assert.equal(kept.plan, "team");
  assert.equal(kept.cancel_at_period_end, false);
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
