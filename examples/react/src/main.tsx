// A founder's React app behind the paywall: sign in, see your plan, an "export" feature
// gated with <Gate> (its fallback the <PricingTable>), Manage billing, sign out and switch
// user.
//
// The app runs on its own origin, as a real frontend does (the API is API Gateway's URL in
// AWS): the API's base URL comes from `?api=…` (remembered for the return from checkout),
// else http://127.0.0.1:3000, `make dev`'s.
import { StrictMode, useState, type FormEvent } from "react";
import { createRoot } from "react-dom/client";
import { createPaywall, isPaywallError } from "dodo-paywall";
import { Gate, PaywallProvider, PricingTable, useCheckoutReturn, useEntitlements } from "dodo-paywall/react";

// What the demo catalogue (make dev's DEMO_PLANS) sells beyond the free tier: every paid
// plan and trial includes it, the free tier does not.
const FEATURE = "export";

const API_KEY = "dodo-example-api";
const SESSION_KEY = "dodo-example-session";

const api = apiBase();

function apiBase(): string {
  const fromQuery = new URLSearchParams(location.search).get("api");
  if (fromQuery) localStorage.setItem(API_KEY, fromQuery);
  return (fromQuery ?? localStorage.getItem(API_KEY) ?? "http://127.0.0.1:3000").replace(/\/+$/, "");
}

interface Session {
  sub: string;
  email: string;
  token: string;
}

function loadSession(): Session | null {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    return session?.token ? session : null;
  } catch {
    return null;
  }
}

// The signed-in user, as an identity provider's SDK holds it (`auth.currentUser`).
let currentSession: Session | null = loadSession();

// One client for the app, made once at module scope, as the READMEs show: `getToken` reads
// whoever is signed in now. The provider's `userKey` tells it when that changes.
const paywall = createPaywall({ baseUrl: api, getToken: () => currentSession?.token });

// Locally a test token comes from the local server's /dev/token; in your app, from your
// identity provider (Cognito, Auth0, Clerk…), as `getToken` below.
async function signIn(api: string, sub: string, email: string): Promise<Session> {
  const response = await fetch(`${api}/dev/token?${new URLSearchParams({ sub, email })}`);
  const body = (await response.json().catch(() => null)) as { token?: string; error?: { message: string } } | null;
  if (!response.ok || !body?.token) throw new Error(body?.error?.message ?? `status ${response.status}`);
  return { sub, email, token: body.token };
}

