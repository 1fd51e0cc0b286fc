// Timeouts and retries against loopback stand-ins of a failing server. The SDK speaks https
// only, so the stand-in's plain-http address is reached through the `fetch` option.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { ExisOneClient, ExisOneError } from '../dist/esm/index.js';

async function standIn(answers) {
  const seen = [];
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      seen.push({ at: Date.now(), method: request.method, url: request.url, body, idempotencyKey: request.headers['idempotency-key'] });
      const answer = answers.shift() ?? { status: 500, body: '{}' };
      if (answer.hang) return; // never answers: the client's timeout must fire
      response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      response.end(answer.body);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const viaStandIn = (url, init) => fetch(String(url).replace('https://stand-in', `http://127.0.0.1:${port}`), init);
  return { seen, server, port, viaStandIn };
}

const OK = { status: 200, body: JSON.stringify({ isValid: true, status: 'licensed', features: ['A'] }) };
const UNAVAILABLE = (retryAfter) => ({ status: 503, headers: retryAfter === undefined ? {} : { 'retry-after': retryAfter }, body: '{"error":"unavailable"}' });

test('503 is retried, honouring Retry-After', async () => {
  const { seen, server, viaStandIn } = await standIn([UNAVAILABLE('1'), UNAVAILABLE(), OK]);
  try {
    const client = new ExisOneClient({ baseUrl: 'https://stand-in', accessToken: 't', fetch: viaStandIn, backoffMs: 10 });
    const result = await client.validate({ activationKey: 'K', hardwareId: 'H' });
    assert.equal(result.isValid, true);
    assert.equal(seen.length, 3);
    assert.ok(seen[1].at - seen[0].at >= 950, `waited ${seen[1].at - seen[0].at} ms for Retry-After: 1`);
    assert.ok(seen[2].at - seen[1].at < 900);
  } finally {
    server.close();
  }
});

test('a Retry-After beyond the limit, or the last attempt, hands the 503 back', async () => {
  const { seen, server, viaStandIn } = await standIn([UNAVAILABLE('120'), UNAVAILABLE('0'), UNAVAILABLE('0'), UNAVAILABLE('0')]);
  try {
    const client = new ExisOneClient({ baseUrl: 'https://stand-in', accessToken: 't', fetch: viaStandIn });
    await assert.rejects(client.validate({ activationKey: 'K', hardwareId: 'H' }), (error) => error instanceof ExisOneError && error.status === 503);
    assert.equal(seen.length, 1);
    const result = await client.validateApiKey({ apiKey: 'qgk_x', consumeUnits: false }).catch((error) => error);
    assert.equal(result.status, 503);
    assert.equal(seen.length, 4); // 1 + 2 retries
  } finally {
    server.close();
  }
});

test('refused connections are retried with backoff, then throw a network error; activate answers a result', async () => {
  const { server, viaStandIn } = await standIn([]);
  await new Promise((resolve) => server.close(resolve)); // nothing listens there any more
  const client = new ExisOneClient({ baseUrl: 'https://stand-in', accessToken: 't', fetch: viaStandIn, retries: 2, backoffMs: 20 });
  const started = Date.now();
  await assert.rejects(client.validate({ activationKey: 'K', hardwareId: 'H' }), (error) => error instanceof ExisOneError && error.isNetworkError);
  assert.ok(Date.now() - started >= 55, 'backed off 20 + 40 ms');
  const activated = await client.activate({ activationKey: 'K', email: 'e', hardwareId: 'H', productName: 'P' });
  assert.equal(activated.success, false);
  assert.match(activated.errorMessage, /Network error/);
  const smart = await client.validateSmart({ activationKey: 'ABCD-EFGH-JKMN-PQRS', hardwareId: 'H' });
  assert.deepEqual([smart.isValid, smart.status, smart.wasOffline], [false, 'offline', true]);
  const deactivated = await client.deactivateSmart({ activationKey: 'K', hardwareId: 'H', productName: 'P' });
  assert.deepEqual([deactivated.success, deactivated.serverNotified], [true, false]);
});

test('timeouts: a consume that may have arrived is not replayed without an Idempotency-Key', async () => {
  const { seen, server, viaStandIn } = await standIn([{ hang: true }, { hang: true }, { hang: true }, OK]);
  try {
    const client = new ExisOneClient({ baseUrl: 'https://stand-in', accessToken: 't', fetch: viaStandIn, timeoutMs: 150, backoffMs: 1 });
    await assert.rejects(client.validateApiKey({ apiKey: 'qgk_x', units: 2 }), (error) => error.isNetworkError && /timed out/.test(error.message));
    assert.equal(seen.length, 1);
    const answer = await client.validateApiKey({ apiKey: 'qgk_x', units: 2, idempotencyKey: 'job-9' });
    assert.equal(answer.isValid, true); // replay-safe: retried twice after timeouts, then answered
    assert.equal(seen.length, 4);
    assert.deepEqual(seen.slice(1).map((s) => s.idempotencyKey), ['job-9', 'job-9', 'job-9']);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
