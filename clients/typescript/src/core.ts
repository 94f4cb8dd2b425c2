// What the browser client (index.ts) and the server client (server.ts) share: the typed
// error, and one request loop that retries only what is safe to retry.

/**
 * The stable `code`s the API answers in `{"error": {"code", "message"}}` (openapi.yaml and
 * the README's API section), plus the client's own: `network_error` (no answer at all),
 * `bad_response` (an answer that is not what the API documents), and for the server client
 * `credentials_unavailable` (no AWS credentials, or their provider failed) and
 * `region_unknown` (no region to sign for). API Gateway's own refusals carry no code; they
 * get `unauthorized` (401), `forbidden` (403) and `rate_limited` (429).
 */
export type PaywallErrorCode =
  // Any route
  | "unauthorized"
  | "forbidden"
  | "invalid_request"
  | "rate_limited"
  | "busy"
  | "store_unavailable"
  | "timeout"
  | "internal_error"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large"
  // Dodo failed or refused (routes that call Dodo)
  | "dodo_error"
  | "dodo_unavailable"
  | "dodo_bad_response"
  | "dodo_timeout"
  // Checkout and portal
  | "unknown_plan"
  | "already_subscribed"
  | "checkout_in_progress"
  | "no_customer"
  // POST /payment/success
  | "payment_failed"
  | "payment_cancelled"
  | "payment_refunded"
  | "payment_not_yours"
  | "payment_not_found"
  | "payment_not_for_this_product"
  // Trials, plan changes, cancel and resume
  | "trial_used"
  | "already_paid"
  | "trial_not_offered"
  | "email_not_verified"
  | "not_a_subscription_plan"
  | "no_subscription"
  | "same_plan"
  | "change_refused"
  | "subscription_ended"
  // Dodo made the change but it is not stored yet: not "nothing changed"; retry to store it
  | "changed_not_stored"
  // /server routes
  | "idempotency_key_reused"
  | "no_grant"
  // The client's own
  | "network_error"
  | "bad_response"
  | "credentials_unavailable"
  | "region_unknown";

/**
 * An error from the paywall's API, or from reaching it. Branch on `code` (stable), not on
 * `message` (for people).
 */
export class PaywallError extends Error {
  override readonly name = "PaywallError";
  /** The API's stable code; a code newer than this package is passed through as it came. */
  readonly code: PaywallErrorCode | (string & {});
  /** The HTTP status, or 0 when there was no answer (`network_error`, or no token). */
  readonly status: number;
  /** Seconds the API asked to wait before retrying (`Retry-After`), when it said. */
  readonly retryAfter: number | undefined;
  /** The API's request id, to quote to support. */
  readonly requestId: string | undefined;
  /** Dodo's own error code, when Dodo refused the request (`dodo_error`, `change_refused`). */
  readonly dodoCode: string | undefined;

