// dodo-paywall: the browser (or any fetch runtime) client for the paywall's /payment API.
// Its only runtime need is `fetch`. Types come from src/api.ts, generated from openapi.yaml.
import type { components } from "./api.js";
import { describe, errorFrom, jsonFrom, join, PaywallError, send, safeToResend, type Fetch } from "./core.js";

export { PaywallError, isPaywallError, type PaywallErrorCode, type Fetch } from "./core.js";
export type { paths, components, operations } from "./api.js";

type Schemas = components["schemas"];
/** `GET /payment/status`: the caller's access. */
export type Status = Schemas["Status"];
/** `GET /payment/entitlements`: what the caller may use now. */
export type Entitlements = Schemas["Entitlements"];
/** `GET /payment/plans`: the catalogue, for a pricing table. */
export type PlanListing = Schemas["PlanListing"];
/** One plan of {@link PlanListing}. */
export type Plan = PlanListing["plans"][number];
/** `POST /payment/create-checkout-session`'s answer. */
export type Checkout = Schemas["Checkout"];
/** `POST /payment/success`, 200: the payment is granted (and the caller's access). */
export type Success = Schemas["Success"];
/** `POST /payment/success`, 202: Dodo is still processing it; ask again shortly. */
export type Pending = Schemas["Pending"];
/** `POST /payment/change-plan` with `preview`: what Dodo will charge; nothing changes. */
export type ChangePreview = Schemas["ChangePreviewAnswer"];
/** `POST /payment/change-plan`: the change as Dodo applied or scheduled it. */
export type ChangeApplied = Schemas["ChangeApplied"];

/** A JWT, none, or a promise of either: what identity providers' SDKs hand out. */
export type TokenResult = string | null | undefined;

export interface PaywallOptions {
  /** The API's base URL: the stack's `ApiUrl` output (locally `http://127.0.0.1:3000`). */
  baseUrl: string;
  /** The signed-in user's JWT (e.g. `() => auth.currentUser?.getIdToken()`); none: not signed in. */
  getToken: () => TokenResult | Promise<TokenResult>;
  /** The fetch to use (default: the global one). */
  fetch?: Fetch;
  /**
   * How many times a `429`, the API's own `503` (`busy`, `store_unavailable`,
   * `changed_not_stored`), or, for a
   * safe request, any `503` or no answer at all, is retried; default 3.
   */
  retries?: number;
}

export interface CheckoutOptions {
  /** DataFast's visitor id, passed to Dodo as metadata. */
  datafastVisitorId?: string | null;
}

/** The client `createPaywall` makes. Every method throws a {@link PaywallError}. */
export interface Paywall {
  /** The caller's access (`GET /payment/status`), revalidated by ETag. */
  status(): Promise<Status>;
  /** What the caller may use now: plan, features, limits (`GET /payment/entitlements`), revalidated by ETag. */
  entitlements(): Promise<Entitlements>;
  /** The plans for sale (`GET /payment/plans`): public, no token needed. */
  plans(): Promise<PlanListing>;
  /** Opens a Dodo checkout for `plan` (default: `monthly` if the catalogue has it, else its first plan) and answers its URL. */
  checkout(plan?: string, options?: CheckoutOptions): Promise<string>;
  /**
   * {@link checkout}, then sends the browser there (`window.location`). Outside a browser
   * it throws `invalid_request` before opening anything: use {@link checkout} there.
   */
  redirectToCheckout(plan?: string, options?: CheckoutOptions): Promise<void>;
  /**
   * Back from Dodo's checkout: confirms the `payment_id` on the return URL (default: the
   * page's) with `POST /payment/success`, then takes `payment_id` and `status` off the
   * address bar. Answers `null` when the URL has no `payment_id` (nothing to confirm).
   * While Dodo is still processing (202) it asks again a few times, then answers the
   * `pending` answer (and leaves the address as it was, for a reload to ask again).
   * Also `null` without a URL to read (no `url`, and no `location`, as on a server); a
   * `url` that does not parse throws `invalid_request`.
   */
  confirmReturn(url?: string | URL): Promise<Success | Pending | null>;
  /** A link to Dodo's customer portal for the caller (`POST /payment/portal`); `no_customer` before any checkout. */
  portal(): Promise<string>;
  /** Starts `plan`'s card-less trial (`POST /payment/trial`); answers the caller's status (`trialing`). */
  startTrial(plan: string): Promise<Status>;
  /** What Dodo would charge to move the subscription to `plan`; changes nothing. */
  previewPlanChange(plan: string): Promise<ChangePreview>;
  /** Moves the subscription to `plan` (an upgrade now, a downgrade at the next billing date). */
  changePlan(plan: string): Promise<ChangeApplied>;
  /** Drops a scheduled plan change (`DELETE /payment/change-plan`). */
  cancelScheduledChange(): Promise<Status>;
  /** Cancels the subscription at the end of the period paid (`POST /payment/cancel`). */
  cancel(): Promise<Status>;
  /** Takes a cancellation back before the period ends (`POST /payment/resume`). */
  resume(): Promise<Status>;
}

