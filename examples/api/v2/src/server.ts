// The new API (v2) of the API runbook demo: the v1 contract on Node's http module.
//
// Configuration, from the environment: PORT, JWT_SECRETS ("web:...,mobile:...", a secret per
// key id, as v1) and RELEASE. Release 2.0.0 is the one that shipped with a rounding bug
// (Math.round rounds halves up, where v1's Python rounds them to even); 2.0.1 has the fix.
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { createServer, IncomingMessage, ServerResponse } from "node:http";

const VERSION = process.env.RELEASE ?? "2.0.1";
const CATALOG = ["starter-kit", "refill-pack", "gift-card", "premium-plan", "travel-case", "bundle"];

type Claims = { sub: string };
type Json = Record<string, unknown>;

function secretsFrom(spec: string): Map<string, Buffer> {
  const secrets = new Map<string, Buffer>();
  for (const item of spec.split(",").filter(Boolean)) {
    const at = item.indexOf(":");
    secrets.set(item.slice(0, at), Buffer.from(item.slice(at + 1)));
  }
  return secrets;
}

const SECRETS = secretsFrom(process.env.JWT_SECRETS ?? "");

class Unauthorized extends Error {}

function verify(authorization: string | undefined): Claims {
  if (!authorization?.startsWith("Bearer ")) throw new Unauthorized("a Bearer token is required");
  const parts = authorization.slice(7).split(".");
  let header: { alg?: string; kid?: string };
  try {
    header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  } catch {
    throw new Unauthorized("the token is malformed");
  }
  const secret = SECRETS.get(header.kid ?? "");
  if (parts.length !== 3 || secret === undefined) throw new Unauthorized("the token is malformed");
  const expected = createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (header.alg !== "HS256" || given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new Unauthorized("the token's signature is not valid");
  }
  return JSON.parse(Buffer.from(parts[1], "base64url").toString()) as Claims;
}

function stableNumber(text: string): number {
  return createHash("sha256").update(text).digest().readUInt32BE(0);
}

function usage(user: string): Json {
  const number = stableNumber(user);
  return { user, predictions: number % 500, segments: number % 40, plan: "pro" };
}

function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

// The planted bug of release 2.0.0, kept so the demo can show shadow mode catching it.
const roundHalf = VERSION === "2.0.0" ? Math.round : roundHalfEven;

function segmentOf(spend: number, visits: number): string {
  if (spend >= 500 && visits >= 10) return "loyal";
  if (visits <= 1) return "new";
  return spend < 50 ? "at-risk" : "regular";
}

function send(res: ServerResponse, status: number, value: Json, type = "application/json"): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { "Content-Type": type, "Content-Length": body.length });
  res.end(body);
}

function handle(req: IncomingMessage, body: string, res: ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://v2");
  const route = `${req.method} ${url.pathname}`;
  if (route === "GET /api/v1/health") return send(res, 200, { status: "ok", version: VERSION });
  const known = [
    "GET /api/v1/usage",
    "POST /api/v1/predict",
    "POST /api/v1/segment",
    "GET /api/v1/recommendations",
  ];
  if (!known.includes(route)) {
    return send(res, 404, { type: "about:blank", title: "Not Found", status: 404 }, "application/problem+json");
  }
  const user = verify(req.headers.authorization).sub;
  if (route === "GET /api/v1/usage") return send(res, 200, usage(user));
  if (route === "GET /api/v1/recommendations") {
    const limit = Number(url.searchParams.get("limit") ?? "3");
    const start = stableNumber(user) % CATALOG.length;
    const items = Array.from({ length: limit }, (_, offset) => CATALOG[(start + offset) % CATALOG.length]);
    return send(res, 200, { user, items });
  }
  const request = JSON.parse(body);
  if (route === "POST /api/v1/predict") {
    const { age, segment, visits } = request.features;
    const churn = 1 / (1 + Math.exp(0.08 * visits + 0.01 * age - 2));
    // Three decimals where v1 gives four: within the 10% the runbook allows.
    return send(res, 200, {
      churn_probability: Math.round(churn * 1000) / 1000,
      expected_orders: roundHalf(visits / 2),
      segment,
    });
  }
  const customers = request.customers as { id: string; spend: number; visits: number }[];
  const segments = customers.map((c) => ({ id: c.id, segment: segmentOf(c.spend, c.visits) }));
  segments.sort((a, b) => a.id.localeCompare(b.id)); // v1 keeps the request's order
  return send(res, 200, { segments });
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    try {
      handle(req, Buffer.concat(chunks).toString(), res);
    } catch (error) {
      const status = error instanceof Unauthorized ? 401 : 400;
      const title = status === 401 ? "Unauthorized" : "Bad Request";
      send(res, status, { type: "about:blank", title, status, detail: String((error as Error).message) }, "application/problem+json");
    }
  });
});

server.listen(Number(process.env.PORT ?? "3000"), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
