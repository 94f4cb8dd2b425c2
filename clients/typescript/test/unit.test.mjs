// The clients' retry, back-off, ETag and address-bar behaviour with an injected fetch
// (scripted answers), where the real stack cannot be made to answer so: timings, network
// failures, and which requests may be resent. The API itself is tested in the other files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPaywall, isPaywallError } from "../dist/index.js";
import { createServerClient } from "../dist/server.js";

const json = (status, body, headers = {}) =>
  new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
const busy = (headers) => json(503, { error: { code: "busy", message: "busy" } }, headers);
const noStatus = { has_paid: false, status: "none" };

/** A fetch that answers from a script (a Response, an Error to throw, or a function of the request). */
function scripted(...answers) {
  const requests = [];
  const fetch = async (input, init) => {
    const request = new Request(input, init);
    requests.push({ request, at: Date.now(), body: request.body ? await request.clone().text() : undefined });
    const next = answers.shift();
    assert.ok(next !== undefined, `an unexpected request: ${request.method} ${request.url}`);
    if (next instanceof Error) throw next;
    return typeof next === "function" ? next(request) : next;
  };
  return { fetch, requests };
}

const client = (fetch, options = {}) =>
  createPaywall({ baseUrl: "https://api.example.test/", getToken: () => "jwt-a", fetch, ...options });

test("a 503 with Retry-After is retried after that many seconds", async () => {
  const { fetch, requests } = scripted(busy({ "retry-after": "1" }), json(200, noStatus));
  assert.equal((await client(fetch).status()).status, "none");
  assert.equal(requests.length, 2);
  const waited = requests[1].at - requests[0].at;
  assert.ok(waited >= 1000 && waited < 2500, `waited ${waited} ms`);
  assert.equal(requests[0].request.url, "https://api.example.test/payment/status");
  assert.equal(requests[0].request.headers.get("authorization"), "Bearer jwt-a");
});

test("without Retry-After the back-off grows exponentially, with jitter, and gives up after `retries`", async () => {
  const limited = () => json(429, { error: { code: "rate_limited", message: "slow down" } });
  const { fetch, requests } = scripted(limited(), limited(), limited(), limited());
  await assert.rejects(client(fetch).entitlements(), (e) => isPaywallError(e, "rate_limited") && e.status === 429);
  assert.equal(requests.length, 4, "the first try and 3 retries");
  const gaps = requests.slice(1).map((r, i) => r.at - requests[i].at);
  // 125–250 ms, 250–500 ms, 500–1000 ms (timers may fire late on a busy machine, never early).
  assert.ok(gaps[0] >= 120 && gaps[0] < 750, `gaps ${gaps}`);
  assert.ok(gaps[1] >= 245 && gaps[1] < 1000, `gaps ${gaps}`);
  assert.ok(gaps[2] >= 495 && gaps[2] < 1800, `gaps ${gaps}`);
});

test("a Retry-After beyond the 30 s cap is thrown at once, with retryAfter", async () => {
  const { fetch, requests } = scripted(
    json(429, { error: { code: "rate_limited", message: "later", request_id: "req-1" } }, { "retry-after": "45" }),
  );
  const started = Date.now();
  await assert.rejects(client(fetch).checkout("pro"), (e) => {
    assert.ok(isPaywallError(e, "rate_limited"));
    assert.equal(e.retryAfter, 45);
    assert.equal(e.requestId, "req-1");
    return true;
  });
  assert.equal(requests.length, 1);
  assert.ok(Date.now() - started < 500);
});

test("other errors are not retried, and keep the API's code and Dodo's", async () => {
  const { fetch, requests } = scripted(
    json(409, { error: { code: "change_refused", message: "no", dodo_code: "card_declined" } }),
  );
  await assert.rejects(client(fetch).changePlan("team"), (e) => {
    assert.ok(isPaywallError(e, "change_refused"));
    assert.equal(e.dodoCode, "card_declined");
    assert.equal(e.status, 409);
    return true;
  });
  assert.equal(requests.length, 1);
  assert.deepEqual(JSON.parse(requests[0].body), { plan: "team" });
});

test("API Gateway's own refusals (no code) are typed by status", async () => {
  const { fetch } = scripted(json(401, { message: "Unauthorized" }), json(429, { message: "Too Many Requests" }, { "retry-after": "99" }));
  await assert.rejects(client(fetch).status(), (e) => isPaywallError(e, "unauthorized") && e.message === "Unauthorized");
  await assert.rejects(client(fetch).status(), (e) => isPaywallError(e, "rate_limited") && e.retryAfter === 99);
});

