// createPaywall against the real local stack: every /payment route, through the Dodo
// simulator's checkout, with the answers and errors the API really gives.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createPaywall, isPaywallError, PaywallError } from "../dist/index.js";
import { startStack, observedFetch } from "./stack.mjs";

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

/** A client for a new user of the stack, and what its fetch saw. */
async function userClient(sub, options = {}) {
  const token = await stack.token(sub);
  const observed = observedFetch();
  const paywall = createPaywall({ baseUrl: stack.baseUrl, getToken: async () => token, fetch: observed.fetch, ...options });
  return { paywall, seen: observed.seen, token };
}

/** Buys `plan` through the simulator's checkout and confirms the return, as a browser would. */
async function buy(paywall, plan) {
  const url = await paywall.checkout(plan);
  assert.match(url, /\/dodo\/checkout\/cks_/);
  const returnUrl = await stack.pay(url);
  assert.match(returnUrl, /payment_id=pay_/);
  return paywall.confirmReturn(returnUrl);
}

test("a new user: status none, entitlements the free tier", async () => {
  const { paywall } = await userClient("new-user");
  const status = await paywall.status();
  assert.equal(status.status, "none");
  assert.equal(status.has_paid, false);
  assert.equal(status.subscription_plan, "none");
  const entitlements = await paywall.entitlements();
  assert.equal(entitlements.plan, "free");
  assert.deepEqual(entitlements.features, ["basic"]);
  assert.equal(entitlements.limits.api_calls.limit, 20);
});

test("status and entitlements revalidate by ETag: the second read sends If-None-Match, gets 304 and the same body", async () => {
  const { paywall, seen } = await userClient("etag-user");
  for (const [read, path] of [
    [() => paywall.entitlements(), "/payment/entitlements"],
    [() => paywall.status(), "/payment/status"],
  ]) {
    const first = await read();
    const second = await read();
    assert.deepEqual(second, first);
    const calls = seen.filter((s) => s.path === path);
    assert.equal(calls.length, 2);
    assert.equal(calls[0].headers.get("if-none-match"), null);
    assert.equal(calls[0].status, 200);
    assert.equal(calls[1].headers.get("if-none-match"), calls[0].response.get("etag"));
    assert.equal(calls[1].status, 304);
  }
});

test("a changed answer is a 200 with the new body, and becomes the one revalidated", async () => {
  const { paywall, seen } = await userClient("etag-changes");
  const before = await paywall.entitlements();
  assert.equal(before.plan, "free");
  await buy(paywall, "monthly");
  const after = await paywall.entitlements();
  assert.equal(after.plan, "monthly");
  const reads = seen.filter((s) => s.path === "/payment/entitlements");
  assert.equal(reads[1].status, 200, "the old ETag no longer matches");
  assert.equal(await paywall.entitlements().then((e) => e.plan), "monthly");
  assert.equal(seen.filter((s) => s.path === "/payment/entitlements")[2].status, 304);
});

test("another token never revalidates, nor sees, the first token's cached answer", async () => {
  let token = await stack.token("cache-alice");
  const observed = observedFetch();
  const paywall = createPaywall({ baseUrl: stack.baseUrl, getToken: () => token, fetch: observed.fetch });
  await paywall.entitlements();
  const alice = await paywall.status();
  token = await stack.token("cache-bob");
  const bob = await paywall.status();
  const reads = observed.seen.filter((s) => s.path === "/payment/status");
  assert.equal(reads[1].headers.get("if-none-match"), null);
  assert.equal(reads[1].status, 200);
  assert.deepEqual(bob, alice, "both are new users, so the bodies are alike; what matters is the 200");
});

test("plans() needs no token; the other routes without one throw unauthorized before any request", async () => {
  const observed = observedFetch();
  const paywall = createPaywall({ baseUrl: stack.baseUrl, getToken: () => null, fetch: observed.fetch });
  const { plans, free } = await paywall.plans();
  assert.deepEqual(
    plans.map((p) => p.name).sort(),
    ["monthly", "pro", "starter", "team"],
  );
  assert.deepEqual(free.features, ["basic"]);
  assert.equal(observed.seen[0].headers.get("authorization"), null);
  for (const call of [() => paywall.status(), () => paywall.entitlements(), () => paywall.checkout("monthly"), () => paywall.cancel()]) {
    await assert.rejects(call(), (e) => isPaywallError(e, "unauthorized") && e.status === 0);
  }
  assert.equal(observed.seen.length, 1, "only plans() reached the API");
});

test("a token the API refuses is a typed unauthorized (401)", async () => {
  const paywall = createPaywall({ baseUrl: stack.baseUrl, getToken: () => "not-a-jwt" });
  await assert.rejects(paywall.status(), (e) => {
    assert.ok(e instanceof PaywallError);
    assert.equal(e.code, "unauthorized");
    assert.equal(e.status, 401);
    return true;
  });
});

test("checkout, pay on Dodo's page, confirmReturn: the payment is confirmed and entitlements show the plan", async () => {
  const { paywall, seen } = await userClient("buyer");
  assert.equal(await paywall.confirmReturn("http://127.0.0.1/app?tab=1"), null, "no payment_id: nothing to confirm");
  assert.equal(seen.length, 0);
  const success = await buy(paywall, "monthly");
  assert.equal(success.status, "success");
  assert.equal(success.has_paid, true);
  assert.equal(success.subscription_plan, "monthly");
  const confirm = seen.find((s) => s.path === "/payment/success");
  assert.equal(confirm.method, "POST");
  const entitlements = await paywall.entitlements();
  assert.equal(entitlements.plan, "monthly");
  assert.equal(entitlements.source, "pass");
  assert.ok(entitlements.features.includes("export"));
  // Asked again (a reload before the URL was cleaned), it grants nothing twice.
  const again = await paywall.confirmReturn(`${stack.baseUrl}/?payment_id=${success.dodo_payment_id}&status=succeeded`);
  assert.equal(again.status, "success");
  assert.equal(again.plan_expires_at, success.plan_expires_at);
  // The customer portal, now that they have paid.
  assert.match(await paywall.portal(), /\/dodo\/portal\/cus_/);
  // A trial would hide the paid plan.
  await assert.rejects(paywall.startTrial("team"), (e) => isPaywallError(e, "already_paid") && e.status === 409);
});

