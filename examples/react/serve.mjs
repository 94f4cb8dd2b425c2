// A tiny static server for dist/: the example on its own origin, as a founder's frontend is
// (another origin than the API). `npm run serve` (PORT, default 5173); the browser test
// imports serveDist.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, sep, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
  ".css": "text/css; charset=utf-8",
};

/** Serves `root` on 127.0.0.1:`port` (0: any free port); resolves to the listening server. */
export function serveDist(root, port = 0) {
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url, "http://localhost").pathname);
    // Only files under root; any other path is the app (it reads its state from the URL).
    const file = normalize(join(root, path === "/" ? "index.html" : path));
    const inside = file.startsWith(root + sep);
    let body;
    let type;
    try {
      if (!inside) throw new Error("outside");
      body = await readFile(file);
      type = TYPES[extname(file)] ?? "application/octet-stream";
    } catch {
      body = await readFile(join(root, "index.html"));
      type = TYPES[".html"];
    }
    response.writeHead(200, { "Content-Type": type, "Cache-Control": "no-cache" });
    response.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = join(dirname(fileURLToPath(import.meta.url)), "dist");
  const server = await serveDist(root, Number(process.env.PORT ?? 5173));
  const { port } = server.address();
  console.log(`The example: http://127.0.0.1:${port}/?api=http://127.0.0.1:3000 (Ctrl-C stops)`);
}