test("network failures: reads and idempotent writes are retried; checkout and plan changes are not", async () => {
  const down = () => new TypeError("fetch failed");
  let s = scripted(down(), json(200, noStatus));
  assert.equal((await client(s.fetch).status()).status, "none");
  assert.equal(s.requests.length, 2);

  s = scripted(down(), json(200, { ...noStatus, cancel_at_period_end: true }));
  assert.equal((await client(s.fetch).cancel()).cancel_at_period_end, true);
  assert.equal(s.requests.length, 2);

  for (const call of [(p) => p.checkout("pro"), (p) => p.changePlan("team"), (p) => p.portal()]) {
    s = scripted(down());
    await assert.rejects(call(client(s.fetch)), (e) => isPaywallError(e, "network_error") && e.status === 0 && e.cause instanceof TypeError);
    assert.equal(s.requests.length, 1);
  }

  s = scripted(down(), down(), down(), down());
  await assert.rejects(client(s.fetch).entitlements(), (e) => isPaywallError(e, "network_error"));
  assert.equal(s.requests.length, 4);
});

test("ETag: 304 answers the cached body; a different token sends no If-None-Match", async () => {
  let token = "jwt-a";
  const { fetch, requests } = scripted(
    json(200, { plan: "pro", features: ["export"] }, { etag: '"v1"' }),
    new Response(null, { status: 304, headers: { etag: '"v1"' } }),
    json(200, { plan: null, features: [] }, { etag: '"v9"' }),
  );
  const paywall = client(fetch, { getToken: () => token });
  const first = await paywall.entitlements();
  assert.deepEqual(await paywall.entitlements(), first);
  assert.equal(requests[1].request.headers.get("if-none-match"), '"v1"');
  token = "jwt-b";
  assert.deepEqual(await paywall.entitlements(), { plan: null, features: [] });
  assert.equal(requests[2].request.headers.get("if-none-match"), null);
  assert.equal(requests[2].request.headers.get("authorization"), "Bearer jwt-b");
});

test("getToken may be sync, async, or give nothing (then no request is made)", async () => {
  for (const getToken of [() => undefined, async () => null, () => ""]) {
    const { fetch, requests } = scripted();
    await assert.rejects(client(fetch, { getToken }).status(), (e) => isPaywallError(e, "unauthorized"));
    assert.equal(requests.length, 0);
  }
});

test("confirmReturn reads the page's address, confirms, and takes payment_id and status off it", async () => {
  const replaced = [];
  globalThis.location = { href: "https://app.example.test/account?tab=billing&payment_id=pay_123&status=succeeded#top", assign() {} };
  globalThis.history = { state: { k: 1 }, replaceState: (...args) => replaced.push(args) };
  try {
    const { fetch, requests } = scripted(
      json(202, { status: "pending" }),
      json(200, { status: "success", has_paid: true, message: "payment confirmed" }),
    );
    const answer = await client(fetch).confirmReturn();
    assert.equal(answer.status, "success");
    assert.equal(requests.length, 2, "a pending payment is asked about again");
    assert.deepEqual(JSON.parse(requests[0].body), { payment_id: "pay_123" });
    assert.equal(requests[0].request.url, "https://api.example.test/payment/success");
    assert.deepEqual(replaced, [[{ k: 1 }, "", "/account?tab=billing#top"]]);

    // Nothing to confirm: no request, the address left alone.
    globalThis.location.href = "https://app.example.test/account";
    assert.equal(await client(scripted().fetch).confirmReturn(), null);
    assert.equal(replaced.length, 1);

    // A final refusal cleans the address too (a reload would only fail again).
    globalThis.location.href = "https://app.example.test/?payment_id=pay_9&status=failed";
    const refused = scripted(json(402, { error: { code: "payment_failed", message: "declined" } }));
    await assert.rejects(client(refused.fetch).confirmReturn(), (e) => isPaywallError(e, "payment_failed"));
    assert.equal(replaced.at(-1)[2], "/");
    const cleaned = replaced.length;

    // Not signed in yet (401): left for a reload after signing in.
    const unsigned = scripted(json(401, { message: "Unauthorized" }));
    await assert.rejects(client(unsigned.fetch).confirmReturn(), (e) => isPaywallError(e, "unauthorized"));
    assert.equal(replaced.length, cleaned);

    // Still pending after asking again at 1, 2 and 3 s: answered as pending, left on the address bar.
    const pending = () => json(202, { status: "pending" });
    const slow = scripted(pending(), pending(), pending(), pending());
    assert.deepEqual(await client(slow.fetch).confirmReturn(), { status: "pending" });
    assert.equal(slow.requests.length, 4);
    const waited = slow.requests[3].at - slow.requests[0].at;
    assert.ok(waited >= 6000 && waited < 9000, `waited ${waited} ms`);
    assert.equal(replaced.length, cleaned);
  } finally {
    delete globalThis.location;
    delete globalThis.history;
  }
});