test("confirmReturn of another user's payment is a typed payment_not_yours", async () => {
  const { paywall: alice } = await userClient("payer-alice");
  const paid = await buy(alice, "monthly");
  const { paywall: mallory } = await userClient("payer-mallory");
  await assert.rejects(
    mallory.confirmReturn(`${stack.baseUrl}/?payment_id=${paid.dodo_payment_id}&status=succeeded`),
    (e) => isPaywallError(e, "payment_not_yours") && e.status === 403,
  );
});

test("typed errors: unknown_plan, no_customer, no_subscription", async () => {
  const { paywall } = await userClient("errors");
  await assert.rejects(paywall.checkout("platinum"), (e) => isPaywallError(e, "unknown_plan") && e.status === 400);
  await assert.rejects(paywall.portal(), (e) => isPaywallError(e, "no_customer") && e.status === 404);
  await assert.rejects(paywall.cancel(), (e) => isPaywallError(e, "no_subscription") && e.status === 409);
  await assert.rejects(paywall.startTrial("platinum"), (e) => isPaywallError(e, "unknown_plan"));
});

test("startTrial starts the card-less trial once; the second time is a typed trial_used", async () => {
  const { paywall } = await userClient("trialist");
  const status = await paywall.startTrial("team");
  assert.equal(status.status, "trialing");
  assert.ok(status.trial_ends_at);
  const entitlements = await paywall.entitlements();
  assert.equal(entitlements.plan, "team");
  assert.equal(entitlements.source, "trial");
  await assert.rejects(paywall.startTrial("team"), (e) => {
    assert.ok(isPaywallError(e, "trial_used"), `got ${e}`);
    assert.equal(e.status, 409);
    assert.ok(e.message.length > 0);
    return true;
  });
  // A plan with no card-less trial.
  await assert.rejects(paywall.startTrial("pro"), (e) => isPaywallError(e, "trial_not_offered") && e.status === 409);
});

test("a subscription: preview, upgrade, downgrade scheduled then dropped, cancel, resume", async () => {
  const { paywall } = await userClient("subscriber");
  const success = await buy(paywall, "pro");
  assert.equal(success.status, "success");
  assert.equal((await paywall.entitlements()).plan, "pro");
  await assert.rejects(paywall.checkout("pro"), (e) => isPaywallError(e, "already_subscribed"));

  const preview = await paywall.previewPlanChange("team");
  assert.equal(preview.from, "pro");
  assert.equal(preview.plan, "team");
  assert.equal(preview.direction, "upgrade");
  assert.equal(typeof preview.preview.amount, "number");
  assert.equal((await paywall.status()).plan, "pro", "a preview changes nothing");

  const upgrade = await paywall.changePlan("team");
  assert.equal(upgrade.applied, true);
  assert.equal(upgrade.effective_at, "immediately");
  assert.equal(upgrade.status.plan, "team");
  assert.equal((await paywall.entitlements()).plan, "team");
  // A new minute for the per-user limit (10 calls a minute to the routes that call Dodo).
  await stack.moveClock("61s");
  await assert.rejects(paywall.changePlan("team"), (e) => isPaywallError(e, "same_plan"));

  const downgrade = await paywall.changePlan("pro");
  assert.equal(downgrade.direction, "downgrade");
  assert.equal(downgrade.effective_at, "next_billing_date");
  assert.equal(downgrade.status.scheduled_change?.plan, "pro");
  const dropped = await paywall.cancelScheduledChange();
  assert.equal(dropped.scheduled_change, null);
  assert.equal(dropped.plan, "team");

  await stack.moveClock("61s");
  const cancelled = await paywall.cancel();
  assert.equal(cancelled.cancel_at_period_end, true);
  assert.equal((await paywall.entitlements()).cancel_at_period_end, true);
  const resumed = await paywall.resume();
  assert.equal(resumed.cancel_at_period_end, false);
});

test("a plan change Dodo made but the API could not store (503 changed_not_stored) is sent again and stored", async () => {
  const token = await stack.token("interrupted");
  const statuses = [];
  // The store fails until the first 503 is back: the resend finds it healed.
  const fetchHealing = async (input, init) => {
    const response = await fetch(input, init);
    statuses.push(response.status);
    if (response.status === 503) {
      const { error } = await response.clone().json();
      statuses.push(error.code);
      await stack.failDatabase([]);
    }
    return response;
  };
  const paywall = createPaywall({ baseUrl: stack.baseUrl, getToken: async () => token, fetch: fetchHealing });
  await buy(paywall, "pro");
  await stack.moveClock("61s");
  // Its webhooks lost: only the resend can store the change.
  await stack.faults({ drop_webhooks: 1 });
  try {
    statuses.length = 0;
    await stack.failDatabase(["TransactWriteItems"]);
    const upgrade = await paywall.changePlan("team");
    assert.deepEqual(statuses, [503, "changed_not_stored", 200]);
    assert.equal(upgrade.applied, true);
    assert.equal(upgrade.status.plan, "team");
    assert.equal((await paywall.entitlements()).plan, "team");
  } finally {
    await stack.failDatabase([]);
    await stack.faults({});
  }
});
