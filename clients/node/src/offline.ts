import { createPublicKey, verify } from 'node:crypto';

import type { LeasePayload, OfflineLeaseValidation, OfflineValidationResult } from './types.js';

/** Crockford Base32 (no I, L, O, U), 5 bits per character, most significant bit first. */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const LOOKUP = new Map([...ALPHABET].map((char, index) => [char, index]));

/** Online keys are 19 characters (XXXX-XXXX-XXXX-XXXX); offline codes are much longer. */
export const OFFLINE_KEY_MIN_LENGTH = 50;

export function isOfflineKey(key: string): boolean {
  return key.replace(/[-\s]/g, '').length >= OFFLINE_KEY_MIN_LENGTH;
}

export function fromBase32(encoded: string): Buffer {
  const out: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (const char of encoded) {
    const value = LOOKUP.get(char);
    if (value === undefined) continue; // the Python SDK skips unknown characters too
    buffer = ((buffer << 5) | value) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((buffer >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function verifyRsaSha256(publicKeyPem: string, data: Buffer, signature: Buffer): boolean {
  try {
    const key = createPublicKey(publicKeyPem);
    if (key.asymmetricKeyType !== 'rsa') return false;
    return verify('sha256', data, key, signature); // RSA keys default to PKCS#1 v1.5 padding
  } catch {
    return false;
  }
}

/** An ISO-8601 date; one without a zone is UTC (the server writes UTC). */
function parseUtc(text: unknown): Date | undefined {
  if (typeof text !== 'string' || text === '') return undefined;
  const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(text) ? text : `${text}Z`;
  const time = Date.parse(zoned);
  return Number.isNaN(time) ? undefined : new Date(time);
}

const failure = (errorMessage: string, extra: Partial<OfflineValidationResult> = {}): OfflineValidationResult => ({
  isValid: false, errorMessage, productId: 0, features: [], isExpired: false, hardwareMismatch: false, ...extra,
});

/**
 * Verify an offline activation code locally: `[uint16 LE payload length][payload JSON][RSA
 * PKCS#1 v1.5 SHA-256 signature]` in Crockford Base32 with dashes, bound to one hardware ID.
 */
export function validateOfflineCode(offlineCode: string, hardwareId: string, publicKeyPem: string | undefined, now: Date = new Date()): OfflineValidationResult {
  if (!publicKeyPem) return failure('Offline validation not configured. Set offlinePublicKey in options.');
  if (!offlineCode) return failure('Offline code is required');
  if (!hardwareId) return failure('Hardware ID is required');
  const combined = fromBase32(offlineCode.replace(/[-\s]/g, '').toUpperCase());
  if (combined.length < 4) return failure('Invalid or tampered offline activation code');
  const length = combined.readUInt16LE(0);
  if (combined.length < 2 + length + 1) return failure('Invalid or tampered offline activation code');
  const payloadBytes = combined.subarray(2, 2 + length);
  const signature = combined.subarray(2 + length);
  if (!verifyRsaSha256(publicKeyPem, payloadBytes, signature)) return failure('Invalid or tampered offline activation code');
  let payload: Record<string, unknown>;
  try {
    payload = JSON.parse(payloadBytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    return failure('Invalid or tampered offline activation code');
  }
  const productName = typeof payload.productName === 'string' ? payload.productName : '';
  const boundTo = typeof payload.hardwareId === 'string' ? payload.hardwareId : '';
  const expirationDate = parseUtc(payload.expirationDate);
  const details = {
    productName,
    productId: typeof payload.productId === 'number' ? payload.productId : 0,
    expirationDate,
    email: typeof payload.email === 'string' ? payload.email : '',
    features: Array.isArray(payload.features) ? payload.features.filter((f): f is string => typeof f === 'string') : [],
    version: typeof payload.version === 'string' ? payload.version : '',
  };
  if (boundTo.toUpperCase() !== hardwareId.toUpperCase()) {
    return failure('Hardware ID mismatch. This code is bound to a different machine.', { hardwareMismatch: true, productName, expirationDate });
  }
  if (!expirationDate || expirationDate.getTime() < now.getTime()) {
    return failure('License has expired', { ...details, isExpired: true });
  }
  return { isValid: true, ...details, isExpired: false, hardwareMismatch: false };
}

function unbase64url(text: string): Buffer {
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/**
 * Verify a floating lease offline: `base64url(payload JSON) "." base64url(signature)`, the
 * signature RSA PKCS#1 v1.5 SHA-256 over the first part, by the organization's key
 * (`GET /licensing/{org}/signature.pem`).
 */
export function verifyLease(lease: string, publicKeyPem: string, now: Date = new Date()): OfflineLeaseValidation {
  const [head, tail, extra] = lease.split('.');
  if (!head || !tail || extra !== undefined) return { isValid: false, isExpired: false, errorMessage: 'Malformed lease' };
  if (!verifyRsaSha256(publicKeyPem, Buffer.from(head, 'ascii'), unbase64url(tail))) {
    return { isValid: false, isExpired: false, errorMessage: 'Invalid lease signature' };
  }
  let payload: LeasePayload;
  try {
    payload = JSON.parse(unbase64url(head).toString('utf8')) as LeasePayload;
  } catch {
    return { isValid: false, isExpired: false, errorMessage: 'Malformed lease payload' };
  }
  const expiresAt = new Date(Number(payload.exp) * 1000);
  if (!(expiresAt.getTime() > now.getTime())) {
    return { isValid: false, isExpired: true, payload, expiresAt, errorMessage: 'Lease has expired' };
  }
  return { isValid: true, isExpired: false, payload, expiresAt };
}
