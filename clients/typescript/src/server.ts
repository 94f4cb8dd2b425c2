// dodo-paywall/server: the client for the paywall's /server API, for the founder's backend
// (Node, or an edge runtime with fetch and WebCrypto). API Gateway lets only IAM-signed
// requests through, so every request is signed with AWS SigV4 (service execute-api) by
// aws4fetch: this entry's one runtime dependency (tiny, none of its own).
import { AwsV4Signer } from "aws4fetch";
import type { components } from "./api.js";
import { describe, errorFrom, jsonFrom, join, PaywallError, send, safeToResend, type Fetch } from "./core.js";

export { PaywallError, isPaywallError, type PaywallErrorCode, type Fetch } from "./core.js";

type Schemas = components["schemas"];
/** `POST /server/usage`'s answer, and whether it repeats an earlier call's (same key). */
export type UsageResult = Schemas["UsageAnswer"] & { replayed: boolean };
/** `GET /server/users/{user_id}`: everything the paywall holds about the user's access. */
export type ServerUser = Schemas["ServerUser"];
/** A grant: a plan given without a payment. */
export type Grant = Schemas["Grant"];
export type Entitlements = Schemas["Entitlements"];
/** `POST /server/users/{user_id}/grants`'s answer. */
export interface GrantResult {
  grant: Grant;
  entitlements: Entitlements;
}
/** `DELETE /server/users/{user_id}/grants`'s answer. */
export interface RevokeResult {
  revoked: true;
  entitlements: Entitlements;
}

/** AWS credentials, as the AWS SDKs hand them out. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}
/**
 * Credentials, or a function that answers them (called before each request, so it should
 * cache and refresh them itself, as `fromNodeProviderChain()` of `@aws-sdk/credential-providers` does).
 */
export type CredentialsOption = AwsCredentials | (() => AwsCredentials | Promise<AwsCredentials>);

export interface ServerClientOptions {
  /** The API's base URL: the stack's `ApiUrl` output. */
  baseUrl: string;
  /**
   * The stack's region. Default: the one an `execute-api` URL names, else `AWS_REGION`, else
   * `AWS_DEFAULT_REGION` (read at each request). A custom domain with neither set throws
   * `region_unknown` at each call, rather than signing for a guessed region.
   */
  region?: string;
  /** Default: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, read at each request. */
  credentials?: CredentialsOption;
  /** The fetch to use (default: the global one). */
  fetch?: Fetch;
  /** How many times a retryable answer, or a safe request that got none, is retried; default 3. */
  retries?: number;
}

export interface UsageOptions {
  /**
   * Makes the call idempotent: the same key answers as the first call did and consumes
   * nothing more (kept 30 days). Default: a new `crypto.randomUUID()`, reused by this
   * call's own retries.
   */
  idempotencyKey?: string;
}

export interface GrantOptions {
  /** A plan in the catalogue. */
  plan: string;
  /** How many days from now (1–3660). */
  days: number;
  /** Why (audited with your IAM identity). */
  reason: string;
}

/** The client `createServerClient` makes. Every method throws a {@link PaywallError}. */
export interface ServerClient {
  /**
   * Checks and consumes `amount` of the user's metered limit `feature` (`POST /server/usage`).
   * `allowed: false` consumed nothing. Errors: `invalid_request`, `idempotency_key_reused`, `forbidden`.
   */
  usage(userId: string, feature: string, amount: number, options?: UsageOptions): Promise<UsageResult>;
  /** The user's entitlements, status, subscriptions, grant and audit trail (newest first, paged). */
  user(userId: string, page?: { limit?: number; cursor?: string }): Promise<ServerUser>;
  /** Gives the user `plan` for `days` without a payment; replaces an earlier grant. */
  grant(userId: string, grant: GrantOptions): Promise<GrantResult>;
  /** Takes the user's grant back; `no_grant` when there is none. */
  revokeGrant(userId: string, options?: { reason?: string }): Promise<RevokeResult>;
}

const env = (name: string): string | undefined => {
  // Edge runtimes may have no `process` at all.
  const value = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
  return value === "" ? undefined : value;
};

