//! `POST /payment/success`, body `{payment_id}`: called by the frontend when Dodo sends the
//! buyer back. The redirect proves nothing, so we ask Dodo, and grant only a succeeded
//! payment that belongs to the caller.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::{StartError, rate_limit};
use crate::access::AccessView;
use crate::api::{ApiError, answer, caller, json_body, json_response};
use crate::config::{DodoConfig, StoreConfig, Vars};
use crate::dodo::{DodoClient, PaymentStatus};
use crate::ids::PaymentId;
use crate::plan::Catalog;
use crate::purchase::{
    Applied, Linking, apply_payment, metadata_user, owner_of, subscription_plan_for,
};
use crate::runtime::Handler;
use crate::store::{GrantOutcome, GrantSource, Store};
use crate::time::{Clock, Timestamp};

/// The most Dodo calls one success request makes: the payment, then its subscription.
const DODO_CALLS: i64 = 2;

#[derive(Debug, Default, Deserialize)]
struct SuccessInput {
    payment_id: Option<String>,
    /// The original router's spelling, still accepted.
    #[serde(rename = "paymentId")]
    payment_id_camel: Option<String>,
}

pub struct SuccessHandler {
    store: Store,
    dodo: DodoClient,
    catalog: Catalog,
    clock: Clock,
}

