// Prints each entry's size as an app would ship it: bundled (its own imports included, peer
// dependencies such as react left out), minified, then gzipped.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const entries = [
  [".", "src/index.ts"],
  ["./react", "src/react.tsx"],
  ["./server", "src/server.ts"],
];
for (const [name, file] of entries) {
  if (!existsSync(join(root, file))) {
    console.log(`dodo-paywall${name.slice(1)}: (no ${file} yet)`);
    continue;
  }
  const result = await build({
    absWorkingDir: root,
    entryPoints: [file],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    external: ["react", "react/*", "react-dom", "node:*"],
    write: false,
    logLevel: "error",
  });
  const code = result.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`dodo-paywall${name.slice(1)}: ${code.length} B minified, ${gz} B min+gzip`);
}
