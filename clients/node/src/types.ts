/** Options of an ExisOneClient. */
export interface ExisOneClientOptions {
  /** https:// only; defaults to the EXISONE_BASEURL environment variable. */
  baseUrl?: string;
  /** Access token `exo_at_<public>_<secret>`. */
  accessToken?: string;
  /** The tenant's RSA public key (PEM) for validateOffline / validateSmart. */
  offlinePublicKey?: string;
  /** Returned by generateHardwareId() instead of a local fingerprint (containers, multi-user hosts). */
  hardwareIdOverride?: string;
  /** If set, baseUrl must name one of these hosts. */
  allowedBaseUrlHosts?: string[];
  /** Organization (tenant) id for the floating-lease calls, unless a call names one. */
  organizationId?: string;
  /** Per-attempt timeout in milliseconds (default 30000). */
  timeoutMs?: number;
  /** Extra attempts after a 503 or a network error (default 2). */
  retries?: number;
  /** First backoff in ms, doubling per attempt (default 100), capped at maxBackoffMs (default 2000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** A Retry-After longer than this (ms, default 5000) ends the retries. */
  maxRetryAfterMs?: number;
  /** The fetch to use (default: the global fetch of Node 18+). */
  fetch?: typeof fetch;
}

export interface ActivateRequest {
  activationKey: string;
  email: string;
  hardwareId: string;
  productName: string;
  version?: string;
}

export interface ValidateRequest {
  /** An activation key, or (validateSmart, deactivateSmart) an offline code. */
  activationKey: string;
  hardwareId: string;
  productName?: string;
  version?: string;
}

export interface DeactivateRequest {
  activationKey: string;
  hardwareId: string;
  productName: string;
}

export interface GenerateActivationKeyRequest {
  productName: string;
  email: string;
  planId?: number;
  validityDays?: number;
}

export interface SupportTicketRequest {
  productName: string;
  email: string;
  subject: string;
  message: string;
}

export interface ActivationResult {
  success: boolean;
  errorCode?: string;
  errorMessage?: string;
  serverVersion?: string;
  minimumRequiredVersion?: string;
  licenseData?: string;
}

export interface ValidationResult {
  isValid: boolean;
  /** licensed, not_activated, expired, revoked, invalid, version_outdated, trial, trial_expired */
  status: string;
  expirationDate?: Date;
  features: string[];
  serverVersion?: string;
  minimumRequiredVersion?: string;
}

export interface OfflineValidationResult {
  isValid: boolean;
  errorMessage?: string;
  productName?: string;
  productId: number;
  expirationDate?: Date;
  email?: string;
  features: string[];
  version?: string;
  isExpired: boolean;
  hardwareMismatch: boolean;
}

export interface SmartValidationResult {
  isValid: boolean;
  status: string;
  expirationDate?: Date;
  features: string[];
  wasOffline: boolean;
  errorMessage?: string;
  productName?: string;
  serverVersion?: string;
  minimumRequiredVersion?: string;
}

export interface DeactivationResult {
  success: boolean;
  serverNotified: boolean;
  errorMessage?: string;
}

export interface SeatUsage {
  currentSeats: number;
  /** null: unlimited */
  maxSeats: number | null;
  hasCapacity: boolean;
  isUnlimited: boolean;
  /** Seats still free, never below 0; null when unlimited. */
  remaining: number | null;
}

// --- API-key licensing ----------------------------------------------------------------------

export interface ApiKeyValidateRequest {
  apiKey: string;
  /** Units this call costs (default 1). */
  units?: number;
  /** false: check only (default true). */
  consumeUnits?: boolean;
  /** A retried call with the same key answers the first answer without consuming again. */
  idempotencyKey?: string;
}

export interface Quota {
  limit: number | null;
  used: number;
  remaining: number | null;
}

export interface RateWindow {
  limit: number;
  used: number;
  remaining: number;
  resetsAt: string;
}

export interface ApiKeyValidationResult {
  isValid: boolean;
  /** HTTP status of the verdict: 200, 403 (revoked, expired), 404 (not_found), 429 (limits). */
  httpStatus: number;
  errorCode?: string;
  errorMessage?: string;
  unitsConsumed: number;
  quota?: Quota;
  rateLimits: Record<string, RateWindow>;
  features: string[];
  expiresAt?: string | null;
  retryAfterSeconds?: number;
  /** Retry-After, RateLimit, RateLimit-Policy, X-RateLimit-* of a refusal (lower-case names). */
  rateLimitHeaders: Record<string, string>;
}

export interface ApiKeyUsage {
  apiKey: string;
  quota?: Quota;
  rateLimits: Record<string, RateWindow>;
  history: { date: string; units: number }[];
}

// --- floating leases ------------------------------------------------------------------------

export type FloatingErrorCode =
  | 'KEY_INVALID' | 'KEY_EXPIRED' | 'LEASE_LIMIT_REACHED' | 'LEASE_INVALID' | 'LEASE_RELEASED' | 'LEASE_EXPIRED';

export interface FloatingKeyValidation {
  isValid: boolean;
  errorCode?: FloatingErrorCode;
  expiry?: string | null;
  leaseLimit?: number;
  leasesUsed?: number;
  validFor?: { product: string; productDescription: string; features: { feature: string; featureDescription: string }[] }[];
}

export interface LeaseResult {
  success: boolean;
  errorCode?: FloatingErrorCode;
  lease?: string;
  expiry?: string;
  leasesUsed?: number;
  leaseLimit?: number;
}

export interface LeaseValidation {
  isValid: boolean;
  errorCode?: FloatingErrorCode;
  expiry?: string;
}

export interface LeasePayload {
  lid: string;
  key: string;
  org: string;
  cid: string;
  iat: number;
  exp: number;
}

export interface OfflineLeaseValidation {
  isValid: boolean;
  /** Signature good but past `exp`. */
  isExpired: boolean;
  payload?: LeasePayload;
  expiresAt?: Date;
  errorMessage?: string;
}
