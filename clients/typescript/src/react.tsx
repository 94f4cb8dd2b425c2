// React bindings for the paywall client: one shared entitlements cache per provider,
// hooks to read it, a <Gate> for features and an unstyled <PricingTable>.
//
//   const paywall = createPaywall({ baseUrl, getToken });
//   <PaywallProvider paywall={paywall}>
//     <Gate feature="export" fallback={<PricingTable />}>…</Gate>
//   </PaywallProvider>
//
// Nothing here but react: the cache is a small external store read with
// useSyncExternalStore, so every hook under a provider shares one fetch.
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useId,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import type { ChangePreview, Entitlements, Paywall, Pending, Plan, PlanListing, Status, Success } from "./index.js";

/**
 * What the bindings use of a client from `createPaywall` (a test may hand in a fake with
 * just these).
 */
export type PaywallClient = Pick<
  Paywall,
  | "entitlements"
  | "status"
  | "plans"
  | "confirmReturn"
  | "redirectToCheckout"
  | "startTrial"
  | "previewPlanChange"
  | "changePlan"
  | "cancelScheduledChange"
  | "cancel"
  | "resume"
>;

/**
 * An error as the client throws it (a PaywallError): `code` is the API's stable code. Read
 * by shape, so that an app bundling two copies of the package still gets its words.
 */
interface CodedError {
  code: string;
  message: string;
  retryAfter?: number | undefined;
}

function isCoded(error: unknown): error is CodedError {
  return typeof error === "object" && error !== null && typeof (error as CodedError).code === "string";
}

// ---- The shared cache ----

interface Snapshot {
  entitlements: Entitlements | null;
  error: Error | null;
  /** True until the first answer (or error): revalidation never sets it again. */
  loading: boolean;
  /** Bumped on every settled fetch: components that read more than entitlements follow it. */
  revision: number;
  checkout: CheckoutReturn;
}

/** The provider's confirmation of a checkout return (`paywall.confirmReturn()`). */
export interface CheckoutReturn {
  /** True while the payment is confirmed, or the subscription awaited. */
  confirming: boolean;
  /**
   * The subscription Dodo sent the buyer back with, without a payment (a trial with a card
   * charges nothing): the provider waits a few seconds for its webhook to show it.
   */
  subscriptionId: string | null;
  /**
   * What `confirmReturn` answered: `status: "success"` (granted), `"pending"` (Dodo is
   * still processing: the webhook grants it), or null when the page was no checkout return.
   */
  result: Success | Pending | null;
  error: Error | null;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

class EntitlementsCache {
  private snapshot: Snapshot = {
    entitlements: null,
    error: null,
    loading: true,
    revision: 0,
    checkout: { confirming: false, result: null, error: null, subscriptionId: null },
  };
  private readonly listeners = new Set<() => void>();
  private inflight: Promise<void> | null = null;
  private again = false;
  private started = false;
  /** Focus revalidation waits for the first fetch (after a return is confirmed). */
  private ready = false;
  /**
   * A checkout return still to confirm: set by start(), and again when confirmReturn could
   * not run for want of a token (the `payment_id` stays on the address bar), so that the
   * next fetch (a focus, a refresh) confirms it once the user is signed in.
   */
  private confirmDue = false;
  /** Tells one provider's caches apart: a new one (another user) remounts the pricing table. */
  readonly id = ++caches;

  constructor(readonly paywall: PaywallClient) {}

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  get = (): Snapshot => this.snapshot;

  private set(patch: Partial<Snapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const listener of this.listeners) listener();
  }