interface Route {
  method: "GET" | "POST" | "DELETE";
  path: string;
  /** Needs the user's JWT (every route but the plans). */
  auth: boolean;
  /** May be sent again when no answer came: reads, and writes openapi.yaml calls idempotent. */
  idempotent: boolean;
}

const route = (method: Route["method"], path: string, idempotent: boolean, auth = true): Route => ({
  method,
  path,
  auth,
  idempotent,
});
const ROUTES = {
  status: route("GET", "/payment/status", true),
  entitlements: route("GET", "/payment/entitlements", true),
  plans: route("GET", "/payment/plans", true, false),
  // Not idempotent in openapi.yaml: a lost answer is left to the user to click again.
  checkout: route("POST", "/payment/create-checkout-session", false),
  // Grants exactly once, however often it is asked (the money rules).
  success: route("POST", "/payment/success", true),
  portal: route("POST", "/payment/portal", false),
  // Once per person: asked again, it refuses (trial_used) and changes nothing.
  trial: route("POST", "/payment/trial", true),
  changePlan: route("POST", "/payment/change-plan", false),
  cancelScheduledChange: route("DELETE", "/payment/change-plan", true),
  cancel: route("POST", "/payment/cancel", true),
  resume: route("POST", "/payment/resume", true),
} as const;

/** How long confirmReturn waits between asks while the payment is pending. */
const PENDING_WAITS_MS = [1000, 2000, 3000];

/**
 * The client for the paywall's `/payment` API.
 *
 * @example
 * const paywall = createPaywall({ baseUrl, getToken: () => auth.currentUser?.getIdToken() });
 * await paywall.confirmReturn();
 * const { features } = await paywall.entitlements();
 * if (!features.includes("export")) await paywall.redirectToCheckout("pro");
 */
