//! Dodo's webhook (the function's URL, `POST` any path): verify the signature on the
//! exact bytes received, then apply the event. 2xx only once the effect is durably
//! stored; 5xx on a transient failure so that Dodo retries.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::StartError;
use crate::api::{ApiError, json_response};
use crate::config::{StoreConfig, Vars, WebhookConfig};
use crate::dodo::{Payment, PaymentStatus};
use crate::events::{self, Event};
use crate::plan::Catalog;
use crate::purchase::{Linking, owner_of, plan_for};
use crate::runtime::Handler;
use crate::store::{Grant, GrantOutcome, GrantSource, Store};
use crate::time::Timestamp;
use crate::webhook_signature::{SignedHeaders, WebhookSecret, verify};

pub struct WebhookHandler {
    store: Store,
    secret: WebhookSecret,
    catalog: Catalog,
}

impl WebhookHandler {
    pub fn new(store: Store, secret: WebhookSecret, catalog: Catalog) -> Self {
        Self {
            store,
            secret,
            catalog,
        }
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let vars = Vars::process();
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
            return Err(ApiError::method_not_allowed());
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

        let outcome = match event {
            Event::PaymentSucceeded(payment) => self.on_payment_succeeded(&payment, now).await?,
            Event::Ignored { event_type } => {
                tracing::info!(webhook_id = %delivery_id, event_type = %event_type, "event ignored");
                "ignored"
            }
        };
        tracing::info!(webhook_id = %delivery_id, outcome, "webhook processed");
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ok", "outcome": outcome}),
        ))
    }

    async fn on_payment_succeeded(
        &self,
        payment: &Payment,
        now: Timestamp,
    ) -> Result<&'static str, ApiError> {
        let payment_id = &payment.payment_id;
        // The payload is the payment's latest state; only a succeeded one grants.
        if !matches!(
            payment.status,
            PaymentStatus::Succeeded | PaymentStatus::Missing
        ) {
            tracing::info!(payment_id, status = ?payment.status, "payment.succeeded carries a payment that has not succeeded");
            return Ok("ignored");
        }
        let Some(plan) = plan_for(&self.catalog, payment) else {
            tracing::info!(
                payment_id,
                "payment for a product this paywall does not sell"
            );
            return Ok("ignored");
        };
        let Some(user_id) = owner_of(&self.store, payment, Linking::AllowEmail).await? else {
            // Retrying cannot help; keep it for support rather than lose it.
            self.store
                .record_unmatched_payment(payment_id, payment.customer_email.as_deref(), now)
                .await?;
            tracing::warn!(
                payment_id,
                "succeeded payment linked to no user; kept as unmatched"
            );
            return Ok("unmatched");
        };
        let grant = Grant {
            user_id,
            payment_id: payment_id.clone(),
            plan: plan.name.clone(),
            days: plan.days,
            source: GrantSource::Webhook,
        };
        Ok(match self.store.apply_grant(&grant, now).await? {
            GrantOutcome::Applied(_) => {
                tracing::info!(payment_id, user_id = %grant.user_id, "payment granted by webhook");
                "granted"
            }
            GrantOutcome::AlreadyApplied { .. } => "duplicate",
        })
    }
}

impl Handler for WebhookHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        self.respond(&request, Timestamp::now())
            .await
            .unwrap_or_else(ApiError::into_response)
    }
}