  constructor(
    code: PaywallErrorCode | (string & {}),
    message: string,
    options: { status?: number; retryAfter?: number; requestId?: string; dodoCode?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status ?? 0;
    this.retryAfter = options.retryAfter;
    this.requestId = options.requestId;
    this.dodoCode = options.dodoCode;
  }
}

/**
 * Whether `e` is a {@link PaywallError} (with that `code`, when one is given).
 *
 * @example
 * try { await paywall.startTrial("team") }
 * catch (e) { if (isPaywallError(e, "trial_used")) showPricing(); else throw e }
 */
export function isPaywallError(e: unknown, code?: PaywallErrorCode): e is PaywallError {
  return e instanceof PaywallError && (code === undefined || e.code === code);
}

/** The fetch the clients call: the global one, or one the caller hands in. */
export type Fetch = (input: Request | string | URL, init?: RequestInit) => Promise<Response>;

/** Retries stop waiting at this: a longer `Retry-After` is thrown to the caller at once. */
export const MAX_RETRY_DELAY_MS = 30_000;
/** The first back-off without `Retry-After`; each later one doubles, with jitter. */
const BASE_DELAY_MS = 250;

/** One request as the loop sends it: made anew for every attempt (a SigV4 signature has a time). */
export interface Attempt {
  /** Builds the request for this attempt (called once per attempt). */
  request: () => Promise<Request> | Request;
  /** Whether a failure with no answer may be retried: only reads and idempotent writes. */
  retryNetwork: boolean;
  /**
   * Whether this answer may be retried (the loop passes 429/503 to it; others too for the
   * server client). It may read the body of a clone (see {@link safeToResend}).
   */
  retryStatus: (response: Response) => boolean | Promise<boolean>;
  retries: number;
  fetch: Fetch;
}

/** `Retry-After` in seconds (the API sends whole seconds; an HTTP date is honoured too). */
export function retryAfterSeconds(response: Response): number | undefined {
  const raw = response.headers.get("retry-after");
  if (raw === null || raw.trim() === "") return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Exponential back-off with jitter: attempt 0 waits 125–250 ms, then 250–500, 500–1000, … */
export function backoffMs(attempt: number): number {
  const ceiling = Math.min(MAX_RETRY_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Sends the request, retrying what `attempt` allows: answers it accepts, after their
 * `Retry-After` (plus up to 10% jitter, so that clients told the same second do not all
 * come back at once) or an exponential back-off; and failures with no answer when
 * `retryNetwork`. Answers the last response, whatever its status; throws `network_error`.
 * A `Retry-After` beyond {@link MAX_RETRY_DELAY_MS} is not waited for: that response is
 * answered at once, for the caller to turn into an error carrying `retryAfter`.
 *
 * Once an attempt was answered `changed_not_stored` (Dodo made the change), a later
 * transient failure (a `429` or `5xx`: `busy`, `store_unavailable`, Dodo unreachable,
 * which say or suggest that nothing changed) is not what the caller sees: the
 * `changed_not_stored` answer is, so the app knows Dodo acted. A later `4xx` is an answer
 * about the state as it now is (`409 same_plan`: the change is in place) and stands.
 */
export async function send(attempt: Attempt): Promise<Response> {
  let changedNotStored: Response | undefined;
  const settle = async (response: Response) => {
    if (changedNotStored === undefined || (response.status !== 429 && response.status < 500)) return response;
    await response.body?.cancel().catch(() => {});
    return changedNotStored;
  };
  for (let n = 0; ; n++) {
    // Outside the try: a request that cannot be made (no credentials) is no network failure.
    const request = await attempt.request();
    let response: Response;
    try {
      response = await attempt.fetch(request);
    } catch (cause) {
      if (attempt.retryNetwork && n < attempt.retries) {
        await sleep(backoffMs(n));
        continue;
      }
      if (changedNotStored !== undefined) return changedNotStored;
      throw new PaywallError("network_error", `the paywall's API could not be reached: ${describe(cause)}`, { cause });
    }
    if (n >= attempt.retries || !(await attempt.retryStatus(response))) return settle(response);
    const after = retryAfterSeconds(response);
    const wait = after === undefined ? backoffMs(n) : after * 1000 * (1 + Math.random() * 0.1);
    if (wait > MAX_RETRY_DELAY_MS) return settle(response);
    if (changedNotStored === undefined && (await errorCode(response)) === "changed_not_stored") {
      // Kept whole (its body read now), since this one's body is let go below.
      const { status, statusText, headers } = response;
      changedNotStored = new Response(await response.clone().text(), { status, statusText, headers });
    }
    // The body is not needed: free the connection before waiting.
    await response.body?.cancel().catch(() => {});
    await sleep(wait);
  }
}

/**
 * The `{"error": {"code"}}` codes of the API's 503s after which any request may be sent
 * again: `busy` and `store_unavailable` changed nothing; after `changed_not_stored` Dodo
 * made the change, and sending it again stores it without asking Dodo again (openapi.yaml).
 */
const RESENDABLE_503 = new Set(["busy", "store_unavailable", "changed_not_stored"]);

/**
 * Whether even a request that is not idempotent may be sent again after `response`: a
 * `429` (the API's rate limit and API Gateway's throttling both refuse before anything is
 * done), or a `503` whose body carries one of the API's own codes (`busy`,
 * `store_unavailable`: "nothing changed; retry"; `changed_not_stored`: "done at Dodo;
 * retry to store it", openapi.yaml). API Gateway's own `503` (no code: e.g. its
 * integration timed out) may come after the function did its work. The body is read from
 * a clone: the response itself stays readable, to become the error.
 */
export async function safeToResend(response: Response): Promise<boolean> {
  if (response.status === 429) return true;
  if (response.status !== 503) return false;
  const code = await errorCode(response);
  return code !== undefined && RESENDABLE_503.has(code);
}

/** The API's `{"error": {"code"}}` of an answer, read from a clone; none when it has none. */
async function errorCode(response: Response): Promise<string | undefined> {
  if (response.ok) return undefined;
  try {
    const body = (await response.clone().json()) as { error?: { code?: unknown } } | null;
    const code = body?.error?.code;
    return typeof code === "string" ? code : undefined;
  } catch {
    return undefined;
  }
}

export function describe(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}

/** The code API Gateway's own refusals stand for: they answer `{"message"}` and no code. */
function codeForStatus(status: number): PaywallErrorCode {
  switch (status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 429:
      return "rate_limited";
    case 503:
      return "store_unavailable";
    case 504:
      return "timeout";
    default:
      return "bad_response";
  }
}

/** The error an answer that is not 2xx stands for, from its `{"error": {...}}` body. */
export async function errorFrom(response: Response): Promise<PaywallError> {
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  const error = (body as { error?: Record<string, unknown> } | undefined)?.error;
  const text = (value: unknown) => (typeof value === "string" ? value : undefined);
  const code = text(error?.code) ?? codeForStatus(response.status);
  const message =
    text(error?.message) ?? text((body as { message?: unknown } | undefined)?.message) ?? `HTTP ${response.status}`;
  return new PaywallError(code, message, {
    status: response.status,
    retryAfter: retryAfterSeconds(response),
    requestId: text(error?.request_id),
    dodoCode: text(error?.dodo_code),
  });
}

/** The JSON body of a 2xx answer; `bad_response` when it is not JSON. */
export async function jsonFrom<T>(response: Response): Promise<T> {
  try {
    return (await response.json()) as T;
  } catch (cause) {
    throw new PaywallError("bad_response", `the API answered ${response.status} without a JSON body`, {
      status: response.status,
      cause,
    });
  }
}

/** `baseUrl` joined with an API path, whether or not `baseUrl` ends with a slash or has a stage path. */
export function join(baseUrl: string, path: string): string {
  return baseUrl.replace(/\/+$/, "") + path;
}