test("redirectToCheckout sends the browser to the checkout URL", async () => {
  const assigned = [];
  globalThis.location = { href: "https://app.example.test/", assign: (url) => assigned.push(url) };
  try {
    const { fetch, requests } = scripted(
      json(200, { checkout_url: "https://pay.example.test/cks_1", plan: "pro", price: "$49", session_id: "cks_1" }),
    );
    await client(fetch).redirectToCheckout("pro", { datafastVisitorId: "v1" });
    assert.deepEqual(assigned, ["https://pay.example.test/cks_1"]);
    assert.deepEqual(JSON.parse(requests[0].body), { plan: "pro", datafast_visitor_id: "v1" });
  } finally {
    delete globalThis.location;
  }
});

test("redirectToCheckout outside a browser is invalid_request, and opens no checkout", async () => {
  const { fetch, requests } = scripted();
  await assert.rejects(client(fetch).redirectToCheckout("pro"), (e) => isPaywallError(e, "invalid_request"));
  assert.equal(requests.length, 0);
});

test("server usage: SigV4-signed, and every retry resends the same idempotency key", async () => {
  const { fetch, requests } = scripted(
    busy(),
    new TypeError("socket hang up"),
    json(200, { allowed: true, remaining: 7 }, { "idempotent-replayed": "true" }),
  );
  const server = createServerClient({
    baseUrl: "https://abc123.execute-api.eu-west-1.amazonaws.com",
    credentials: async () => ({ accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret", sessionToken: "tok" }),
    fetch,
  });
  const answer = await server.usage("user/1", "api_calls", 3);
  assert.deepEqual(answer, { allowed: true, remaining: 7, replayed: true });
  assert.equal(requests.length, 3);
  const keys = requests.map((r) => JSON.parse(r.body).idempotency_key);
  assert.match(keys[0], /^[0-9a-f-]{36}$/);
  assert.deepEqual(new Set(keys).size, 1);
  for (const { request } of requests) {
    assert.match(
      request.headers.get("authorization"),
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/,
    );
    assert.equal(request.headers.get("x-amz-security-token"), "tok");
  }
});

test("server grant and revoke are not resent after a network failure; user() is", async () => {
  const server = (fetch) =>
    createServerClient({ baseUrl: "http://127.0.0.1:9", region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, fetch });
  let s = scripted(new TypeError("reset"));
  await assert.rejects(server(s.fetch).grant("u", { plan: "pro", days: 3, reason: "make-good" }), (e) => isPaywallError(e, "network_error"));
  assert.equal(s.requests.length, 1);
  s = scripted(new TypeError("reset"));
  await assert.rejects(server(s.fetch).revokeGrant("u"), (e) => isPaywallError(e, "network_error"));
  assert.equal(s.requests.length, 1);
  s = scripted(new TypeError("reset"), json(200, { user_id: "a b" }));
  assert.equal((await server(s.fetch).user("a b", { limit: 5 })).user_id, "a b");
  assert.equal(s.requests[1].request.url, "http://127.0.0.1:9/server/users/a%20b?limit=5");
});

test("server credentials default to the AWS_* environment variables", async () => {
  const saved = { ...process.env };
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: "AKIDENV", AWS_SECRET_ACCESS_KEY: "s", AWS_REGION: "ap-south-1" });
  delete process.env.AWS_SESSION_TOKEN;
  try {
    const { fetch, requests } = scripted(json(200, { user_id: "u" }));
    await createServerClient({ baseUrl: "http://127.0.0.1:9", fetch }).user("u");
    assert.match(requests[0].request.headers.get("authorization"), /Credential=AKIDENV\/\d{8}\/ap-south-1\/execute-api\//);
    delete process.env.AWS_ACCESS_KEY_ID;
    await assert.rejects(
      createServerClient({ baseUrl: "http://127.0.0.1:9", fetch }).user("u"),
      (e) => isPaywallError(e, "credentials_unavailable") && e.status === 0,
    );
    assert.equal(requests.length, 1);
  } finally {
    process.env = saved;
  }
});

// API Gateway's own 503 (its integration timed out: the function may have done the work):
// no `{"error": {"code"}}`, unlike the API's busy and store_unavailable.
const gateway503 = () => json(503, { message: "Service Unavailable" });
const storeDown = () => json(503, { error: { code: "store_unavailable", message: "retry" } });

test("a 503 without the API's code is not retried for checkout, portal and plan changes; reads retry any 503", async () => {
  for (const call of [(p) => p.checkout("pro"), (p) => p.changePlan("team"), (p) => p.portal()]) {
    const s = scripted(gateway503());
    await assert.rejects(call(client(s.fetch)), (e) => {
      // The body read to decide is still there for the error.
      assert.ok(isPaywallError(e), String(e));
      assert.equal(e.status, 503);
      assert.equal(e.message, "Service Unavailable");
      return true;
    });
    assert.equal(s.requests.length, 1, "not resent");
  }
  // The API's own 503 changed nothing: retried even for a checkout.
  let s = scripted(busy(), storeDown(), json(200, { checkout_url: "https://pay.example.test/c", plan: "pro", price: "$49", session_id: "c" }));
  assert.equal(await client(s.fetch).checkout("pro"), "https://pay.example.test/c");
  assert.equal(s.requests.length, 3);
  // Dodo made the change but it was not stored: sent again, which stores it.
  const notStored = () => json(503, { error: { code: "changed_not_stored", message: "retry" } }, { "retry-after": "1" });
  const applied = { from: "pro", plan: "team", direction: "upgrade", effective_at: "immediately", payment_id: null, applied: true, status: noStatus };
  s = scripted(notStored(), json(200, applied));
  assert.equal((await client(s.fetch).changePlan("team")).applied, true);
  assert.equal(s.requests.length, 2);
  // A resend that then fails with a code meaning "nothing changed" never hides that Dodo acted.
  s = scripted(notStored(), busy(), storeDown(), busy());
  await assert.rejects(client(s.fetch, { retries: 3 }).changePlan("team"), (e) => isPaywallError(e, "changed_not_stored") && e.status === 503);
  assert.equal(s.requests.length, 4);
  // A later 4xx is about the state as it is now (the change in place): it stands.
  s = scripted(notStored(), json(409, { error: { code: "same_plan", message: "already on team" } }));
  await assert.rejects(client(s.fetch).changePlan("team"), (e) => isPaywallError(e, "same_plan") && e.status === 409);
  // Retried up to `retries`, then the last answer's error, its body intact.
  s = scripted(busy(), busy());
  await assert.rejects(client(s.fetch, { retries: 1 }).changePlan("team"), (e) => isPaywallError(e, "busy") && e.status === 503);
  assert.equal(s.requests.length, 2);
  // A read (and an idempotent write) may be sent again after any 503.
  s = scripted(gateway503(), json(200, noStatus));
  assert.equal((await client(s.fetch).status()).status, "none");
  s = scripted(gateway503(), json(200, noStatus));
  assert.equal((await client(s.fetch).cancel()).status, "none");
  assert.equal(s.requests.length, 2);
});

test("server grant and revoke retry a 429 and the API's own 503 only; user() any 503", async () => {
  const server = (fetch) =>
    createServerClient({ baseUrl: "http://127.0.0.1:9", region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, fetch });
  const grant = (c) => c.grant("u", { plan: "pro", days: 3, reason: "make-good" });
  const granted = () => json(200, { grant: { plan: "pro" }, entitlements: {} });
  let s = scripted(gateway503());
  await assert.rejects(grant(server(s.fetch)), (e) => isPaywallError(e) && e.status === 503);
  assert.equal(s.requests.length, 1);
  s = scripted(json(500, { error: { code: "internal_error", message: "x" } }, { "retry-after": "1" }));
  await assert.rejects(server(s.fetch).revokeGrant("u"), (e) => isPaywallError(e, "internal_error"));
  assert.equal(s.requests.length, 1, "a 5xx that may have revoked is not resent");
  s = scripted(storeDown(), json(429, { message: "Too Many Requests" }), granted());
  assert.equal((await grant(server(s.fetch))).grant.plan, "pro");
  assert.equal(s.requests.length, 3);
  s = scripted(gateway503(), json(200, { user_id: "u" }));
  assert.equal((await server(s.fetch).user("u")).user_id, "u");
  assert.equal(s.requests.length, 2);
});

test("server user ids `.`, `..` and empty are refused before any call (a URL would resolve them to another route)", async () => {
  const { fetch, requests } = scripted(json(200, { user_id: "a.b" }));
  const server = createServerClient({ baseUrl: "http://127.0.0.1:9", region: "us-east-1", credentials: { accessKeyId: "a", secretAccessKey: "b" }, fetch });
  for (const id of [".", "..", ""]) {
    await assert.rejects(server.user(id), (e) => isPaywallError(e, "invalid_request") && e.status === 0);
    await assert.rejects(server.grant(id, { plan: "pro", days: 1, reason: "r" }), (e) => isPaywallError(e, "invalid_request"));
    await assert.rejects(server.revokeGrant(id), (e) => isPaywallError(e, "invalid_request"));
  }
  assert.equal(requests.length, 0);
  await server.user("a.b");
  assert.equal(requests[0].request.url, "http://127.0.0.1:9/server/users/a.b");
});

test("server: a failing credentials provider or signer is a PaywallError (credentials_unavailable) with the cause, no secret", async () => {
  const { fetch, requests } = scripted();
  const cause = new Error("the SSO session has expired");
  let server = createServerClient({ baseUrl: "http://127.0.0.1:9", region: "us-east-1", credentials: async () => { throw cause; }, fetch });
  await assert.rejects(server.user("u"), (e) => {
    assert.ok(isPaywallError(e, "credentials_unavailable"), String(e));
    assert.equal(e.cause, cause);
    assert.equal(e.status, 0);
    assert.match(e.message, /SSO session has expired/);
    return true;
  });
  // aws4fetch refusing what it was handed: wrapped, its message (which could quote what it
  // was given) not repeated.
  server = createServerClient({
    baseUrl: "http://127.0.0.1:9",
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: { toString() { throw new Error("s3cr3t-value"); } } },
    fetch,
  });
  await assert.rejects(server.user("u"), (e) => {
    assert.ok(isPaywallError(e, "credentials_unavailable"), String(e));
    assert.ok(e.cause instanceof Error);
    assert.doesNotMatch(e.message, /s3cr3t/);
    return true;
  });
  assert.equal(requests.length, 0);
});

