// Offline codes and leases checked locally, with keys made here (no gateway needed).
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { ExisOneClient, fromBase32, isOfflineKey, validateOfflineCode, verifyLease } from '../dist/esm/index.js';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = publicKey.export({ type: 'spki', format: 'pem' });

function toBase32(bytes) {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(buffer >> bits) & 31];
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out.match(/.{1,5}/g).join('-');
}

function offlineCode(payload, key = privateKey) {
  const body = Buffer.from(JSON.stringify(payload), 'utf8');
  const length = Buffer.alloc(2);
  length.writeUInt16LE(body.length);
  return toBase32(Buffer.concat([length, body, sign('sha256', body, key)]));
}

const payload = {
  productId: 7, productName: 'Desk', hardwareId: 'ABCDEF', expirationDate: '2099-01-01T00:00:00Z',
  email: 'a@example.com', features: ['Pro'], tenantId: 't', version: '1.0',
};

test('Crockford base32 decodes what it encodes, skipping dashes', () => {
  const bytes = Buffer.from([0, 1, 2, 250, 255, 17, 99]);
  assert.deepEqual(fromBase32(toBase32(bytes).replace(/-/g, '')), bytes);
  assert.equal(isOfflineKey('ABCD-EFGH-JKMN-PQRS'), false);
  assert.equal(isOfflineKey(offlineCode(payload)), true);
});

test('a signed code verifies; tampering, another key, another machine and expiry do not', () => {
  const code = offlineCode(payload);
  const good = validateOfflineCode(code, 'abcdef', pem);
  assert.equal(good.isValid, true);
  assert.deepEqual([good.productName, good.productId, good.features, good.email, good.version], ['Desk', 7, ['Pro'], 'a@example.com', '1.0']);
  assert.equal(good.expirationDate.toISOString(), '2099-01-01T00:00:00.000Z');

  const flipped = code.slice(0, 20) + (code[20] === '0' ? '1' : '0') + code.slice(21);
  assert.equal(validateOfflineCode(flipped, 'ABCDEF', pem).isValid, false);
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  assert.equal(validateOfflineCode(offlineCode(payload, stranger), 'ABCDEF', pem).errorMessage, 'Invalid or tampered offline activation code');
  const elsewhere = validateOfflineCode(code, 'FFFFFF', pem);
  assert.deepEqual([elsewhere.isValid, elsewhere.hardwareMismatch], [false, true]);
  const expired = validateOfflineCode(offlineCode({ ...payload, expirationDate: '2001-01-01T00:00:00' }), 'ABCDEF', pem);
  assert.deepEqual([expired.isValid, expired.isExpired], [false, true]);
  assert.equal(validateOfflineCode('', 'ABCDEF', pem).isValid, false);
  assert.equal(validateOfflineCode(code, 'ABCDEF', undefined).isValid, false);
  assert.equal(validateOfflineCode('not-a-code', 'ABCDEF', pem).isValid, false);
});

test('leases verify offline over their first part; expiry and forgery are refused', () => {
  const b64url = (buffer) => buffer.toString('base64url');
  const head = b64url(Buffer.from(JSON.stringify({ lid: 'l1', key: 'k', org: 'o', cid: 'c', iat: 1, exp: 2_000_000_000 })));
  const lease = `${head}.${b64url(sign('sha256', Buffer.from(head), privateKey))}`;
  const ok = verifyLease(lease, pem, new Date(1_900_000_000_000));
  assert.equal(ok.isValid, true);
  assert.equal(ok.payload.lid, 'l1');
  assert.equal(verifyLease(lease, pem, new Date(2_000_000_001_000)).isExpired, true);
  assert.equal(verifyLease(`${head}x.${lease.split('.')[1]}`, pem).isValid, false);
  assert.equal(verifyLease('garbage', pem).isValid, false);
});

test('options: https only, EXISONE_BASEURL, allowed hosts, withBaseUrl, version', () => {
  assert.throws(() => new ExisOneClient({ baseUrl: 'http://insecure.example' }), /HTTPS/);
  const saved = process.env.EXISONE_BASEURL;
  try {
    delete process.env.EXISONE_BASEURL;
    assert.throws(() => new ExisOneClient({}), /baseUrl is required/);
    process.env.EXISONE_BASEURL = 'https://from-env.example';
    const client = new ExisOneClient({ allowedBaseUrlHosts: ['from-env.example', 'other.example'] });
    assert.equal(client.withBaseUrl('https://other.example'), client);
    assert.throws(() => client.withBaseUrl('https://elsewhere.example'), /not allowed/);
    assert.throws(() => client.withBaseUrl('http://other.example'), /HTTPS/);
    assert.equal(client.getVersion(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
  } finally {
    if (saved === undefined) delete process.env.EXISONE_BASEURL;
    else process.env.EXISONE_BASEURL = saved;
  }
});

