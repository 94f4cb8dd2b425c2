// The README's ten-line integration, verbatim (between the markers), type-checked against
// the built package as an app imports it: `npm test` fails if the API no longer fits it.
declare const auth: { currentUser: { getIdToken(): Promise<string> } | null };

// --- README ---
import { createPaywall } from "dodo-paywall";

const paywall = createPaywall({
  baseUrl: "https://abc123.execute-api.us-east-1.amazonaws.com", // the stack's ApiUrl output
  getToken: () => auth.currentUser?.getIdToken(),                 // your identity provider's JWT
});

await paywall.confirmReturn();                        // back from Dodo's checkout: records the payment
const { features } = await paywall.entitlements();
if (!features.includes("export")) await paywall.redirectToCheckout("pro");
// --- end ---

// The server entry, as the package README shows it.
import { createServerClient, isPaywallError } from "dodo-paywall/server";
const server = createServerClient({ baseUrl: "https://abc123.execute-api.us-east-1.amazonaws.com" });
const provider = async () => ({ accessKeyId: "a", secretAccessKey: "b", sessionToken: "c", expiration: new Date() });
createServerClient({ baseUrl: "", credentials: provider });
try {
  const { allowed, remaining } = await server.usage("user-1", "api_calls", 1, { idempotencyKey: "job-1" });
  const n: number = remaining;
  void [allowed, n];
} catch (e) {
  if (isPaywallError(e, "idempotency_key_reused")) void e.status;
}
export {};