  /**
   * Fetches the entitlements again. A caller that just changed something (`fresh`) gets a
   * fetch that starts after its change: if one is already running, its answer may predate
   * the change, so one more runs after it. A focus revalidation just joins a running one.
   */
  refresh = (fresh = true): Promise<void> => {
    if (this.inflight) {
      if (fresh) this.again = true;
      return this.inflight;
    }
    this.inflight = (async () => {
      try {
        do {
          this.again = false;
          // Confirmed first, so that the entitlements include what was just bought.
          if (this.confirmDue) await this.confirm();
          try {
            const entitlements = await this.paywall.entitlements();
            this.set({ entitlements, error: null, loading: false, revision: this.snapshot.revision + 1 });
          } catch (error) {
            // Stale while revalidating: what was known stays, with the error beside it;
            // but not past `unauthorized` (signed out, or another user's token refused):
            // what was known was someone's who is no longer here.
            const signedOut = isCoded(error) && error.code === "unauthorized";
            this.set({
              ...(signedOut ? { entitlements: null } : {}),
              error: asError(error),
              loading: false,
              revision: this.snapshot.revision + 1,
            });
          }
        } while (this.again);
      } finally {
        this.inflight = null;
        this.ready = true;
      }
    })();
    return this.inflight;
  };

  revalidate = (): void => {
    if (this.ready) void this.refresh(false);
  };

  /**
   * `paywall.confirmReturn()`, its outcome in `checkout`. Without a token (an auth library
   * that has not restored its user yet) it is due again at the next fetch.
   */
  private async confirm(): Promise<void> {
    this.confirmDue = false;
    this.set({ checkout: { confirming: true, result: null, error: null, subscriptionId: null } });
    let result: Success | Pending | null = null;
    let error: Error | null = null;
    try {
      result = await this.paywall.confirmReturn();
    } catch (e) {
      error = asError(e);
      if (isCoded(e) && e.code === "unauthorized") this.confirmDue = true;
    }
    const subscriptionId = result === null && error === null ? returnedSubscription() : null;
    this.set({ checkout: { confirming: subscriptionId !== null, result, error, subscriptionId } });
  }

  /**
   * Once per cache (StrictMode mounts effects twice; a remount must not post the same
   * payment again): confirm a checkout return first, so the first entitlements already
   * include what was just bought, then fetch.
   */
  start(confirmReturn: boolean): void {
    if (this.started) return;
    this.started = true;
    this.confirmDue = confirmReturn;
    if (confirmReturn) this.set({ checkout: { confirming: true, result: null, error: null, subscriptionId: null } });
    void (async () => {
      await this.refresh();
      const { subscriptionId } = this.snapshot.checkout;
      if (subscriptionId === null) return;
      // Dodo's trial checkout charges nothing: the buyer comes back with the subscription
      // and no payment, and its webhook starts the trial, possibly a moment later. Ask
      // again a few times (about 10 s in all) until the entitlements show it.
      for (const wait of SUBSCRIPTION_WAITS_MS) {
        if (this.snapshot.entitlements?.source === "subscription") break;
        await new Promise((resolve) => setTimeout(resolve, wait));
        await this.refresh();
      }
      cleanSubscriptionReturn();
      this.set({ checkout: { ...this.snapshot.checkout, confirming: false } });
    })();
  }
}

const SUBSCRIPTION_WAITS_MS = [1000, 1000, 2000, 2000, 4000];

let caches = 0;

// The `subscription_id` Dodo appended to the return URL without a `payment_id`.
function returnedSubscription(): string | null {
  if (typeof location === "undefined") return null;
  const query = new URL(location.href).searchParams;
  return query.get("payment_id") ? null : query.get("subscription_id");
}

// Takes what Dodo appended off the address bar (no reload, no history entry): a reload
// must not wait for the subscription again. A `status` without `subscription_id` is the
// app's own: left.
function cleanSubscriptionReturn(): void {
  if (typeof location === "undefined" || typeof history === "undefined") return;
  const url = new URL(location.href);
  if (!url.searchParams.has("subscription_id")) return;
  url.searchParams.delete("subscription_id");
  url.searchParams.delete("status");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
}

const PaywallContext = createContext<EntitlementsCache | null>(null);

function useCache(): EntitlementsCache {
  const cache = useContext(PaywallContext);
  if (!cache) throw new Error("dodo-paywall/react: wrap this component in <PaywallProvider paywall={…}>");
  return cache;
}

