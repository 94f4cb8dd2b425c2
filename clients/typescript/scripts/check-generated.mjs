// Fails when src/api.ts is not what openapi-typescript makes of ../../openapi.yaml today:
// the client's types must never drift from the API contract (run `npm run generate`).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "dodo-paywall-api-"));
const fresh = join(dir, "api.ts");
try {
  execFileSync(
    process.execPath,
    [join(root, "node_modules/openapi-typescript/bin/cli.js"), join(root, "../../openapi.yaml"), "--output", fresh],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const committed = readFileSync(join(root, "src/api.ts"), "utf8");
  if (readFileSync(fresh, "utf8") !== committed) {
    console.error(
      "check-generated: src/api.ts differs from what openapi-typescript generates from openapi.yaml.\n" +
        "The client has drifted from the API: run `npm run generate` in clients/typescript and commit src/api.ts.",
    );
    process.exit(1);
  }
  console.log("check-generated: src/api.ts matches openapi.yaml");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
