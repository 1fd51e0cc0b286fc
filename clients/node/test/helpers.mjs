// What the gateway tests share: the gateway the Python test harness started, and an admin
// client for setting things up (plain fetch, so setup never depends on the SDK under test).
export const gateway = {
  baseUrl: process.env.EXISONE_TEST_BASEURL,
  token: process.env.EXISONE_TEST_TOKEN,
  org: process.env.EXISONE_TEST_ORG,
};

// `npm test` alone has no gateway: tests/client/test_node_sdk.py starts one (real Redis and
// PostgreSQL, HTTPS with a self-signed certificate trusted through NODE_EXTRA_CA_CERTS).
export const needsGateway = gateway.baseUrl
  ? false
  : 'no gateway: run through tests/client/test_node_sdk.py (make test), which starts one and sets EXISONE_TEST_*';

export async function admin(method, path, body) {
  const response = await fetch(gateway.baseUrl + path, {
    method,
    headers: { Authorization: `ExisOneApi ${gateway.token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

let serial = 0;
/** A product with features; returns {id, name}. */
export async function product(features = [], extra = {}) {
  const name = `NodeApp${process.pid}x${++serial}`;
  const made = await admin('POST', '/api/product', { name, ...extra });
  for (const feature of features) await admin('POST', `/api/product/${made.id}/features`, { name: feature });
  return { id: made.id, name };
}