function useSnapshot(): Snapshot {
  const cache = useCache();
  return useSyncExternalStore(cache.subscribe, cache.get, cache.get);
}

export interface PaywallProviderProps {
  /** A client from `createPaywall`. Another client starts a new cache. */
  paywall: PaywallClient;
  /**
   * Who is signed in: their user id, or null/undefined when no one is. When it changes
   * (sign-in, sign-out, another user) the provider starts a new cache: nothing of the last
   * user's shows, and a checkout return not yet confirmed for want of a token is confirmed
   * with the new one. Needed with a client whose `getToken` reads the current user (one
   * client for the app): the provider cannot see a sign-in or sign-out otherwise.
   */
  userKey?: string | null;
  /** Confirm a checkout return on mount (`paywall.confirmReturn()`); default true. */
  confirmReturn?: boolean;
  children?: ReactNode;
}

/**
 * Holds one entitlements cache for its subtree: fetched once on mount (after confirming a
 * checkout return), and again when the window regains focus or the page becomes visible
 * (the client's ETag makes an unchanged answer a bodiless 304), and anew when `userKey`
 * changes. An `unauthorized` answer clears what it held.
 */
export function PaywallProvider({ paywall, userKey, confirmReturn = true, children }: PaywallProviderProps) {
  // A new user, a new cache: keyed on userKey too, though the client is the same.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const cache = useMemo(() => new EntitlementsCache(paywall), [paywall, userKey ?? null]);
  useEffect(() => {
    cache.start(confirmReturn);
    const onFocus = () => cache.revalidate();
    const onVisibility = () => {
      if (document.visibilityState === "visible") cache.revalidate();
    };
    window.addEventListener("focus", onFocus);
    document.addEventListener("visibilitychange", onVisibility);
    return () => {
      window.removeEventListener("focus", onFocus);
      document.removeEventListener("visibilitychange", onVisibility);
    };
  }, [cache, confirmReturn]);
  return <PaywallContext.Provider value={cache}>{children}</PaywallContext.Provider>;
}

export interface EntitlementsState {
  entitlements: Entitlements | null;
  error: Error | null;
  /** True until the first answer: a revalidation keeps showing what is known. */
  loading: boolean;
  /** Fetch again now (after a change the server made, e.g. a grant); resolves when settled. */
  refresh: () => Promise<void>;
}

export function useEntitlements(): EntitlementsState {
  const cache = useCache();
  const { entitlements, error, loading } = useSnapshot();
  const refresh = useCallback(() => cache.refresh(), [cache]);
  return { entitlements, error, loading, refresh };
}

/** The provider's confirmation of the checkout return this page was loaded with, if any. */
export function useCheckoutReturn(): CheckoutReturn {
  return useSnapshot().checkout;
}

/**
 * Whether the plan includes `name`; `allowed` is false while loading (the first fetch, and
 * the confirmation of a checkout return).
 */
export function useFeature(name: string): { allowed: boolean; loading: boolean } {
  const cache = useCache();
  // A primitive snapshot: a revalidation that leaves the feature as it was re-renders nothing.
  const read = () => {
    const { loading, entitlements, checkout } = cache.get();
    // While a checkout return is confirmed, what was bought is not known yet either.
    if (loading || checkout.confirming) return 0;
    return entitlements?.features.includes(name) ? 2 : 1;
  };
  const state = useSyncExternalStore(cache.subscribe, read, read);
  return { allowed: state === 2, loading: state === 0 };
}

export interface GateProps {
  feature: string;
  /** Shown when the plan does not include the feature (e.g. a <PricingTable />). */
  fallback?: ReactNode;
  /** Shown until the entitlements are known. */
  loading?: ReactNode;
  children?: ReactNode;
}

/** Renders its children only when the signed-in user's plan includes `feature`. */
export function Gate({ feature, fallback = null, loading = null, children }: GateProps) {
  const state = useFeature(feature);
  return <>{state.loading ? loading : state.allowed ? children : fallback}</>;
}

// ---- The pricing table ----

