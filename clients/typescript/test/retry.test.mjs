// The API's per-user rate limit (10 calls a minute to the routes that call Dodo) against
// the real local stack: a 429 whose Retry-After is within the cap is waited for and
// retried; one beyond it is thrown at once, with retryAfter.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createPaywall, isPaywallError } from "../dist/index.js";
import { startStack, observedFetch } from "./stack.mjs";

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

test("429 rate_limited: beyond the 30 s cap thrown at once with retryAfter; within it, waited for and retried", async () => {
  const token = await stack.token("hasty");
  const observed = observedFetch();
  const paywall = createPaywall({ baseUrl: stack.baseUrl, getToken: () => token, fetch: observed.fetch });

  // Ten checkouts in a second: the same open session each time, and the minute's calls spent.
  for (let i = 0; i < 10; i++) await paywall.checkout("monthly");
  assert.ok(observed.seen.every((s) => s.status === 200));

  const started = Date.now();
  await assert.rejects(paywall.checkout("monthly"), (e) => {
    assert.ok(isPaywallError(e, "rate_limited"), `got ${e}`);
    assert.equal(e.status, 429);
    assert.ok(e.retryAfter > 30 && e.retryAfter <= 60, `retryAfter ${e.retryAfter}`);
    return true;
  });
  assert.ok(Date.now() - started < 5000, "a Retry-After beyond the cap is not waited for");
  assert.equal(observed.seen.length, 11, "nor retried");

  // 55 s later on the stack's clock, the oldest call leaves the window within 5 s (less
  // what the calls above took).
  await stack.moveClock("55s");
  observed.seen.length = 0;
  const url = await paywall.checkout("monthly");
  assert.match(url, /\/dodo\/checkout\/cks_/);
  const [limited, ...rest] = observed.seen;
  assert.equal(limited.status, 429);
  const retryAfter = Number(limited.response.get("retry-after"));
  assert.ok(retryAfter >= 1 && retryAfter <= 5, `Retry-After ${retryAfter}`);
  assert.equal(rest.at(-1).status, 200);
  assert.ok(
    rest[0].at - limited.at >= retryAfter * 1000,
    `the retry came ${rest[0].at - limited.at} ms after a Retry-After of ${retryAfter} s`,
  );
});
