// The new service the proxy tests put behind `cutover proxy`: Node's http module, with the
// differences the tests look for (a renamed total, 401 on /auth, 500 on /status/5xx).
"use strict";
const http = require("http");

const received = [];
let shadowCopies = 0;

function json(res, status, value, extra) {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": body.length, "X-Arm": "new", ...(extra || {}) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("latin1");
    if (req.headers["x-cutover-shadow"] === "1") shadowCopies++;
    const seen = { arm: "new", method: req.method, path: url.pathname, query: url.search.slice(1),
      headers: Object.entries(req.headers), body };
    received.push(seen);
    let m;
    if (url.pathname === "/echo" || url.pathname.startsWith("/echo/")) return json(res, 200, seen, { "Set-Cookie": "s=new" });
    if ((m = url.pathname.match(/^\/users\/(\d+)$/))) {
      const id = Number(m[1]);
      // The planted difference: user 7's total is rounded.
      return json(res, 200, { id, name: `user ${id}`, total: id === 7 ? Math.round(id * 1.5) : id * 1.5 });
    }
    if ((m = url.pathname.match(/^\/status\/(\d+)$/))) return json(res, Number(m[1]), { status: Number(m[1]) });
    if (url.pathname === "/slow") return setTimeout(() => json(res, 200, { slept: true }), Number(url.searchParams.get("ms") || 100));
    if (url.pathname === "/auth") return json(res, 401, { error: "unauthorized" });
    if (url.pathname === "/text") { res.writeHead(200, { "Content-Type": "text/plain" }); return res.end("plain text from new\n"); }
    if (url.pathname === "/seen") return json(res, 200, { received: received.slice(-10), shadowCopies });
    if (url.pathname === "/pid") return json(res, 200, { pid: process.pid });
    if (url.pathname === "/random") {
      // A request id differs on every call (noise); value differs only when asked (drift).
      return json(res, 200, { request_id: require("crypto").randomUUID(), value: url.searchParams.has("wrong") ? 43 : 42 });
    }
    return json(res, 404, { error: "not found" });
  });
});

server.keepAliveTimeout = 30000;
server.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("listening"));