/** Friendly words for the API's error codes; `messages` on <PricingTable> overrides them. */
export const defaultMessages: Readonly<Record<string, string>> = {
  trial_used: "You have already had a trial of this plan.",
  trial_not_offered: "This plan has no free trial.",
  email_not_verified: "Verify your e-mail address to start a trial.",
  already_paid: "You already have a paid plan.",
  already_subscribed: "You already have a subscription: change it here or under billing.",
  checkout_in_progress: "A checkout is already opening: try again in a moment.",
  rate_limited: "Too many attempts: wait a little and try again.",
  busy: "The payment provider is busy: try again in a minute.",
  no_subscription: "You have no subscription to change.",
  same_plan: "You are already on this plan.",
  subscription_ended: "This subscription has ended: buy the plan again.",
  change_refused: "The payment provider refused the change.",
  not_a_subscription_plan: "That plan is not a subscription.",
  unknown_plan: "That plan is not for sale.",
  unauthorized: "Sign in first.",
};

export interface PricingTableProps {
  className?: string;
  /** Words per error code (translate, or say it your way); the defaults fill the rest. */
  messages?: Record<string, string>;
}

// Minor units in the currency, as a price reads ("$30.00", "¥500"). Dodo's amounts are
// integers in the currency's lowest denomination (openapi.yaml: "minor units"; cents for
// USD), so the exponent is the currency's own, as Intl knows it from ISO 4217: 2 for USD,
// 0 for JPY and KRW (the yen is its own lowest denomination), 3 for BHD. (Dodo's docs say
// "lowest denomination"; a zero-decimal amount from Dodo has not been seen here.)
function money(amount: number, currency: string): string {
  try {
    const format = new Intl.NumberFormat("en-US", { style: "currency", currency: currency || "USD" });
    const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
    return format.format(amount / 10 ** digits);
  } catch {
    return `${(amount / 100).toFixed(2)} ${currency}`;
  }
}

// The date of an RFC 3339 timestamp (UTC): what a person needs of a billing moment.
function day(timestamp: string | null | undefined): string {
  return timestamp ? timestamp.slice(0, 10) : "the next billing date";
}

const DAYS_PER_INTERVAL: Record<string, number> = { day: 1, week: 7, month: 30, year: 365 };

// What a plan costs a day: whether a change is an up- or a downgrade, before the preview
// (which then says so as the catalogue ranks plans).
function perDay(plan: Plan): number {
  if (plan.price_amount == null) return 0;
  const days = plan.kind === "pass" ? plan.days : DAYS_PER_INTERVAL[plan.interval ?? ""];
  return days ? plan.price_amount / days : 0;
}

// Dodo's preview in words: "$30.00 now, then $99.00/month from 2027-01-06". Its amount is
// charged when the change takes effect: now, or at the next billing date (nothing now).
function previewWords(change: ChangePreview, plan: Plan | undefined): string {
  const p = change.preview;
  const interval = plan?.interval ? `/${plan.interval}` : "";
  const next = `then ${money(p.next_charge, p.currency)}${interval} from ${day(p.next_charge_at)}`;
  const credit = p.credit > 0 ? ` (${money(p.credit, p.currency)} credited)` : "";
  if (change.effective_at === "immediately") {
    return `${p.charge_now > 0 ? `${money(p.charge_now, p.currency)} now` : "nothing now"}${credit}, ${next}`;
  }
  const first = p.amount !== p.next_charge ? `${money(p.amount, p.currency)} on ${day(p.effective_at)}, ` : "";
  return `nothing now${credit}, ${first}${next}`;
}

function classes(...names: (string | false | undefined)[]): string {
  return names.filter(Boolean).join(" ");
}

interface ActionButtonProps {
  label: string;
  text: string;
  primary?: boolean;
  disabled: boolean;
  onClick: () => void;
}

function ActionButton({ label, text, primary, disabled, onClick }: ActionButtonProps) {
  return (
    <button
      type="button"
      className={classes("dp-button", primary && "dp-button--primary")}
      aria-label={label}
      disabled={disabled}
      onClick={onClick}
    >
      {text}
    </button>
  );
}