test("server: a custom domain without a region throws region_unknown instead of signing for us-east-1", async () => {
  const saved = { ...process.env };
  delete process.env.AWS_REGION;
  delete process.env.AWS_DEFAULT_REGION;
  try {
    let s = scripted();
    const options = { baseUrl: "https://paywall.example.com", credentials: { accessKeyId: "a", secretAccessKey: "b" } };
    await assert.rejects(createServerClient({ ...options, fetch: s.fetch }).user("u"), (e) => isPaywallError(e, "region_unknown") && /region/.test(e.message));
    assert.equal(s.requests.length, 0);
    process.env.AWS_DEFAULT_REGION = "eu-central-1";
    s = scripted(json(200, { user_id: "u" }));
    await createServerClient({ ...options, fetch: s.fetch }).user("u");
    assert.match(s.requests[0].request.headers.get("authorization"), /\/eu-central-1\/execute-api\//);
  } finally {
    process.env = saved;
  }
});

test("confirmReturn with no URL and no page answers null; a URL that does not parse is invalid_request", async () => {
  const { fetch, requests } = scripted();
  assert.equal(typeof globalThis.location, "undefined");
  assert.equal(await client(fetch).confirmReturn(), null);
  await assert.rejects(client(fetch).confirmReturn("not a url"), (e) => isPaywallError(e, "invalid_request") && e.cause instanceof TypeError);
  assert.equal(requests.length, 0);
});

test("a getToken that throws is unauthorized, with the cause, and no request", async () => {
  const { fetch, requests } = scripted();
  const cause = new Error("auth/network-request-failed");
  await assert.rejects(client(fetch, { getToken: async () => { throw cause; } }).entitlements(), (e) => isPaywallError(e, "unauthorized") && e.cause === cause);
  assert.equal(requests.length, 0);
});

test("confirmReturn leaves the app's own `status` on the address bar when it carries no payment_id", async () => {
  const replaced = [];
  globalThis.location = { href: "https://app.example.test/account?status=draft", assign() {} };
  globalThis.history = { state: null, replaceState: (...args) => replaced.push(args) };
  try {
    const { fetch } = scripted(json(200, { status: "success", has_paid: true, message: "payment confirmed" }));
    const answer = await client(fetch).confirmReturn("https://app.example.test/account?payment_id=pay_7&status=succeeded");
    assert.equal(answer.status, "success");
    assert.deepEqual(replaced, [], "the page's own status stays");
  } finally {
    delete globalThis.location;
    delete globalThis.history;
  }
});
