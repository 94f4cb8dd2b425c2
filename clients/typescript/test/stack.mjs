// The real local stack (`dev serve`, make dev's binary) on a free port with a fresh state
// folder, for the client's tests: no mock of the API anywhere.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
// make test's build: PAYWALL_DEV_BIN, else cargo's target folder (CARGO_TARGET_DIR or the repo's).
export const serverBinary =
  process.env.PAYWALL_DEV_BIN || join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "dev");

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

/**
 * Starts the stack; answers `{ baseUrl, token(sub, email?), pay(checkoutUrl), moveClock(advance), faults(faults),
 * failDatabase(operations), stop() }`.
 * The server verifies /server/* signatures with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
 * `local`/`local` in us-east-1, as make dev and CI set them.
 */
export async function startStack() {
  assert.ok(existsSync(serverBinary), `${serverBinary} is missing: run \`cargo build --bins\` first (make test does), or set PAYWALL_DEV_BIN`);
  const stateDir = mkdtempSync(join(tmpdir(), "dodo-paywall-client-"));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const child = spawn(serverBinary, ["serve"], {
    env: {
      ...process.env,
      PORT: String(port),
      PAYWALL_STATE_DIR: stateDir,
      DODO_PAYMENTS_API_KEY: "",
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "local",
      AWS_SECRET_ACCESS_KEY: "local",
      AWS_EC2_METADATA_DISABLED: "true",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  await new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error("the local server did not start:\n" + output)), 30000);
    const collect = (chunk) => {
      output += chunk;
      if (output.includes("Ready.")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the local server exited (${code}):\n${output}`));
    });
  });
  // Keep draining its log so that the pipe never fills and blocks it.
  child.stdout.resume();
  child.stderr.resume();

  const json = async (path, init) => {
    const response = await fetch(baseUrl + path, init);
    const body = await response.json();
    assert.ok(response.ok, `${path}: ${response.status} ${JSON.stringify(body)}`);
    return body;
  };

  return {
    baseUrl,
    /** A user's JWT, as the identity provider would give it (e-mail verified). */
    async token(sub, email = `${sub}@example.com`) {
      return (await json(`/dev/token?${new URLSearchParams({ sub, email })}`)).token;
    },
    /**
     * Presses Pay on the Dodo simulator's checkout page (its form POST) and answers where
     * Dodo sends the buyer back: the return URL with `payment_id` and `status`.
     */
    async pay(checkoutUrl) {
      const response = await fetch(checkoutUrl, {
        method: "POST",
        body: new URLSearchParams({ outcome: "succeeded" }),
        redirect: "manual",
      });
      assert.equal(response.status, 303, `paying at ${checkoutUrl}: ${response.status} ${await response.text()}`);
      return response.headers.get("location");
    },
    /** Moves the stack's test clock forward (`"58s"`, `"1d"`). */
    async moveClock(advance) {
      return json("/dev/clock", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ advance }),
      });
    },
    /** Sets the Dodo simulator's faults (`{ drop_webhooks: 1 }`; `{}` resets them). */
    async faults(faults) {
      return json("/dev/faults", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(faults),
      });
    },
    /** Makes these DynamoDB operations fail (`["TransactWriteItems"]`; `[]` heals). */
    async failDatabase(operations) {
      return json("/dev/database", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ failing: operations }),
      });
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGINT");
        await exited;
      }
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** A fetch that records each request (method, path, headers) and its answer's status. */
export function observedFetch() {
  const seen = [];
  const fetchImpl = async (input, init) => {
    const request = new Request(input, init);
    const entry = { method: request.method, path: new URL(request.url).pathname, headers: request.headers, at: Date.now() };
    seen.push(entry);
    const response = await fetch(request);
    entry.status = response.status;
    entry.response = response.headers;
    return response;
  };
  return { fetch: fetchImpl, seen };
}
