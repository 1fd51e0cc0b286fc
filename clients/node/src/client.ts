import { ExisOneError } from './errors.js';
import { generateHardwareId } from './hardware.js';
import { httpError, parseJson, send, type HttpAnswer, type HttpSettings } from './http.js';
import { isOfflineKey, validateOfflineCode, verifyLease } from './offline.js';
import type {
  ActivateRequest, ActivationResult, ApiKeyUsage, ApiKeyValidateRequest, ApiKeyValidationResult, DeactivateRequest,
  DeactivationResult, ExisOneClientOptions, FloatingKeyValidation, GenerateActivationKeyRequest, LeaseResult,
  LeaseValidation, OfflineLeaseValidation, OfflineValidationResult, Quota, RateWindow, SeatUsage,
  SmartValidationResult, SupportTicketRequest, ValidateRequest, ValidationResult,
} from './types.js';
import { VERSION } from './version.js';

type Json = Record<string, unknown>;

const RATE_LIMIT_HEADERS = ['retry-after', 'ratelimit', 'ratelimit-policy', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'];
// Statuses whose body is a verdict on an API key (isValid false), not a refusal of the call.
const API_KEY_VERDICTS = new Set([200, 403, 404, 429]);

const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

function parseDate(value: unknown): Date | undefined {
  if (typeof value !== 'string' || value === '') return undefined;
  const time = Date.parse(/([zZ]|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`);
  return Number.isNaN(time) ? undefined : new Date(time);
}

function quotaOf(raw: unknown): Quota | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const q = raw as Json;
  return { limit: (q.limit as number | null) ?? null, used: Number(q.used ?? 0), remaining: (q.remaining as number | null) ?? null };
}

function windowsOf(raw: unknown): Record<string, RateWindow> {
  const out: Record<string, RateWindow> = {};
  if (raw && typeof raw === 'object') {
    for (const [name, w] of Object.entries(raw as Record<string, Json>)) {
      out[name] = { limit: Number(w.limit), used: Number(w.used), remaining: Number(w.remaining), resetsAt: String(w.resetsAt) };
    }
  }
  return out;
}

/**
 * The ExisOne client: activation keys (activate, validate, deactivate, offline codes), API-key
 * quotas and floating leases against an ExisOne-compatible server (quota_gateway).
 *
 * Business outcomes are results, never exceptions: `activate` answers `{success: false,
 * errorCode}`, `validate` answers `isValid: false` with a status, the API-key calls answer
 * `isValid: false` with an `errorCode`, the lease calls `success`/`isValid` false with an
 * `errorCode`. Calls the server refuses (bad token, bad input, not found) and an unreachable
 * server throw `ExisOneError`, as the Python SDK raises.
 */
export class ExisOneClient {
  private baseUrl: string;
  private readonly options: ExisOneClientOptions;
  private readonly http: HttpSettings;

  constructor(options: ExisOneClientOptions = {}) {
    this.options = { ...options };
    const baseUrl = options.baseUrl || (typeof process !== 'undefined' ? process.env.EXISONE_BASEURL : undefined) || '';
    this.checkBaseUrl(baseUrl);
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new Error('fetch is not available: Node.js 18+ is required');
    this.http = {
      timeoutMs: options.timeoutMs ?? 30_000,
      retries: options.retries ?? 2,
      backoffMs: options.backoffMs ?? 100,
      maxBackoffMs: options.maxBackoffMs ?? 2_000,
      maxRetryAfterMs: options.maxRetryAfterMs ?? 5_000,
      fetch: fetchImpl,
      userAgent: `exisone-client-node/${VERSION}`,
    };
  }

  /** The SDK's version. */
  getVersion(): string {
    return VERSION;
  }

  /** Point the client at another server (https only); returns the client. */
  withBaseUrl(baseUrl: string): this {
    this.checkBaseUrl(baseUrl);
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    return this;
  }

  /** This machine's fingerprint (salted SHA-256, 64 hex digits), or `hardwareIdOverride` when set. */
  generateHardwareId(): string {
    const override = this.options.hardwareIdOverride;
    return override && override.trim() ? override : generateHardwareId();
  }

  // --- activation keys ------------------------------------------------------------------------

  /** Bind a key to this hardware. Never throws: failures are `{success: false, errorCode, errorMessage}`. */
  async activate(request: ActivateRequest): Promise<ActivationResult> {
    const body: Json = { activationKey: request.activationKey, email: request.email, hardwareId: request.hardwareId, productName: request.productName };
    if (request.version) body.version = request.version;
    let answer: HttpAnswer;
    try {
      answer = await this.call('POST', '/api/license/activate', body, false);
    } catch (error) {
      return { success: false, errorMessage: error instanceof Error ? error.message : String(error) };
    }
    const data = parseJson(answer.text) as Json | undefined;
    if (answer.status < 200 || answer.status >= 300) {
      if (!data || typeof data !== 'object') return { success: false, errorMessage: `${answer.status}: ${answer.text}` };
      return {
        success: false, errorCode: str(data.error), errorMessage: str(data.message) ?? answer.text,
        serverVersion: str(data.serverVersion), minimumRequiredVersion: str(data.minimumRequiredVersion),
      };
    }
    return { success: true, serverVersion: str(data?.serverVersion), minimumRequiredVersion: str(data?.minimumRequiredVersion), licenseData: answer.text };
  }

  /** Validate online (permission verify). An invalid key is `isValid: false` with a status; throws if the call fails. */
  async validate(request: ValidateRequest): Promise<ValidationResult> {
    const body: Json = { activationKey: request.activationKey, hardwareId: request.hardwareId };
    if (request.productName) body.productName = request.productName;
    if (request.version) body.version = request.version;
    const data = await this.callJson('POST', '/api/license/validate', body, true, 'validate');
    const isValid = data.isValid === true;
    return {
      isValid,
      status: str(data.status) ?? (isValid ? 'licensed' : 'invalid'),
      expirationDate: parseDate(data.expirationDate),
      features: Array.isArray(data.features) ? data.features.map(String) : [],
      serverVersion: str(data.serverVersion),
      minimumRequiredVersion: str(data.minimumRequiredVersion),
    };
  }

  /** Release the key from this hardware (only from the bound hardware). Throws if the server refuses. */
  async deactivate(request: DeactivateRequest): Promise<boolean> {
    await this.callJson('POST', '/api/license/deactivate', { licenseKey: request.activationKey, hardwareId: request.hardwareId, productName: request.productName }, false, 'deactivate');
    return true;
  }

  /** A new activation key (permission generate), as the server's plain-text answer. */
  async generateActivationKey(request: GenerateActivationKeyRequest): Promise<string> {
    const body: Json = { productName: request.productName, email: request.email };
    if (request.planId !== undefined) body.planId = request.planId;
    if (request.validityDays !== undefined) body.validityDays = request.validityDays;
    const answer = await this.call('POST', '/api/activationkey/generate', body, false);
    if (answer.status < 200 || answer.status >= 300) throw httpError(answer, 'generateActivationKey');
    return answer.text.trim();
  }

  /** File a support ticket (permission email). Throws if the server refuses. */
  async sendSupportTicket(request: SupportTicketRequest): Promise<void> {
    await this.callJson('POST', '/api/support/ticket', { productName: request.productName, email: request.email, subject: request.subject, message: request.message }, false, 'sendSupportTicket');
  }

  /** Seats of a corporate key; throws (404) for a standard key. */
  async getSeatUsage(activationKey: string): Promise<SeatUsage> {
    if (!activationKey || !activationKey.trim()) throw new Error('activationKey is required');
    const data = await this.callJson('GET', `/api/license/${encodeURIComponent(activationKey)}/usage`, undefined, true, 'getSeatUsage');
    const currentSeats = Number(data.currentSeats ?? 0) || 0;
    const maxSeats = typeof data.maxSeats === 'number' ? data.maxSeats : null;
    const isUnlimited = data.isUnlimited === true;
    return {
      currentSeats, maxSeats, hasCapacity: data.hasCapacity === true, isUnlimited,
      remaining: isUnlimited || maxSeats === null ? null : Math.max(0, maxSeats - currentSeats),
    };
  }

  /** The key's licensed feature names. */
  async getLicensedFeatures(activationKey: string): Promise<string[]> {
    return (await this.getLicensedFeaturesCsv(activationKey)).split(',').map((f) => f.trim()).filter(Boolean);
  }

  /** The key's licensed features as the server's comma-separated text. */
  async getLicensedFeaturesCsv(activationKey: string): Promise<string> {
    const data = await this.callJson('POST', '/api/license/features/csv', { activationKey }, true, 'getLicensedFeatures');
    return str(data.features) ?? '';
  }

  /** Verify an offline activation code locally with `offlinePublicKey`; never throws. */
  validateOffline(offlineCode: string, hardwareId: string): OfflineValidationResult {
    return validateOfflineCode(offlineCode, hardwareId, this.options.offlinePublicKey);
  }

  /**
   * An offline code (50+ characters) is verified locally (and, if valid, reported to the server
   * when it can be reached); an online key is validated by the server, falling back to the
   * offline check when the server cannot answer. Never throws.
   */
  async validateSmart(request: ValidateRequest): Promise<SmartValidationResult> {
    const { activationKey, hardwareId, productName } = request;
    if (isOfflineKey(activationKey)) {
      const offline = this.validateOffline(activationKey, hardwareId);
      if (offline.isValid) {
        await this.validate({ activationKey, hardwareId }).catch(() => undefined); // opportunistic sync
      }
      return {
        isValid: offline.isValid, status: offline.isValid ? 'licensed' : offline.isExpired ? 'expired' : 'invalid',
        expirationDate: offline.expirationDate, features: offline.features, wasOffline: true,
        errorMessage: offline.errorMessage, productName: offline.productName,
      };
    }
    try {
      const online = await this.validate({ activationKey, hardwareId, productName, version: request.version });
      return {
        isValid: online.isValid, status: online.status, expirationDate: online.expirationDate, features: online.features,
        wasOffline: false, productName, serverVersion: online.serverVersion, minimumRequiredVersion: online.minimumRequiredVersion,
      };
    } catch {
      if (this.options.offlinePublicKey) {
        const offline = this.validateOffline(activationKey, hardwareId);
        return {
          isValid: offline.isValid, status: offline.isValid ? 'licensed' : 'invalid', expirationDate: offline.expirationDate,
          features: offline.features, wasOffline: true, productName: offline.productName,
          errorMessage: offline.isValid ? undefined : 'Server unreachable and offline validation failed',
        };
      }
      return { isValid: false, status: 'offline', features: [], wasOffline: true, errorMessage: 'Server unreachable and no offline validation available' };
    }
  }

  /** Deactivate, telling the server when it can be reached; succeeds locally otherwise. Never throws. */
  async deactivateSmart(request: DeactivateRequest): Promise<DeactivationResult> {
    try {
      await this.deactivate(request);
      return { success: true, serverNotified: true };
    } catch (error) {
      if (error instanceof ExisOneError) {
        return { success: true, serverNotified: false, errorMessage: 'License deactivated locally. Server will be notified when connection is restored.' };
      }
      return { success: false, serverNotified: false, errorMessage: error instanceof Error ? error.message : String(error) };
    }
  }

  // --- API-key licensing ------------------------------------------------------------------------

  /**
   * Validate an end-user's API key and consume `units` (default 1) from its quota and windows,
   * all or none (permission verify). A refusal is a result: `isValid: false`, `errorCode`
   * (`not_found`, `revoked`, `expired`, `quota_exhausted`, `rate_limit_<period>`),
   * `retryAfterSeconds` and the `rateLimitHeaders` to pass on.
   */
  async validateApiKey(request: ApiKeyValidateRequest): Promise<ApiKeyValidationResult> {
    const consume = request.consumeUnits ?? true;
    const headers: Record<string, string> = {};
    if (request.idempotencyKey) headers['Idempotency-Key'] = request.idempotencyKey;
    const answer = await this.call('POST', '/api/apilicense/validate', { apiKey: request.apiKey, units: request.units ?? 1, consumeUnits: consume },
      !consume || Boolean(request.idempotencyKey), headers);
    return this.apiKeyVerdict(answer, 'validateApiKey');
  }

  /** Would `units` pass now? Consumes nothing. */
  async checkApiKey(apiKey: string, units = 1): Promise<ApiKeyValidationResult> {
    const answer = await this.call('GET', `/api/apilicense/validate/${encodeURIComponent(apiKey)}?units=${units}`, undefined, true);
    return this.apiKeyVerdict(answer, 'checkApiKey');
  }

  /** Usage now and by day (permission manage). */
  async getApiKeyUsage(apiKey: string): Promise<ApiKeyUsage> {
    const data = await this.callJson('GET', `/api/apilicense/${encodeURIComponent(apiKey)}/usage`, undefined, true, 'getApiKeyUsage');
    return {
      apiKey: String(data.apiKey ?? ''), quota: quotaOf(data.quota), rateLimits: windowsOf(data.rateLimits),
      history: Array.isArray(data.history) ? (data.history as Json[]).map((d) => ({ date: String(d.date), units: Number(d.units) })) : [],
    };
  }

  private apiKeyVerdict(answer: HttpAnswer, what: string): ApiKeyValidationResult {
    const data = parseJson(answer.text) as Json | undefined;
    if (!API_KEY_VERDICTS.has(answer.status) || !data || typeof data !== 'object' || !('isValid' in data)) throw httpError(answer, what);
    const rateLimitHeaders: Record<string, string> = {};
    for (const name of RATE_LIMIT_HEADERS) {
      const value = answer.headers.get(name);
      if (value !== null) rateLimitHeaders[name] = value;
    }
    return {
      isValid: data.isValid === true, httpStatus: answer.status, errorCode: str(data.errorCode), errorMessage: str(data.errorMessage),
      unitsConsumed: Number(data.unitsConsumed ?? 0), quota: quotaOf(data.quota), rateLimits: windowsOf(data.rateLimits),
      features: Array.isArray(data.features) ? data.features.map(String) : [],
      expiresAt: data.expiresAt as string | null | undefined,
      retryAfterSeconds: typeof data.retryAfterSeconds === 'number' ? data.retryAfterSeconds : undefined,
      rateLimitHeaders,
    };
  }

  // --- floating leases (authenticated by the license key itself, no access token) -----------------

  /** Is this floating key valid, how many leases are in use, what does it grant? */
  async validateFloatingKey(key: string, organizationId?: string): Promise<FloatingKeyValidation> {
    return (await this.floating('GET', organizationId, `key/validate?key=${encodeURIComponent(key)}`, undefined, true)) as unknown as FloatingKeyValidation;
  }

  /** Take a lease from the key's pool (`expiry` seconds, default 600); `LEASE_LIMIT_REACHED` when all are out. */
  async obtainLease(request: { key: string; expiry?: number; clientId?: string; organizationId?: string }): Promise<LeaseResult> {
    const body: Json = { key: request.key };
    if (request.expiry !== undefined) body.expiry = request.expiry;
    if (request.clientId !== undefined) body.clientId = request.clientId;
    return (await this.floating('POST', request.organizationId, 'lease/obtain', body, false)) as unknown as LeaseResult;
  }

  /** Is this lease still live on the server? */
  async validateLease(lease: string, organizationId?: string): Promise<LeaseValidation> {
    return (await this.floating('GET', organizationId, `lease/validate?lease=${encodeURIComponent(lease)}`, undefined, true)) as unknown as LeaseValidation;
  }

  /** Replace a live lease by a new one (the old one stops being valid). */
  async renewLease(request: { lease: string; expiry?: number; organizationId?: string }): Promise<LeaseResult> {
    const body: Json = { lease: request.lease };
    if (request.expiry !== undefined) body.expiry = request.expiry;
    return (await this.floating('POST', request.organizationId, 'lease/renew', body, false)) as unknown as LeaseResult;
  }

  /** Give a lease back (idempotent). */
  async releaseLease(lease: string, organizationId?: string): Promise<{ success: boolean; errorCode?: string }> {
    return (await this.floating('POST', organizationId, 'lease/release', { lease }, true)) as { success: boolean; errorCode?: string };
  }

  /** The organization's public key (PEM) that signs leases. */
  async getLeaseSigningKey(organizationId?: string): Promise<string> {
    const answer = await this.call('GET', `/licensing/${encodeURIComponent(this.organization(organizationId))}/signature.pem`, undefined, true, {}, false);
    if (answer.status !== 200) throw httpError(answer, 'getLeaseSigningKey');
    return answer.text;
  }

  /** Verify a lease offline against the organization's `signature.pem`; never throws. */
  verifyLeaseOffline(lease: string, publicKeyPem: string, now?: Date): OfflineLeaseValidation {
    return verifyLease(lease, publicKeyPem, now);
  }

  // --- plumbing ----------------------------------------------------------------------------------

  private organization(organizationId?: string): string {
    const org = organizationId ?? this.options.organizationId;
    if (!org) throw new Error('organizationId is required (pass it, or set it in the options)');
    return org;
  }

  private async floating(method: 'GET' | 'POST', organizationId: string | undefined, path: string, body: Json | undefined, replaySafe: boolean): Promise<Json> {
    const answer = await this.call(method, `/licensing/${encodeURIComponent(this.organization(organizationId))}/${path}`, body, replaySafe, {}, false);
    const data = parseJson(answer.text);
    if (answer.status !== 200 || !data || typeof data !== 'object') throw httpError(answer, path);
    return data as Json;
  }

  private call(method: 'GET' | 'POST', path: string, json: unknown, replaySafe: boolean, headers: Record<string, string> = {}, withToken = true): Promise<HttpAnswer> {
    const all = { ...headers };
    if (withToken && this.options.accessToken) all.Authorization = `ExisOneApi ${this.options.accessToken}`;
    return send(this.http, { method, url: this.baseUrl + path, headers: all, json, replaySafe });
  }

  private async callJson(method: 'GET' | 'POST', path: string, json: unknown, replaySafe: boolean, what: string): Promise<Json> {
    const answer = await this.call(method, path, json, replaySafe);
    if (answer.status < 200 || answer.status >= 300) throw httpError(answer, what);
    const data = parseJson(answer.text);
    return data && typeof data === 'object' ? (data as Json) : {};
  }

  private checkBaseUrl(baseUrl: string): void {
    if (!baseUrl) throw new Error('baseUrl is required (or set EXISONE_BASEURL)');
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new Error(`baseUrl is not a URL: ${baseUrl}`);
    }
    if (url.protocol !== 'https:') throw new Error('baseUrl must use HTTPS');
    const allowed = this.options.allowedBaseUrlHosts;
    if (allowed && allowed.length && !allowed.includes(url.hostname)) throw new Error('baseUrl host not allowed');
  }
}