impl SuccessHandler {
    pub fn new(store: Store, dodo: DodoClient, catalog: Catalog) -> Self {
        Self {
            store: store.with_access_events(crate::access_events::observer(&catalog)),
            dodo,
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
        let fetched = crate::secrets::fetch(&env, &[crate::secrets::DODO_API_KEY]).await?;
        let vars = env.with_fetched(&fetched);
        let table = StoreConfig::from_vars(&vars)?;
        let dodo = DodoClient::new(&DodoConfig::from_vars(&vars)?)?;
        let catalog = Catalog::from_vars(&vars)?;
        Ok(Self::new(
            Store::connect(&table).with_dodo_budget(crate::store::DodoBudget::from_vars(&vars)?),
            dodo,
            catalog,
        ))
    }

    pub async fn respond(
        &self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        let caller = caller(request)?;
        let input: SuccessInput = json_body(request)?;
        let raw_id = input
            .payment_id
            .or(input.payment_id_camel)
            .ok_or_else(|| ApiError::bad_request("payment_id is required"))?;
        let payment_id =
            PaymentId::parse(&raw_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Dodo is asked only about a payment that can be the caller's (issue 17, M3): one
        // granted to someone else is refused here, and a caller who has no checkout
        // waiting and never bought anything has nothing to confirm, so that a free
        // account's loop of made-up ids costs no Dodo call.
        let granted = self.store.payment_grant(payment_id.as_str()).await?;
        if granted
            .as_ref()
            .is_some_and(|grant| grant.user_id != caller.user_id)
        {
            return Err(not_yours());
        }
        let account = self.store.get_account(&caller.user_id).await?;
        let waiting = account
            .profile
            .as_ref()
            .is_some_and(|p| p.pending_checkout.is_some() || !p.passes.is_empty())
            || !account.subscriptions.is_empty()
            || granted.is_some();
        if !waiting {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "payment_not_found",
                "no checkout of yours is waiting for a payment; access from a payment \
                 arrives by its webhook",
            ));
        }
        rate_limit(&self.store, &caller.user_id, &self.clock, DODO_CALLS).await?;

        let payment = self.dodo.get_payment(&payment_id).await.map_err(|err| {
            if err.is_not_found() {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "payment_not_found",
                    "Dodo Payments knows no payment with this id",
                )
            } else {
                err.into()
            }
        })?;
        if payment.payment_id != payment_id.as_str() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "dodo_bad_response",
                "Dodo Payments answered with another payment",
            ));
        }

        // Ownership first: another user's payment reveals nothing, not even its status.
        let owner = owner_of(&self.store, &payment, Linking::Strict).await?;
        if owner.as_ref() != Some(&caller.user_id) {
            tracing::warn!(user_id = %caller.user_id, payment_id = %payment_id, "caller claimed a payment that is not theirs");
            return Err(not_yours());
        }

        match &payment.status {
            PaymentStatus::Succeeded => {}
            PaymentStatus::Failed => {
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_failed",
                    "the payment failed; no access was granted",
                ));
            }
            PaymentStatus::Cancelled => {
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_cancelled",
                    "the payment was cancelled; no access was granted",
                ));
            }
            PaymentStatus::InProgress(_) | PaymentStatus::Unknown(_) | PaymentStatus::Missing => {
                return Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({
                        "status": "pending",
                        "message": "the payment is still being processed; ask again shortly",
                    }),
                ));
            }
        }

        // A subscription's payment: its subscription must not name another user, checked
        // before anything is written (L12). Stamped with the time before asking, so that a
        // webhook about anything later still wins.
        let observed_at = self.clock.now_millis();
        let subscription = match (&payment.status, &payment.subscription_id) {
            (PaymentStatus::Succeeded, Some(subscription_id)) => {
                let subscription = self.dodo.get_subscription(subscription_id).await?;
                if metadata_user(&subscription.metadata)
                    .is_some_and(|owner| owner != caller.user_id)
                {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "payment_not_yours",
                        "this payment's subscription belongs to another user",
                    ));
                }
                Some(subscription)
            }
            _ => None,
        };

        let applied = apply_payment(
            &self.store,
            &self.catalog,
            &caller.user_id,
            &payment,
            GrantSource::SuccessCall,
            now,
        )
        .await?;
        match applied {
            Applied::Nothing(why) => {
                tracing::info!(payment_id = %payment_id, reason = why.as_str(), "the payment bought nothing this paywall sells");
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "payment_not_for_this_product",
                    "this payment bought nothing this paywall sells",
                ));
            }
            Applied::SubscriptionPayment { subscription_id } => {
                // Access follows the subscription: its state as Dodo gave it just now (the
                // freshest there is) instead of waiting for its webhook.
                let subscription = match subscription {
                    Some(read) if read.subscription_id == subscription_id => read,
                    _ => self.dodo.get_subscription(&subscription_id).await?,
                };
                let Some(plan) = subscription_plan_for(&self.catalog, &subscription) else {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "payment_not_for_this_product",
                        "this payment's subscription is to a product this paywall does not sell",
                    ));
                };
                self.store
                    .apply_subscription(
                        &caller.user_id,
                        &subscription,
                        Some(&plan.name),
                        observed_at,
                    )
                    .await?;
            }
            Applied::Pass(GrantOutcome::Applied(_)) => {
                tracing::info!(user_id = %caller.user_id, payment_id = %payment_id, "payment granted by the success call");
            }
            // Granted before (by the webhook or an earlier call): answer as a success.
            Applied::Pass(GrantOutcome::AlreadyApplied { owner }) if owner == caller.user_id => {}
            Applied::Pass(GrantOutcome::AlreadyApplied { .. }) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "payment_not_yours",
                    "this payment does not belong to the signed-in user",
                ));
            }
            Applied::Pass(GrantOutcome::Revoked) => {
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_refunded",
                    "this payment was refunded or lost in a dispute; no access was granted",
                ));
            }
        }

        let account = self.store.get_account(&caller.user_id).await?;
        let view = AccessView::of(&account, &self.catalog, now);
        if !view.has_paid {
            // Paid, but the subscription is not active yet: Dodo's webhook will tell.
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"status": "pending", "message": "the subscription is not active yet; ask again shortly"}),
            ));
        }
        let mut body = serde_json::to_value(view).unwrap_or_else(|_| json!({}));
        body["status"] = json!("success");
        body["message"] = json!("payment confirmed");
        Ok(json_response(StatusCode::OK, &body))
    }
}

impl Handler for SuccessHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        crate::store::with_cause(
            "success",
            self.clock.clone(),
            answer(&request, self.respond(&request, self.clock.now())),
        )
        .await
    }
}

fn not_yours() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "payment_not_yours",
        "this payment does not belong to the signed-in user",
    )
}