function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [sub, setSub] = useState("demo-user");
  const [email, setEmail] = useState("demo@example.com");
  const [error, setError] = useState("");
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!sub.trim()) return setError("Enter a user id.");
    try {
      onSignedIn(await signIn(api, sub.trim(), email.trim()));
    } catch (e) {
      setError(`Could not sign in at ${api}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  return (
    <section>
      <h2>Sign in</h2>
      <form id="signin" onSubmit={(e) => void submit(e)}>
        <label>
          User id <input id="sub" value={sub} onChange={(e) => setSub(e.target.value)} />
        </label>
        <label>
          E-mail <input id="email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} />
        </label>
        <button type="submit" className="primary">
          Sign in
        </button>
      </form>
      <p className="note" role="alert">
        {error}
      </p>
      <p className="note">API: {api}</p>
    </section>
  );
}

function ReturnMessage() {
  const { confirming, result, error, subscriptionId } = useCheckoutReturn();
  const { entitlements } = useEntitlements();
  let text = "";
  if (subscriptionId) {
    // A trial with a card: nothing was charged, the subscription's webhook starts it.
    if (confirming) text = "Waiting for your subscription to start…";
    else if (entitlements?.source === "subscription") text = "Your subscription has started.";
    else text = "Your subscription has not started yet: it shows here once Dodo confirms it.";
  } else if (confirming) text = "Confirming your payment…";
  else if (error) text = `Payment not confirmed: ${error.message}`;
  else if (result?.status === "success") text = "Payment confirmed. Thank you!";
  else if (result?.status === "pending") text = "Your payment is still processing: access follows when it clears.";
  return (
    <p id="return-message" role="status">
      {text}
    </p>
  );
}

function Plan() {
  const { entitlements, error, loading, refresh } = useEntitlements();
  if (loading) return <p>Loading your plan…</p>;
  return (
    <dl>
      <dt>Plan</dt>
      <dd id="plan">
        {entitlements?.plan ?? "none"}
        {entitlements?.source ? ` (${entitlements.source})` : ""}
      </dd>
      <dt>Until</dt>
      <dd id="valid-until">{entitlements?.trial_ends_at ?? entitlements?.valid_until ?? "—"}</dd>
      <dt>Features</dt>
      <dd id="features">{entitlements?.features.join(", ") || "none"}</dd>
      {error && (
        <dd className="note" role="alert">
          Could not refresh: {error.message}
        </dd>
      )}
      <dd>
        <button type="button" onClick={() => void refresh()}>
          Refresh
        </button>
      </dd>
    </dl>
  );
}

// What the plan unlocks: here, its limits as the paywall counts them.
function Export() {
  const { entitlements } = useEntitlements();
  const calls = entitlements?.limits["api_calls"];
  return (
    <section id="premium" className="premium">
      <h2>Export</h2>
      <p>Your data, exported. This part of the app is for paying users.</p>
      {calls && (
        <p id="usage">
          api_calls: {calls.used} of {calls.limit} used
        </p>
      )}
    </section>
  );
}

// Another user at once, without signing out first (a second account, an admin's "view as").
function SwitchUser({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [sub, setSub] = useState("");
  const [error, setError] = useState("");
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!sub.trim()) return setError("Enter a user id.");
    try {
      onSignedIn(await signIn(api, sub.trim(), `${sub.trim()}@example.com`));
      setSub("");
      setError("");
    } catch (e) {
      setError(`Could not switch: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  return (
    <form id="switch" onSubmit={(e) => void submit(e)}>
      <label>
        Switch to user id <input id="switch-sub" value={sub} onChange={(e) => setSub(e.target.value)} />
      </label>{" "}
      <button type="submit">Switch user</button>{" "}
      <span className="note" role="alert">
        {error}
      </span>
    </form>
  );
}

function ManageBilling() {
  const [message, setMessage] = useState("");
  const open = async () => {
    setMessage("Opening billing…");
    try {
      location.assign(await paywall.portal());
    } catch (e) {
      setMessage(isPaywallError(e, "no_customer") ? "Nothing to manage yet: choose a plan first." : `Could not open billing: ${String(e)}`);
    }
  };
  return (
    <p>
      <button type="button" id="portal" onClick={() => void open()}>
        Manage billing
      </button>{" "}
      <span id="portal-message" role="status">
        {message}
      </span>
    </p>
  );
}

function App() {
  const [session, setSession] = useState(currentSession);
  const change = (next: Session | null) => {
    if (next) localStorage.setItem(SESSION_KEY, JSON.stringify(next));
    else localStorage.removeItem(SESSION_KEY);
    currentSession = next;
    setSession(next);
  };
  // One provider, signed in or not: `userKey` starts its cache afresh on every sign-in,
  // sign-out and switch, so no one sees the last user's plan. Signed out, the gate shows
  // the public plans (plans() needs no token; nothing else is asked without one).
  return (
    <main>
      <h1>dodo-paywall · React example</h1>
      <PaywallProvider paywall={paywall} userKey={session?.sub ?? null}>
        {session ? (
          <>
            <section id="account">
              <p>
                Signed in as <strong id="who">{session.sub}</strong>{" "}
                <button type="button" onClick={() => change(null)}>
                  Sign out
                </button>
              </p>
              <ReturnMessage />
              <Plan />
              <ManageBilling />
            </section>
            <SwitchUser onSignedIn={change} />
          </>
        ) : (
          <SignIn onSignedIn={change} />
        )}
        <Gate
          feature={FEATURE}
          loading={<p id="gate-loading">Checking your plan…</p>}
          fallback={
            session ? (
              <section id="upgrade">
                <h2>Export is a paid feature</h2>
                <p>Choose a plan to unlock it.</p>
                <PricingTable />
              </section>
            ) : (
              // The plans are public: a visitor sees them (without buttons) before signing in.
              <section id="visitor-plans">
                <h2>Plans</h2>
                <PricingTable />
              </section>
            )
          }
        >
          <Export />
          <section id="plans">
            <h2>Plans</h2>
            <PricingTable />
          </section>
        </Gate>
      </PaywallProvider>
    </main>
  );
}

const root = document.getElementById("root");
if (!root) throw new Error("index.html has no #root");
createRoot(root).render(
  // StrictMode mounts effects twice in development: the provider still confirms a
  // checkout return once.
  <StrictMode>
    <App />
  </StrictMode>,
);
