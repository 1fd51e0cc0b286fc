/** A call that did not produce an answer the SDK can hand back as a result. */
export class ExisOneError extends Error {
  /** HTTP status, when the server answered. */
  readonly status?: number;
  /** The server's stable error code (`{"error": ...}`), when it sent one. */
  readonly code?: string;
  /** True when the server could not be reached (network error or timeout, after the retries). */
  readonly isNetworkError: boolean;
  readonly body?: unknown;

  constructor(message: string, init: { status?: number; code?: string; isNetworkError?: boolean; body?: unknown; cause?: unknown } = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'ExisOneError';
    this.status = init.status;
    this.code = init.code;
    this.isNetworkError = init.isNetworkError ?? false;
    this.body = init.body;
  }
}