export function createPaywall(options: PaywallOptions): Paywall {
  const { baseUrl, getToken, retries = 3 } = options;
  // Bound late, so that a test or polyfill that replaces globalThis.fetch is seen.
  const fetchImpl: Fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  // The last ETag and body per route, with the token they were answered to: another
  // token never revalidates (nor sees) them.
  const cache = new Map<string, { token: string; etag: string; body: unknown }>();

  async function token(): Promise<string> {
    let value: TokenResult;
    try {
      value = await getToken();
    } catch (cause) {
      // The identity provider could not hand out a token (say, its refresh failed): no
      // token, as far as the API is concerned.
      throw new PaywallError("unauthorized", `getToken failed: ${describe(cause)}`, { cause });
    }
    if (typeof value !== "string" || value === "") {
      throw new PaywallError("unauthorized", "not signed in: getToken gave no token");
    }
    return value;
  }

  /** One call: its answer's JSON on 2xx (and its status), a PaywallError otherwise. */
  async function call<T>(r: Route, body?: unknown): Promise<{ status: number; body: T }> {
    const jwt = r.auth ? await token() : undefined;
    const cached = r.method === "GET" && jwt !== undefined ? cache.get(r.path) : undefined;
    const revalidate = cached !== undefined && cached.token === jwt ? cached : undefined;
    const response = await send({
      request: () => {
        const headers = new Headers({ accept: "application/json" });
        if (jwt !== undefined) headers.set("authorization", `Bearer ${jwt}`);
        if (revalidate) headers.set("if-none-match", revalidate.etag);
        if (body !== undefined) headers.set("content-type", "application/json");
        return new Request(join(baseUrl, r.path), {
          method: r.method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      },
      retryNetwork: r.idempotent,
      // A 429, or the API's own 503 (`busy`, `store_unavailable`: nothing changed;
      // `changed_not_stored`: the retry completes it), may be sent again on any route. Another 503 (API Gateway's own, no code) only a safe one.
      retryStatus: (res) => (r.idempotent && res.status === 503) || safeToResend(res),
      retries,
      fetch: fetchImpl,
    });
    if (response.status === 304 && revalidate) return { status: 200, body: revalidate.body as T };
    if (!response.ok) throw await errorFrom(response);
    const answer = await jsonFrom<T>(response);
    const etag = response.headers.get("etag");
    if (r.method === "GET" && jwt !== undefined) {
      if (etag) cache.set(r.path, { token: jwt, etag, body: answer });
      else cache.delete(r.path);
    }
    return { status: response.status, body: answer };
  }

  const get = async <T>(r: Route, body?: unknown) => (await call<T>(r, body)).body;

  async function checkout(plan?: string, opts: CheckoutOptions = {}): Promise<string> {
    // Plan names are the deployment's own (the generated enum lists make dev's only).
    const input: { plan?: string; datafast_visitor_id?: string } = {};
    if (plan !== undefined) input.plan = plan;
    if (opts.datafastVisitorId != null) input.datafast_visitor_id = opts.datafastVisitorId;
    return (await get<Checkout>(ROUTES.checkout, input)).checkout_url;
  }

  async function confirmReturn(url?: string | URL): Promise<Success | Pending | null> {
    const here = typeof location === "undefined" ? undefined : location.href;
    // No URL at all (no argument, and no page, as on a server): nothing to confirm.
    if (url === undefined && here === undefined) return null;
    let target: URL;
    try {
      target = new URL(url ?? here ?? "", here);
    } catch (cause) {
      throw new PaywallError("invalid_request", `confirmReturn: not a URL: ${String(url)}`, { cause });
    }
    const paymentId = target.searchParams.get("payment_id");
    if (!paymentId) return null;
    let answer: { status: number; body: Success | Pending };
    for (let n = 0; ; n++) {
      try {
        answer = await call<Success | Pending>(ROUTES.success, { payment_id: paymentId });
      } catch (e) {
        // A final answer (failed, not yours…) is as done as a success: clean the URL so a
        // reload does not ask again. One worth retrying (not signed in yet, too many
        // calls, the API or the network down) leaves it for the next load.
        if (e instanceof PaywallError && e.status >= 400 && e.status < 500 && e.status !== 401 && e.status !== 429) {
          cleanAddressBar(target, paymentId);
        }
        throw e;
      }
      if (answer.status !== 202 || n >= PENDING_WAITS_MS.length) break;
      await new Promise((resolve) => setTimeout(resolve, PENDING_WAITS_MS[n]));
    }
    // Still pending: left on the address bar, for a reload to ask again.
    if (answer.status !== 202) cleanAddressBar(target, paymentId);
    return answer.body;
  }

  return {
    status: () => get<Status>(ROUTES.status),
    entitlements: () => get<Entitlements>(ROUTES.entitlements),
    plans: () => get<PlanListing>(ROUTES.plans),
    checkout,
    async redirectToCheckout(plan, opts) {
      // Checked first: outside a browser there is nowhere to send the buyer, and a checkout
      // opened for nothing would stay open at Dodo.
      if (typeof location === "undefined") {
        throw new PaywallError(
          "invalid_request",
          "redirectToCheckout needs a browser (window.location); elsewhere, checkout(plan) answers the URL",
        );
      }
      const url = await checkout(plan, opts);
      location.assign(url);
    },
    confirmReturn,
    portal: async () => (await get<{ portal_url: string }>(ROUTES.portal)).portal_url,
    startTrial: (plan) => get<Status>(ROUTES.trial, { plan }),
    previewPlanChange: (plan) => get<ChangePreview>(ROUTES.changePlan, { plan, preview: true }),
    changePlan: (plan) => get<ChangeApplied>(ROUTES.changePlan, { plan }),
    cancelScheduledChange: () => get<Status>(ROUTES.cancelScheduledChange),
    cancel: () => get<Status>(ROUTES.cancel),
    resume: () => get<Status>(ROUTES.resume),
  };
}

/**
 * Takes `payment_id` and `status` (what Dodo appended) off the address bar, without a
 * reload or a history entry, when `url` is the page's own address and it still carries the
 * `payment_id` just confirmed. A `status` without that `payment_id` is the app's own: left.
 */
function cleanAddressBar(url: URL, paymentId: string): void {
  if (typeof location === "undefined" || typeof history === "undefined") return;
  const here = new URL(location.href);
  if (here.origin !== url.origin || here.pathname !== url.pathname) return;
  if (here.searchParams.get("payment_id") !== paymentId) return;
  here.searchParams.delete("payment_id");
  here.searchParams.delete("status");
  history.replaceState(history.state, "", here.pathname + here.search + here.hash);
}