function Includes({ features, limits }: { features: string[]; limits: Record<string, number> }) {
  const items = [...features, ...Object.entries(limits).map(([name, value]) => `${name}: ${value}`)];
  return (
    <ul className="dp-plan__features">
      {items.length ? items.map((item) => <li key={item}>{item}</li>) : <li>nothing</li>}
    </ul>
  );
}

/**
 * The catalogue (`plans()`) with what the signed-in user can do on each plan: buy a pass,
 * subscribe, start a trial (Dodo's with a card at checkout, or the paywall's card-less one
 * at once), up- or downgrade with Dodo's preview confirmed first, cancel or resume. Unstyled:
 * style the `dp-` classes.
 */
export function PricingTable(props: PricingTableProps) {
  // Another user (a new cache): a new table, with nothing of the last one's status,
  // preview or message.
  return <PricingTableOf key={useCache().id} {...props} />;
}

function PricingTableOf({ className, messages }: PricingTableProps) {
  const cache = useCache();
  const { paywall } = cache;
  const { revision } = useSnapshot();
  const [plans, setPlans] = useState<PlanListing | null>(null);
  const [plansError, setPlansError] = useState<Error | null>(null);
  // The user's status (undefined: not read yet; null: signed out or unreadable).
  const [account, setAccount] = useState<Status | null | undefined>(undefined);
  const [pending, setPending] = useState<ChangePreview | null>(null);
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  const confirmRef = useRef<HTMLButtonElement>(null);
  const previewTitle = useId();

  const problem = useCallback(
    (what: string, error: unknown) => {
      if (!isCoded(error)) return `${what}: ${asError(error).message}`;
      const words = messages?.[error.code] ?? defaultMessages[error.code] ?? error.message;
      // The API says how long to wait; say it too.
      const wait = error.code === "rate_limited" && error.retryAfter ? ` (${error.retryAfter} s)` : "";
      return `${what}: ${words}${wait}`;
    },
    [messages],
  );

  useEffect(() => {
    let live = true;
    paywall.plans().then(
      (listing) => live && (setPlans(listing), setPlansError(null)),
      (error: unknown) => live && setPlansError(asError(error)),
    );
    return () => {
      live = false;
    };
  }, [paywall]);

  // The status follows the entitlements: each settled (re)fetch reads it again, a 304
  // while nothing changed.
  useEffect(() => {
    if (revision === 0) return;
    let live = true;
    paywall.status().then(
      (status) => live && setAccount(status),
      (error: unknown) => {
        if (!live) return;
        // Signed out: the plans without buttons. Anything else is worth saying.
        if (isCoded(error) && error.code === "unauthorized") setAccount(null);
        else setMessage(problem("Could not read your plan", error));
      },
    );
    return () => {
      live = false;
    };
    // Not on `problem`: an inline `messages` object is new each render, and reading the
    // status on each render would loop.
  }, [paywall, revision]);

  useEffect(() => {
    if (pending) confirmRef.current?.focus();
  }, [pending]);

  // One action at a time; the table's buttons wait for it, then everything is read again.
  const run = async (action: () => Promise<string | null>) => {
    setBusy(true);
    try {
      const said = await action();
      if (said !== null) setMessage(said);
    } finally {
      setBusy(false);
    }
  };

  const checkout = (plan: string) =>
    run(async () => {
      setPending(null);
      try {
        await paywall.redirectToCheckout(plan);
        return "Opening the checkout…";
      } catch (error) {
        return problem("Could not open the checkout", error);
      }
    });

  const trial = (plan: string) =>
    run(async () => {
      setPending(null);
      try {
        const status = await paywall.startTrial(plan);
        setAccount(status);
        return `Your ${plan} trial runs until ${day(status.trial_ends_at)}.`;
      } catch (error) {
        return problem("Could not start the trial", error);
      } finally {
        await cache.refresh();
      }
    });

  const preview = (plan: string) =>
    run(async () => {
      setPending(null);
      try {
        setPending(await paywall.previewPlanChange(plan));
        return "";
      } catch (error) {
        return problem("Could not preview the change", error);
      }
    });

  const confirmChange = (plan: string) =>
    run(async () => {
      try {
        const change = await paywall.changePlan(plan);
        setPending(null);
        setAccount(change.status);
        if (!change.applied) return `Your ${change.from} plan stays: the charge for ${plan} did not go through.`;
        if (change.effective_at === "immediately") return `You are now on ${plan}.`;
        return `Your plan moves to ${plan} on ${day(change.status.scheduled_change?.at)}.`;
      } catch (error) {
        return problem("Could not change the plan", error);
      } finally {
        await cache.refresh();
      }
    });

  const dropScheduledChange = () =>
    run(async () => {
      setPending(null);
      try {
        const status = await paywall.cancelScheduledChange();
        setAccount(status);
        return `The scheduled change is cancelled: your plan stays ${status.plan}.`;
      } catch (error) {
        return problem("Could not cancel the scheduled change", error);
      } finally {
        await cache.refresh();
      }
    });

  const setCancelled = (cancel: boolean) =>
    run(async () => {
      setPending(null);
      try {
        const status = await (cancel ? paywall.cancel() : paywall.resume());
        setAccount(status);
        return cancel
          ? `Cancelled: access runs until ${day(status.plan_expires_at)}, then ends.`
          : `Resumed: the subscription renews on ${day(status.plan_expires_at)}.`;
      } catch (error) {
        return problem(cancel ? "Could not cancel" : "Could not resume", error);
      } finally {
        await cache.refresh();
      }
    });

  if (plansError) {
    return <p className={classes("dp-pricing", "dp-pricing--error", className)} role="alert">{problem("Could not load the plans", plansError)}</p>;
  }
  if (!plans) {
    return <p className={classes("dp-pricing", "dp-pricing--loading", className)}>Loading the plans…</p>;
  }

  // The subscription the user has through Dodo, if any (theirs to cancel, others to change to).
  const subscribed =
    account?.subscription_id && account.has_paid && ["active", "trialing", "past_due"].includes(account.status)
      ? plans.plans.find((p) => p.name === account.plan && p.kind === "subscription")
      : undefined;
  // The paywall's own card-less trial (no Dodo subscription).
  const cardlessTrial = account?.status === "trialing" && !account.subscription_id ? account.plan : null;

  const actions = (plan: Plan): ReactNode => {
    if (account === undefined) return null;
    if (account === null) return <span className="dp-plan__note">Sign in to choose</span>;
    const disabled = busy;
    const trialText = plan.trial ? `Start ${plan.trial.days}-day trial` : "";
    if (plan.kind === "pass") {
      const holds = account.has_paid && account.plan === plan.name && !account.subscription_id;
      return (
        <>
          {holds && <span className="dp-badge">Yours until {day(account.plan_expires_at)}</span>}
          <ActionButton label={`Buy ${plan.name}`} text="Buy" primary={!subscribed} disabled={disabled} onClick={() => void checkout(plan.name)} />
        </>
      );
    }
    if (subscribed?.name === plan.name) {
      return (
        <>
          <span className="dp-badge">{account.status === "trialing" ? "Your plan (trial)" : "Your plan"}</span>
          {account.cancel_at_period_end ? (
            <ActionButton label={`Resume ${plan.name} subscription`} text="Resume" primary disabled={disabled} onClick={() => void setCancelled(false)} />
          ) : (
            <ActionButton label={`Cancel ${plan.name} subscription`} text="Cancel" disabled={disabled} onClick={() => void setCancelled(true)} />
          )}
        </>
      );
    }
    if (subscribed) {
      const scheduled = account.scheduled_change;
      if (scheduled?.plan === plan.name) {
        return (
          <>
            <span className="dp-badge">From {day(scheduled.at)}</span>
            <ActionButton label={`Cancel scheduled change to ${plan.name}`} text="Cancel scheduled change" disabled={disabled} onClick={() => void dropScheduledChange()} />
          </>
        );
      }
      const up = perDay(plan) >= perDay(subscribed);
      const text = up ? "Upgrade" : "Downgrade";
      return <ActionButton label={`${text} to ${plan.name}`} text={text} primary={up} disabled={disabled} onClick={() => void preview(plan.name)} />;
    }
    if (plan.trial?.card) {
      // Dodo's trial: its checkout takes the card and charges at the trial's end (someone
      // who had one is charged at once, as the checkout then says).
      return <ActionButton label={`${trialText} of ${plan.name}`} text={trialText} primary disabled={disabled} onClick={() => void checkout(plan.name)} />;
    }
    const onTrial = cardlessTrial === plan.name;
    return (
      <>
        {onTrial && <span className="dp-badge">On trial until {day(account.trial_ends_at)}</span>}
        {plan.trial && !onTrial && !(account.has_paid && !cardlessTrial) && (
          <ActionButton label={`${trialText} of ${plan.name}`} text={trialText} primary disabled={disabled} onClick={() => void trial(plan.name)} />
        )}
        <ActionButton label={`Subscribe to ${plan.name}`} text="Subscribe" primary={onTrial} disabled={disabled} onClick={() => void checkout(plan.name)} />
      </>
    );
  };

  const pendingPlan = pending ? plans.plans.find((p) => p.name === pending.plan) : undefined;
  const direction = pending?.direction === "upgrade" ? "Upgrade" : "Downgrade";

  return (
    <div className={classes("dp-pricing", className)}>
      <ul className="dp-pricing__plans">
        {plans.free && (
          <li className="dp-plan dp-plan--free" data-plan="free">
            <h3 className="dp-plan__name">free</h3>
            <p className="dp-plan__price">$0</p>
            <Includes features={plans.free.features} limits={plans.free.limits} />
          </li>
        )}
        {plans.plans.map((plan) => {
          const current = subscribed?.name === plan.name || cardlessTrial === plan.name;
          return (
            <li
              key={plan.name}
              className={classes("dp-plan", `dp-plan--${plan.kind}`, current && "dp-plan--current")}
              data-plan={plan.name}
              aria-current={current ? "true" : undefined}
            >
              <h3 className="dp-plan__name">{plan.name}</h3>
              <p className="dp-plan__price">{plan.price ?? "—"}</p>
              <p className="dp-plan__billing">
                {plan.kind === "pass" ? `one payment, ${plan.days} days of access` : `billed every ${plan.interval}`}
              </p>
              {plan.trial && (
                <p className="dp-plan__trial">
                  {plan.trial.days}-day free trial, {plan.trial.card ? "card required" : "no card needed"}
                </p>
              )}
              <Includes features={plan.features} limits={plan.limits} />
              <div className="dp-plan__actions">{actions(plan)}</div>
            </li>
          );
        })}
      </ul>
      {pending && (
        <div className="dp-pricing__change" role="region" aria-labelledby={previewTitle}>
          <h3 id={previewTitle}>
            {direction} from {pending.from} to {pending.plan}
          </h3>
          <p className="dp-pricing__change-text">
            {direction} to {pending.plan},{" "}
            {pending.effective_at === "immediately"
              ? "effective immediately"
              : `effective at the next billing date (${day(pending.preview.effective_at)})`}
            : {previewWords(pending, pendingPlan)}.
          </p>
          <button
            ref={confirmRef}
            type="button"
            className="dp-button dp-button--primary"
            disabled={busy}
            onClick={() => void confirmChange(pending.plan)}
          >
            Confirm {direction.toLowerCase()} to {pending.plan}
          </button>
          <button
            type="button"
            className="dp-button"
            disabled={busy}
            onClick={() => {
              setPending(null);
              setMessage("Nothing changed.");
            }}
          >
            Keep my current plan
          </button>
        </div>
      )}
      <p className="dp-pricing__message" role="status" aria-live="polite">
        {message}
      </p>
    </div>
  );
}
