// An OpenFeature client in Node, on the OFREP provider, driven line by line from stdin (JSON in,
// JSON out), so that one process answers every question a test asks of it.
import { createInterface } from 'node:readline';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPApi } from '@openfeature/ofrep-core';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const [baseUrl, token] = process.argv.slice(2);
const providers = {
  viewer: { Authorization: `Bearer ${token}` },
  wrong: { Authorization: 'Bearer cut_not-a-token' },
  none: {},
};
for (const [domain, headers] of Object.entries(providers)) {
  await OpenFeature.setProviderAndWait(domain, new OFREPProvider({ baseUrl, headers }));
}

// Evaluate every [flag, unit] pair, a bounded number in flight at a time.
async function evaluate(client, pairs, inFlight = 32) {
  const out = new Array(pairs.length);
  let next = 0;
  async function worker() {
    while (next < pairs.length) {
      const i = next++;
      const [flag, unit] = pairs[i];
      const details = await client.getBooleanDetails(flag, false, { targetingKey: unit });
      out[i] = details.errorCode
        ? { error: details.errorCode, message: details.errorMessage }
        : { variant: details.variant, value: details.value, reason: details.reason };
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  return out;
}

async function watch(client, { flag, unit, expect, intervalMs, timeoutMs }) {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    const details = await client.getBooleanDetails(flag, !expect, { targetingKey: unit });
    if (details.value === expect && !details.errorCode) return { seenAfterMs: Date.now() - started };
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return { seenAfterMs: null };
}

// How a static-context provider polls: the bulk evaluation with the last ETag, 304 until a state
// changes; how many 304s it saw, and when the flag's new value arrived.
async function watchBulk({ flag, unit, expect, intervalMs, timeoutMs }) {
  const ofrep = new OFREPApi(baseUrl);
  const request = { context: { targetingKey: unit } };
  const started = Date.now();
  let etag = null;
  let notModified = 0;
  while (Date.now() - started < timeoutMs) {
    const headers = { ...providers.viewer, ...(etag ? { 'If-None-Match': etag } : {}) };
    const result = await ofrep.postBulkEvaluateFlags(request, { headers });
    if (result.httpStatus === 304) notModified += 1;
    else {
      etag = result.httpResponse.headers.get('etag');
      const found = result.value.flags.find((f) => f.key === flag);
      if (found && found.value === expect) return { seenAfterMs: Date.now() - started, notModified };
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return { seenAfterMs: null, notModified };
}

// The protocol as ofrep-core's client sees it: statuses, bodies, the bulk ETag, error classes.
async function api({ flag, unit, auth }) {
  const ofrep = new OFREPApi(baseUrl);
  const request = { context: { targetingKey: unit } };
  const calls = {
    single: (headers) => ofrep.postEvaluateFlags(flag, request, { headers }),
    bulk: (headers) => ofrep.postBulkEvaluateFlags(request, { headers }),
  };
  const out = {};
  for (const [name, call] of Object.entries(calls)) {
    try {
      const result = await call(providers[auth]);
      const etag = result.httpResponse?.headers.get('etag') ?? null;
      out[name] = { status: result.httpStatus, value: result.value ?? null, etag };
      if (name === 'bulk' && etag) {
        const again = await call({ ...providers[auth], 'If-None-Match': etag });
        out.bulkAgain = { status: again.httpStatus, value: again.value ?? null };
      }
    } catch (error) {
      out[name] = { errorClass: error.constructor.name, status: error.response?.status ?? null };
    }
  }
  return out;
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ready: true }) + '\n');
for await (const line of lines) {
  const ask = JSON.parse(line);
  const client = OpenFeature.getClient(ask.domain ?? 'viewer');
  let answer;
  if (ask.op === 'evaluate') answer = { results: await evaluate(client, ask.pairs) };
  else if (ask.op === 'watch') answer = await watch(client, ask);
  else if (ask.op === 'api') answer = await api(ask);
  else if (ask.op === 'watchBulk') answer = await watchBulk(ask);
  else answer = { error: `unknown op ${ask.op}` };
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await OpenFeature.close();
