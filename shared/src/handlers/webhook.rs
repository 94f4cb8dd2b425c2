//! Dodo's webhook (the function's URL, `POST` any path): verify the signature on the
//! exact bytes received, then apply the event. 2xx only once the effect is durably
//! stored; 5xx on a transient failure so that Dodo retries.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::StartError;
use crate::api::{ApiError, WEBHOOK_DEADLINE, answer_within, json_response};
use crate::config::{StoreConfig, Vars, WebhookConfig};
use crate::dodo::{Payment, PaymentStatus};
use crate::events::{self, Event};
use crate::ids::UserId;
use crate::plan::Catalog;
use crate::purchase::{
    Applied, Linking, Purchase, apply_payment, owner_of, subscription_owner_of,
    subscription_plan_for, what_payment_buys,
};
use crate::runtime::Handler;
use crate::store::with_cause;
use crate::store::{
    AuditEntry, Claim, ClaimOutcome, GrantOutcome, GrantSource, Store, SubscriptionOutcome,
};
use crate::subscription::Subscription;
use crate::time::{Clock, Timestamp};
use crate::webhook_signature::{SignedHeaders, WebhookSecret, verify};

pub struct WebhookHandler {
    store: Store,
    secret: WebhookSecret,
    catalog: Catalog,
    clock: Clock,
}

