// Bundles the example into dist/ (app.js and index.html), as a founder's build would:
// minified, production React. Prints what the browser downloads.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

await build({
  absWorkingDir: root,
  entryPoints: ["src/main.tsx"],
  outfile: "dist/app.js",
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  // dodo-paywall is a file: link to clients/typescript, whose node_modules hold a dev copy
  // of React: an alias is resolved from this folder, so the app bundles one React (two
  // copies break hooks). An app that installs dodo-paywall from the registry needs none.
  alias: { react: "react", "react-dom": "react-dom" },
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
copyFileSync(join(root, "index.html"), join(dist, "index.html"));

const code = readFileSync(join(dist, "app.js"));
console.log(`dist/app.js: ${code.length} B minified, ${gzipSync(code, { level: 9 }).length} B min+gzip`);
