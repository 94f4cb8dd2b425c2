// What the browser tests share: the real local server (`make dev`'s binary) on a free port
// with a fresh state folder, and Debian's headless Chromium.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const serverBinary = process.env.PAYWALL_DEV_BIN || join(root, "target", "debug", "dev");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const screenshots = join(root, "target", "e2e");

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
 * Starts the local server on a free port with a fresh state folder (and `env` on top) and
 * resolves once it says "Ready.": `{ url, stop }`, where `stop()` sends Ctrl-C, waits for a
 * clean exit and removes the state folder.
 */
export async function startServer(env = {}) {
  assert.ok(existsSync(serverBinary), `${serverBinary} is missing: run \`cargo build --bins\` first (make test does)`);
  const stateDir = mkdtempSync(join(tmpdir(), "paywall-e2e-"));
  const port = await freePort();
  const child = await new Promise((resolve, reject) => {
    const child = spawn(serverBinary, ["serve"], {
      env: { ...process.env, PORT: String(port), PAYWALL_STATE_DIR: stateDir, DODO_PAYMENTS_API_KEY: "", ...env },
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
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGINT"); // Ctrl-C: the server stops cleanly
      await exited;
    }
    rmSync(stateDir, { recursive: true, force: true });
  };
  return { url: `http://127.0.0.1:${port}`, stop };
}

/** Debian's Chromium, headless, quiet (no background calls of its own). */
export function launchChromium() {
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: install Debian's chromium package, or set CHROMIUM_PATH`);
  mkdirSync(screenshots, { recursive: true });
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}