impl WebhookHandler {
    pub fn new(store: Store, secret: WebhookSecret, catalog: Catalog) -> Self {
        Self {
            store: store.with_access_events(crate::access_events::observer(&catalog)),
            secret,
            catalog,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` instead of the system's (the local test clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let env = Vars::process();
        let fetched = crate::secrets::fetch(&env, &[crate::secrets::WEBHOOK_SECRET]).await?;
        let vars = env.with_fetched(&fetched);
        let table = StoreConfig::from_vars(&vars)?;
        let webhook = WebhookConfig::from_vars(&vars)?;
        let catalog = Catalog::from_vars(&vars)?;
        Ok(Self::new(Store::connect(&table), webhook.secret, catalog))
    }

    pub async fn respond(
        &self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        if request.method() != Method::POST {
            return Err(ApiError::method_not_allowed("POST"));
        }
        // lambda_http has already base64-decoded the body when `isBase64Encoded`: these
        // are the exact bytes Dodo signed. Never re-serialise before verifying.
        let body = request.body().as_ref();
        let delivery_id = verify(
            &self.secret,
            SignedHeaders::from_http(request.headers()),
            body,
            now.unix_seconds(),
        )
        .map_err(|err| {
            tracing::warn!(reason = %err, "webhook refused");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "the webhook signature is missing, invalid or expired",
            )
        })?
        .to_owned();

        let event = events::parse(body).map_err(|err| {
            tracing::warn!(webhook_id = %delivery_id, reason = %err, "malformed webhook");
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_event", err.to_string())
        })?;

        let event_type = event.event_type().to_owned();
        // A failure after the delivery was verified names it in its log line (the one
        // `request failed` line), so that support can match it to Dodo's delivery log.
        self.apply(event, &delivery_id, &event_type, now)
            .await
            .map_err(|err| {
                let detail = format!(
                    "webhook_id {delivery_id}, {event_type}: {}",
                    err.detail.as_deref().unwrap_or(err.code)
                );
                err.with_detail(detail)
            })
    }

    /// What a verified delivery does: its effect, its audit entry, its one log line.
    async fn apply(
        &self,
        event: Event,
        delivery_id: &str,
        event_type: &str,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        let (done, object_id) = match event {
            Event::PaymentSucceeded(payment) => {
                let done = self.on_payment_succeeded(&payment, now).await?;
                (done, payment.payment_id)
            }
            Event::Subscription {
                subscription,
                occurred_at,
                ..
            } => {
                let occurred_at = occurred_at.unwrap_or_else(|| self.clock.now_millis());
                let done = self
                    .on_subscription(&subscription, occurred_at, now)
                    .await?;
                (done, subscription.subscription_id)
            }
            Event::Refund { payment_id, full } => {
                let outcome = self
                    .store
                    .apply_claim(&payment_id, &Claim::Refund { full }, now)
                    .await?;
                let user = self.grantee(&payment_id).await?;
                (Done::new(claim_outcome(outcome), user), payment_id)
            }
            Event::Dispute {
                payment_id,
                status,
                occurred_at,
                ..
            } => {
                let event_at = occurred_at.unwrap_or_else(|| self.clock.now_millis());
                let outcome = self
                    .store
                    .apply_claim(&payment_id, &Claim::Dispute { status, event_at }, now)
                    .await?;
                let user = self.grantee(&payment_id).await?;
                (Done::new(claim_outcome(outcome), user), payment_id)
            }
            Event::Ignored { .. } => (Done::new("ignored", None), String::new()),
        };
        let Done {
            outcome,
            user,
            reason,
            status,
        } = done;
        // The audit trail, after the effect: if this write fails, Dodo's retry re-applies
        // nothing (every effect is idempotent) and writes the entry then.
        if let Some(user) = &user {
            let entry = AuditEntry {
                webhook_id: delivery_id.to_owned(),
                event_type: event_type.to_owned(),
                effect: outcome.to_owned(),
                object_id: object_id.clone(),
                at: now,
                actor: None,
                reason: None,
            };
            self.store.record_event(user, &entry).await?;
        }
        // The delivery's one log line, whatever it did (a line per DynamoDB call or per
        // step would multiply what CloudWatch Logs bills for every payment). An event
        // kept aside for support (linked to no user) is a warning.
        let user_id = user.as_ref().map(|u| u.as_str());
        let object_id = (!object_id.is_empty()).then_some(object_id.as_str());
        let status = status.as_deref();
        if outcome == "unmatched" {
            tracing::warn!(webhook_id = %delivery_id, event_type = %event_type, outcome, object_id, reason, "webhook processed");
        } else {
            tracing::info!(webhook_id = %delivery_id, event_type = %event_type, outcome, object_id, user_id, reason, status, "webhook processed");
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ok", "outcome": outcome}),
        ))
    }

    /// The user a payment was granted to (a pass) or paid for (a subscription), if any.
    async fn grantee(&self, payment_id: &str) -> Result<Option<UserId>, ApiError> {
        if let Some(grant) = self.store.payment_grant(payment_id).await? {
            return Ok(Some(grant.user_id));
        }
        Ok(self
            .store
            .subscription_payment(payment_id)
            .await?
            .map(|paid| paid.user_id))
    }

    async fn on_payment_succeeded(
        &self,
        payment: &Payment,
        now: Timestamp,
    ) -> Result<Done, ApiError> {
        let payment_id = &payment.payment_id;
        // The payload is the payment's latest state; only a succeeded one grants.
        if !matches!(
            payment.status,
            PaymentStatus::Succeeded | PaymentStatus::Missing
        ) {
            return Ok(Done::new("ignored", None)
                .because("the payment has not succeeded")
                .with_status(format!("{:?}", payment.status)));
        }
        if let Purchase::Nothing(why) = what_payment_buys(&self.catalog, payment) {
            return Ok(Done::new("ignored", None).because(why.as_str()));
        }
        let Some(user_id) = owner_of(&self.store, payment, Linking::AllowEmail).await? else {
            // Retrying cannot help; keep it for support rather than lose it.
            self.store
                .record_unmatched(
                    "PAYMENT",
                    payment_id,
                    payment.customer_email.as_deref(),
                    now,
                )
                .await?;
            return Ok(Done::new("unmatched", None).because("linked to no user; kept for support"));
        };
        let applied = apply_payment(
            &self.store,
            &self.catalog,
            &user_id,
            payment,
            GrantSource::Webhook,
            now,
        )
        .await?;
        let outcome = match applied {
            Applied::Pass(GrantOutcome::Applied(_)) => "granted",
            Applied::Pass(GrantOutcome::AlreadyApplied { .. }) => "duplicate",
            Applied::Pass(GrantOutcome::Revoked) => "revoked",
            // Its subscription's events grant the access.
            Applied::SubscriptionPayment { .. } => "subscription_payment",
            Applied::Nothing(_) => "ignored",
        };
        Ok(Done::new(outcome, Some(user_id)))
    }

    /// Stores the subscription's state for its owner unless a newer event was applied.
    async fn on_subscription(
        &self,
        subscription: &Subscription,
        occurred_at: i64,
        now: Timestamp,
    ) -> Result<Done, ApiError> {
        let id = &subscription.subscription_id;
        let plan = subscription_plan_for(&self.catalog, subscription);
        let owner = subscription_owner_of(&self.store, subscription, Linking::AllowEmail).await?;
        let user = match (plan, owner) {
            (_, Some(user)) => user,
            (None, None) => return Ok(Done::new("ignored", None).because(NOT_SOLD)),
            (Some(_), None) => {
                self.store
                    .record_unmatched(
                        "SUBSCRIPTION",
                        id,
                        subscription.customer_email.as_deref(),
                        now,
                    )
                    .await?;
                return Ok(
                    Done::new("unmatched", None).because("linked to no user; kept for support")
                );
            }
        };
        // A subscription of ours moved to a product we do not sell still has its state
        // stored: it then gives access only until the end of the period already paid.
        // One that was never on ours (another product of the same business) is none of
        // the paywall's business.
        if plan.is_none() && self.store.get_subscription(&user, id).await?.is_none() {
            return Ok(Done::new("ignored", None).because(NOT_SOLD));
        }
        let outcome = self
            .store
            .apply_subscription(
                &user,
                subscription,
                plan.map(|p| p.name.as_str()),
                occurred_at,
            )
            .await?;
        let outcome = match outcome {
            SubscriptionOutcome::Applied => "applied",
            SubscriptionOutcome::Stale => "stale",
        };
        Ok(Done::new(outcome, Some(user)).with_status(subscription.status.as_str().to_owned()))
    }
}

const NOT_SOLD: &str = "a subscription to a product this paywall does not sell";

/// What a delivery did: its answer's `outcome`, the user it concerned, and for the
/// delivery's one log line, why it was set aside and the state it carried.
struct Done {
    outcome: &'static str,
    user: Option<UserId>,
    reason: Option<&'static str>,
    status: Option<String>,
}

impl Done {
    fn new(outcome: &'static str, user: Option<UserId>) -> Self {
        Self {
            outcome,
            user,
            reason: None,
            status: None,
        }
    }

    fn because(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    fn with_status(mut self, status: String) -> Self {
        self.status = Some(status);
        self
    }
}

fn claim_outcome(outcome: ClaimOutcome) -> &'static str {
    match outcome {
        ClaimOutcome::Revoked => "revoked",
        ClaimOutcome::Restored => "restored",
        ClaimOutcome::Recorded => "recorded",
        ClaimOutcome::Unchanged => "duplicate",
    }
}

impl Handler for WebhookHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        // The delivery id names the access events it causes (it is verified before any
        // is written).
        let cause = request
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("webhook")
            .to_owned();
        with_cause(
            cause,
            self.clock.clone(),
            answer_within(
                WEBHOOK_DEADLINE,
                &request,
                self.respond(&request, self.clock.now()),
            ),
        )
        .await
    }
}
