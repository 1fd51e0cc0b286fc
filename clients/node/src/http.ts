import { ExisOneError } from './errors.js';

export interface HttpSettings {
  timeoutMs: number;
  retries: number;
  backoffMs: number;
  maxBackoffMs: number;
  maxRetryAfterMs: number;
  fetch: typeof fetch;
  userAgent: string;
}

export interface HttpRequest {
  method: 'GET' | 'POST';
  url: string;
  headers?: Record<string, string>;
  json?: unknown;
  /** Safe to send again even if the first attempt may have reached the server. */
  replaySafe: boolean;
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
}

// Errors raised before the request left this machine: retrying them can never act twice.
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

function causeCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Seconds (or an HTTP date) in Retry-After as milliseconds; undefined if absent or unreadable. */
export function retryAfterMs(value: string | null): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/**
 * One HTTP exchange with timeouts and retries: a 503 and a network error are retried with
 * exponential backoff (or after the server's Retry-After, if it is not longer than
 * maxRetryAfterMs). A failure that may have reached the server (a timeout, a reset) is retried
 * only when the request is replay-safe.
 */
export async function send(settings: HttpSettings, request: HttpRequest): Promise<HttpAnswer> {
  const headers: Record<string, string> = { 'User-Agent': settings.userAgent, Accept: 'application/json', ...request.headers };
  let body: string | undefined;
  if (request.json !== undefined) {
    body = JSON.stringify(request.json);
    headers['Content-Type'] = 'application/json';
  }
  for (let attempt = 0; ; attempt++) {
    const backoff = Math.min(settings.backoffMs * 2 ** attempt, settings.maxBackoffMs);
    const last = attempt >= settings.retries;
    let response: Response;
    try {
      response = await settings.fetch(request.url, {
        method: request.method, headers, body, signal: AbortSignal.timeout(settings.timeoutMs),
      });
    } catch (error) {
      const code = causeCode(error);
      const retryable = request.replaySafe || (code !== undefined && NEVER_SENT.has(code));
      if (last || !retryable) {
        const what = error instanceof Error && error.name === 'TimeoutError' ? `timed out after ${settings.timeoutMs} ms` : String(code ?? error);
        throw new ExisOneError(`Network error: ${request.method} ${request.url}: ${what}`, { isNetworkError: true, cause: error });
      }
      await sleep(backoff);
      continue;
    }
    const text = await response.text();
    if (response.status === 503 && !last) {
      const wanted = retryAfterMs(response.headers.get('retry-after'));
      if (wanted === undefined || wanted <= settings.maxRetryAfterMs) {
        await sleep(wanted ?? backoff);
        continue;
      }
    }
    return { status: response.status, headers: response.headers, text };
  }
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The error for a non-2xx answer: status, the server's `error` code and `message`. */
export function httpError(answer: HttpAnswer, what: string): ExisOneError {
  const body = parseJson(answer.text) as { error?: unknown; message?: unknown } | undefined;
  const code = body && typeof body.error === 'string' ? body.error : undefined;
  const message = body && typeof body.message === 'string' ? body.message : answer.text.slice(0, 200);
  return new ExisOneError(`${what} failed: ${answer.status}${code ? ` ${code}` : ''}: ${message}`, { status: answer.status, code, body });
}
