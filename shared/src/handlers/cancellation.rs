//! `POST /payment/cancel`: the caller's subscription ends at the end of the period paid
//! (access runs to it; Dodo's `cancel_at_next_billing_date`). `POST /payment/resume`
//! takes that back before then. Both idempotent: asked again, they answer the status as
//! it is without calling Dodo. The state stored is Dodo's answer, never the request.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::portal::PortalHandler;
use super::{dodo_budget, user_limit};
use crate::api::{ApiError, Caller, json_response};
use crate::subscription::SubscriptionStatus;

/// One Dodo call: the `PATCH`, whose answer is the subscription.
const DODO_CALLS: i64 = 1;

impl PortalHandler {
    pub(super) async fn set_cancel(
        &self,
        request: &Request,
        caller: &Caller,
        cancel: bool,
    ) -> Result<Response<Body>, ApiError> {
        user_limit(&self.store, &caller.user_id, &self.clock).await?;
        let now = self.clock.now();
        let account = self.store.get_account(&caller.user_id).await?;
        let current = match self.running_subscription(&account.subscriptions, now) {
            Ok(current) => current,
            // Resuming one whose period has ended: too late to take the cancel back.
            Err(_)
                if !cancel
                    && account.subscriptions.iter().any(|s| {
                        s.status == SubscriptionStatus::Cancelled
                            || (s.cancel_at_next_billing_date && !s.grants_access(now))
                    }) =>
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "subscription_ended",
                    "the subscription has ended; buy the plan again with POST /payment/create-checkout-session",
                ));
            }
            Err(none) => return Err(none),
        };
        if current.status == SubscriptionStatus::Cancelled && !cancel {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "subscription_ended",
                "the subscription is cancelled at Dodo; buy the plan again with POST /payment/create-checkout-session",
            ));
        }
        if current.cancel_at_next_billing_date != cancel {
            dodo_budget(&self.store, &self.clock, DODO_CALLS).await?;
            let subscription = self
                .dodo
                .set_cancel_at_period_end(&current.subscription_id, cancel)
                .await?;
            let (event_type, effect) = if cancel {
                ("user.cancel", "cancel_at_period_end")
            } else {
                ("user.resume", "resumed")
            };
            let audit = self.audit(
                request,
                caller,
                event_type,
                effect,
                &current.subscription_id,
            );
            // Set at Dodo: a failure to store it answers `changed_not_stored`; the retry
            // sets it again (the same setting, nothing charged) and stores it.
            self.store_from_dodo(&caller.user_id, &subscription, &audit)
                .await?;
            tracing::info!(user_id = %caller.user_id, subscription_id = %current.subscription_id, cancel, "cancellation set");
        }
        let status = self.status_of(&caller.user_id).await?;
        Ok(json_response(StatusCode::OK, &status))
    }
}
