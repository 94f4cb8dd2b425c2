// createServerClient against the real local stack, which verifies /server SigV4 signatures
// as API Gateway's IAM authorization does (its own AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
// local/local, in us-east-1, service execute-api).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServerClient, isPaywallError } from "../dist/server.js";
import { startStack, observedFetch } from "./stack.mjs";

let stack;
let server;
let seen;
before(async () => {
  stack = await startStack();
  const observed = observedFetch();
  seen = observed.seen;
  server = createServerClient({
    baseUrl: stack.baseUrl,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    fetch: observed.fetch,
  });
});
after(async () => {
  await stack?.stop();
});

test("grant, usage counted once per idempotency key, user(), then revokeGrant", async () => {
  const user = "backend-user@example.com";
  const granted = await server.grant(user, { plan: "pro", days: 30, reason: "make-good for the outage" });
  assert.equal(granted.grant.plan, "pro");
  assert.equal(granted.grant.reason, "make-good for the outage");
  assert.match(granted.grant.by, /^arn:aws:iam::/);
  assert.equal(granted.entitlements.plan, "pro");
  assert.equal(granted.entitlements.source, "grant");
  const limit = granted.entitlements.limits.api_calls.limit;

  const first = await server.usage(user, "api_calls", 5, { idempotencyKey: "job-42" });
  assert.deepEqual(first, { allowed: true, remaining: limit - 5, replayed: false });
  const again = await server.usage(user, "api_calls", 5, { idempotencyKey: "job-42" });
  assert.deepEqual(again, { allowed: true, remaining: limit - 5, replayed: true }, "the same key consumes nothing more");
  // Without a key, each call is its own (a new random key).
  await server.usage(user, "api_calls", 1);
  const third = await server.usage(user, "api_calls", 1);
  assert.equal(third.remaining, limit - 7);
  assert.equal(seen.filter((s) => s.path === "/server/usage").length, 4, "one request each: nothing retried");
  await assert.rejects(
    server.usage(user, "api_calls", 6, { idempotencyKey: "job-42" }),
    (e) => isPaywallError(e, "idempotency_key_reused") && e.status === 409,
  );
  assert.deepEqual(await server.usage(user, "api_calls", limit, { idempotencyKey: "too-much" }), {
    allowed: false,
    remaining: limit - 7,
    replayed: false,
  });

  const record = await server.user(user);
  assert.equal(record.user_id, user);
  assert.equal(record.entitlements.plan, "pro");
  assert.equal(record.entitlements.limits.api_calls.used, 7);
  assert.equal(record.grant.plan, "pro");
  assert.ok(record.audit.entries.length >= 1);
  const page = await server.user(user, { limit: 1 });
  assert.equal(page.audit.entries.length, 1);

  const revoked = await server.revokeGrant(user, { reason: "outage credit ended" });
  assert.equal(revoked.revoked, true);
  assert.notEqual(revoked.entitlements.source, "grant");
  await assert.rejects(server.revokeGrant(user), (e) => isPaywallError(e, "no_grant") && e.status === 404);
  assert.equal((await server.user(user)).grant, null);
});

test("requests are SigV4-signed for execute-api in the region", async () => {
  await server.user("signed");
  const authorization = seen.at(-1).headers.get("authorization");
  assert.match(authorization, /^AWS4-HMAC-SHA256 Credential=local\/\d{8}\/us-east-1\/execute-api\/aws4_request, /);
});

test("a wrongly signed request is refused: 403 forbidden, as API Gateway answers", async () => {
  for (const credentials of [
    { accessKeyId: "local", secretAccessKey: "not-the-secret" },
    async () => ({ accessKeyId: "someone-else", secretAccessKey: "local" }),
  ]) {
    const wrong = createServerClient({ baseUrl: stack.baseUrl, region: "us-east-1", credentials });
    await assert.rejects(wrong.usage("victim", "api_calls", 1), (e) => {
      assert.ok(isPaywallError(e, "forbidden"), `got ${e}`);
      assert.equal(e.status, 403);
      return true;
    });
  }
  const wrongRegion = createServerClient({
    baseUrl: stack.baseUrl,
    region: "eu-west-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  await assert.rejects(wrongRegion.user("victim"), (e) => isPaywallError(e, "forbidden") && e.status === 403);
  const unsigned = await fetch(`${stack.baseUrl}/server/users/victim`);
  assert.equal(unsigned.status, 403);
});

test("a user id with characters that need encoding is signed and found", async () => {
  const user = "auth0|a b/c?d";
  await server.grant(user, { plan: "monthly", days: 1, reason: "encoding" });
  const record = await server.user(user);
  assert.equal(record.user_id, user);
  assert.equal(record.grant.plan, "monthly");
});