function credentialsFromEnv(): AwsCredentials {
  const accessKeyId = env("AWS_ACCESS_KEY_ID");
  const secretAccessKey = env("AWS_SECRET_ACCESS_KEY");
  if (!accessKeyId || !secretAccessKey) {
    throw new PaywallError(
      "credentials_unavailable",
      "no AWS credentials: pass `credentials`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
  }
  const sessionToken = env("AWS_SESSION_TOKEN");
  return sessionToken ? { accessKeyId, secretAccessKey, sessionToken } : { accessKeyId, secretAccessKey };
}

interface ServerRoute {
  method: "GET" | "POST" | "DELETE";
  path: string;
  body?: unknown;
  /** Safe to send again when no answer came, or after a timeout (a read; a write with its key). */
  idempotent: boolean;
}

/**
 * The client for the paywall's `/server` API, signing each request with SigV4.
 *
 * @example
 * import { createServerClient } from "dodo-paywall/server";
 * const paywall = createServerClient({ baseUrl: process.env.PAYWALL_API_URL! });
 * const { allowed } = await paywall.usage(userId, "api_calls", 1);
 */
export function createServerClient(options: ServerClientOptions): ServerClient {
  const { baseUrl, retries = 3 } = options;
  // An execute-api host names its region, and a signature for another is refused: it
  // wins over the environment's (a backend in one region may call a stack in another).
  const hostRegion = /^[^.]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(new URL(baseUrl).hostname)?.[1];
  const fetchImpl: Fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));

  function region(): string {
    const found = options.region ?? hostRegion ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION");
    // aws4fetch would guess us-east-1, and a stack elsewhere would answer 403 for it.
    if (found === undefined) {
      throw new PaywallError(
        "region_unknown",
        `no region to sign for: ${baseUrl} names none; pass \`region\` (the stack's), or set AWS_REGION`,
      );
    }
    return found;
  }

  async function credentials(): Promise<AwsCredentials> {
    const given = options.credentials;
    if (given === undefined) return credentialsFromEnv();
    let found: AwsCredentials;
    try {
      found = typeof given === "function" ? await given() : given;
    } catch (cause) {
      // The provider's own words (an expired SSO session…), never a key: it had none to give.
      throw new PaywallError("credentials_unavailable", `the AWS credentials provider failed: ${describe(cause)}`, { cause });
    }
    if (!found?.accessKeyId || !found.secretAccessKey) {
      throw new PaywallError("credentials_unavailable", "the AWS credentials have no accessKeyId or secretAccessKey");
    }
    return found;
  }

  /** Signs one attempt; anything aws4fetch throws is a PaywallError too (never quoting a secret). */
  async function sign(r: ServerRoute, body: string | undefined): Promise<Request> {
    const signingRegion = region();
    const { accessKeyId, secretAccessKey, sessionToken } = await credentials();
    try {
      const signed = await new AwsV4Signer({
        method: r.method,
        url: join(baseUrl, r.path),
        headers: body === undefined ? { accept: "application/json" } : { accept: "application/json", "content-type": "application/json" },
        body,
        accessKeyId,
        secretAccessKey,
        sessionToken,
        service: "execute-api",
        region: signingRegion,
      }).sign();
      return new Request(signed.url, { method: signed.method, headers: signed.headers, body: signed.body ?? null });
    } catch (cause) {
      throw new PaywallError("credentials_unavailable", `the request could not be signed (${cause instanceof Error ? cause.name : "error"})`, { cause });
    }
  }

  async function call(r: ServerRoute): Promise<Response> {
    const body = r.body === undefined ? undefined : JSON.stringify(r.body);
    const response = await send({
      // Signed anew for each attempt: a signature carries its time.
      request: () => sign(r, body),
      retryNetwork: r.idempotent,
      // A 429, or the API's own 503 (`busy`, `store_unavailable`: nothing changed;
      // `changed_not_stored`: the retry completes it; openapi.yaml): any route may ask
      // again. A read or a keyed write also
      // after any 503 (API Gateway's own carries no code), a 504, or another 5xx that says
      // when to come back; a grant or revoke never, since it may have been done.
      retryStatus: (res) =>
        (r.idempotent && (res.status === 503 || res.status === 504 || (res.status >= 500 && res.headers.has("retry-after")))) ||
        safeToResend(res),
      retries,
      fetch: fetchImpl,
    });
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  // `.` and `..` are left as they are by encodeURIComponent, and a URL resolves them away
  // (`/server/users/..` is `/server/`): another route. Refused before any call, as is an
  // empty id (the API's user ids are 1–256 printable ASCII characters).
  const users = (userId: string, rest = "") => {
    if (userId === "" || userId === "." || userId === "..") {
      throw new PaywallError("invalid_request", `user id ${JSON.stringify(userId)} cannot be put in a URL path`);
    }
    return `/server/users/${encodeURIComponent(userId)}${rest}`;
  };

  return {
    async usage(userId, feature, amount, opts = {}) {
      const input: Schemas["UsageInput"] = {
        user_id: userId,
        feature,
        amount,
        // One key for every attempt of this call: a retry is never counted twice.
        idempotency_key: opts.idempotencyKey ?? crypto.randomUUID(),
      };
      const response = await call({ method: "POST", path: "/server/usage", body: input, idempotent: true });
      const answer = await jsonFrom<Schemas["UsageAnswer"]>(response);
      return { ...answer, replayed: response.headers.get("idempotent-replayed") === "true" };
    },
    async user(userId, page = {}) {
      const query = new URLSearchParams();
      if (page.limit !== undefined) query.set("limit", String(page.limit));
      if (page.cursor !== undefined) query.set("cursor", page.cursor);
      const search = query.toString() ? `?${query}` : "";
      return jsonFrom<ServerUser>(await call({ method: "GET", path: users(userId, search), idempotent: true }));
    },
    async grant(userId, grant) {
      const input = { plan: grant.plan, days: grant.days, reason: grant.reason };
      // Not idempotent in openapi.yaml (each grant is audited anew): never resent unanswered.
      return jsonFrom<GrantResult>(await call({ method: "POST", path: users(userId, "/grants"), body: input, idempotent: false }));
    },
    async revokeGrant(userId, opts = {}) {
      const body = opts.reason === undefined ? undefined : { reason: opts.reason };
      // A second revoke answers 404 no_grant: not resent unanswered either.
      return jsonFrom<RevokeResult>(await call({ method: "DELETE", path: users(userId, "/grants"), body, idempotent: false }));
    },
  };
}
