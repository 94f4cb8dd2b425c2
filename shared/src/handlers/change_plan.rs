//! `POST /payment/change-plan {"plan": …, "preview": true}`: moves the caller's
//! subscription to another subscription plan, or (with `preview`) answers what Dodo will
//! charge for it, changing nothing. `DELETE /payment/change-plan` drops a change Dodo has
//! scheduled.
//!
//! The target plan's `change` settings in the catalogue say how: by default an upgrade
//! (a plan that ranks higher: price per day, then features, then limits) takes effect
//! at once, prorated; a downgrade at the next billing date (shown in status as
//! `scheduled_change`); a failed charge keeps the current plan. Access follows what Dodo
//! confirms: after the change the subscription is read back from Dodo and stored as it
//! says (its webhooks say the same later), never as the request asked.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::portal::{PortalHandler, changed_not_stored};
use super::{dodo_budget, user_limit};
use crate::access::AccessView;
use crate::api::{ApiError, Caller, json_body, json_response};
use crate::dodo::{ChangePreview, DodoError, PlanChange};
use crate::plan::{ChangeTiming, Plan};
use crate::subscription::Subscription;

/// Dodo calls of a change: reading the subscription (what Dodo has decides), the change,
/// then reading it back.
const APPLY_CALLS: i64 = 3;
/// Dropping a scheduled change: reading the subscription (is it still scheduled at
/// Dodo?), the drop, then reading it back.
const DROP_CALLS: i64 = 3;
/// A preview is one call.
const PREVIEW_CALLS: i64 = 1;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeInput {
    plan: Option<String>,
    #[serde(default)]
    preview: bool,
}

/// What a change does: from which plan to which, upgrade or downgrade, and when.
#[derive(Debug, Serialize)]
struct ChangeSummary {
    from: String,
    plan: String,
    /// `upgrade` or `downgrade`.
    direction: &'static str,
    /// `immediately` or `next_billing_date`.
    effective_at: &'static str,
    proration_billing_mode: &'static str,
    on_payment_failure: &'static str,
}

#[derive(Debug, Serialize)]
struct PreviewAnswer {
    #[serde(flatten)]
    change: ChangeSummary,
    preview: ChangePreview,
}

#[derive(Debug, Serialize)]
struct AppliedAnswer {
    #[serde(flatten)]
    change: ChangeSummary,
    /// Dodo's payment settling the change, when it charged one.
    payment_id: Option<String>,
    /// Whether Dodo now has the subscription on the new plan (`immediately`) or the change
    /// scheduled (`next_billing_date`). `false`: Dodo kept the current plan (the charge
    /// failed under `prevent_change`).
    applied: bool,
    /// The caller's status as Dodo's answer left it.
    status: AccessView,
}

impl PortalHandler {
    pub(super) async fn change_plan(
        &self,
        request: &Request,
        caller: &Caller,
    ) -> Result<Response<Body>, ApiError> {
        let input: ChangeInput = json_body(request)?;
        let target = self.named_plan(input.plan, "to change to")?;
        if !target.is_subscription() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "not_a_subscription_plan",
                "a subscription changes only to another subscription plan; a pass is bought with POST /payment/create-checkout-session",
            ));
        }
        user_limit(&self.store, &caller.user_id, &self.clock).await?;
        let now = self.clock.now();
        let account = self.store.get_account(&caller.user_id).await?;
        let current = self.running_subscription(&account.subscriptions, now)?;
        if current.plan == target.name {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "same_plan",
                format!("the subscription is already on `{}`", target.name),
            ));
        }
        let change = self.change_to(&current.plan, target);
        let body = PlanChange {
            product_id: target.product_id.as_str(),
            quantity: 1,
            proration_billing_mode: change.proration_billing_mode,
            effective_at: change.effective_at,
            on_payment_failure: change.on_payment_failure,
            cancel_scheduled_change_plan: true,
        };
        if input.preview {
            dodo_budget(&self.store, &self.clock, PREVIEW_CALLS).await?;
            let mut preview = self
                .dodo
                .preview_change_plan(&current.subscription_id, &body)
                .await
                .map_err(refused_change)?;
            // A scheduled change is charged by the renewal it replaces, not now.
            if change.effective_at == ChangeTiming::NextBillingDate.as_str() {
                preview.charge_now = 0;
            }
            return Ok(json_response(
                StatusCode::OK,
                &PreviewAnswer { change, preview },
            ));
        }
        // Asked again for a change Dodo has already scheduled: nothing to do.
        if change.effective_at == ChangeTiming::NextBillingDate.as_str()
            && current.scheduled_product_id.as_deref() == Some(target.product_id.as_str())
        {
            let status = self.status_of(&caller.user_id).await?;
            return Ok(json_response(
                StatusCode::OK,
                &AppliedAnswer {
                    change,
                    payment_id: None,
                    applied: true,
                    status,
                },
            ));
        }
        dodo_budget(&self.store, &self.clock, APPLY_CALLS).await?;
        // What Dodo has now decides, not what is stored (a lost webhook, or this very
        // change applied by a request whose answer was lost): asked again for a change
        // Dodo already made, the state is stored and the answer is the same, and Dodo
        // is never asked (and never charges) twice.
        let live = self.dodo.get_subscription(&current.subscription_id).await?;
        // On the target at Dodo, or moving to it there, whatever timing the stored plan
        // would give (Dodo's plan may not be the stored one).
        if let Some(effective_at) = target_at_dodo(&live, target) {
            let change = ChangeSummary {
                effective_at,
                ..change
            };
            // Made at Dodo but not stored here: this request's earlier attempt (whose
            // store failed, so its entry was not written either), or the portal. The
            // entry is written with the state, once.
            let audit = self.audit(
                request,
                caller,
                "user.change_plan",
                change.effective_at,
                &current.subscription_id,
            );
            self.store_from_dodo(&caller.user_id, &live, &audit).await?;
            let status = self.status_of(&caller.user_id).await?;
            return Ok(json_response(
                StatusCode::OK,
                &AppliedAnswer {
                    change,
                    payment_id: None,
                    applied: true,
                    status,
                },
            ));
        }
        let change = match crate::purchase::subscription_plan_for(&self.catalog, &live) {
            Some(on) if on.name != change.from => self.change_to(&on.name, target),
            _ => change,
        };
        let body = PlanChange {
            effective_at: change.effective_at,
            ..body
        };
        let payment_id = self
            .dodo
            .change_plan(&current.subscription_id, &body)
            .await
            .map_err(refused_change)?;
        // Dodo has acted. Whether it made the change is not known until it is read back
        // (a declined charge keeps the plan): a failure to read it is Dodo's error, which
        // no client resends by itself (a resend could try a declined charge again). The
        // change reaches the store by its webhook, or by a retry, which reads Dodo first.
        let subscription = self.dodo.get_subscription(&current.subscription_id).await?;
        let applied = applied_at_dodo(&subscription, target, change.effective_at);
        let audit = self.audit(
            request,
            caller,
            "user.change_plan",
            if applied {
                change.effective_at
            } else {
                "kept_current_plan"
            },
            &current.subscription_id,
        );
        let stored = self
            .store_from_dodo(&caller.user_id, &subscription, &audit)
            .await;
        if applied {
            stored?;
        } else if let Err(err) = stored {
            // Dodo kept the current plan (its charge failed under `prevent_change`):
            // nothing changed, and the answer says so. Asking for a retry would try the
            // charge again. Dodo's webhook brings its state later.
            tracing::warn!(user_id = %caller.user_id, subscription_id = %current.subscription_id, code = err.code, detail = err.detail.as_deref().unwrap_or(""), "a plan change Dodo refused could not be recorded");
        }
        tracing::info!(user_id = %caller.user_id, subscription_id = %current.subscription_id, from = %change.from, to = %change.plan, effective_at = change.effective_at, applied, "plan change");
        let status = match self.status_of(&caller.user_id).await {
            Ok(status) => status,
            // Nothing changed: the status read before the request is the status.
            Err(_) if !applied => AccessView::of(&account, &self.catalog, now),
            Err(err) => return Err(err),
        };
        Ok(json_response(
            StatusCode::OK,
            &AppliedAnswer {
                change,
                payment_id,
                applied,
                status,
            },
        ))
    }

    /// `DELETE /payment/change-plan`: Dodo drops the scheduled change; the subscription
    /// is read back and stored. Idempotent: with nothing scheduled (at Dodo or here), the
    /// status as it is.
    pub(super) async fn cancel_scheduled_change(
        &self,
        request: &Request,
        caller: &Caller,
    ) -> Result<Response<Body>, ApiError> {
        user_limit(&self.store, &caller.user_id, &self.clock).await?;
        let now = self.clock.now();
        let account = self.store.get_account(&caller.user_id).await?;
        let current = self.running_subscription(&account.subscriptions, now)?;
        // What Dodo has decides, not what is stored: a change scheduled at Dodo whose
        // storing failed is dropped too, and one dropped already (this request's earlier
        // attempt, or the portal) is only stored, without asking Dodo again.
        dodo_budget(&self.store, &self.clock, DROP_CALLS).await?;
        let live = self.dodo.get_subscription(&current.subscription_id).await?;
        let scheduled_at_dodo = live.scheduled_change.is_some();
        if scheduled_at_dodo || current.scheduled_product_id.is_some() {
            let subscription = if scheduled_at_dodo {
                match self
                    .dodo
                    .cancel_scheduled_change(&current.subscription_id)
                    .await
                {
                    // Dropped meanwhile (the portal): what we store is late.
                    Ok(()) | Err(DodoError::Api { status: 404, .. }) => {}
                    Err(err) => return Err(err.into()),
                }
                // Dropped at Dodo: a failure from here is `changed_not_stored`; the
                // retry finds it dropped and stores it.
                self.dodo
                    .get_subscription(&current.subscription_id)
                    .await
                    .map_err(|err| changed_not_stored(err.into()))?
            } else {
                live
            };
            let audit = self.audit(
                request,
                caller,
                "user.change_plan",
                "scheduled_change_cancelled",
                &current.subscription_id,
            );
            self.store_from_dodo(&caller.user_id, &subscription, &audit)
                .await?;
        }
        let status = self.status_of(&caller.user_id).await?;
        Ok(json_response(StatusCode::OK, &status))
    }

    /// How a subscription on `from` moves to `target`, by `target`'s catalogue settings.
    fn change_to(&self, from: &str, target: &Plan) -> ChangeSummary {
        let upgrade = self.catalog.is_upgrade(from, &target.name);
        let policy = &target.change;
        ChangeSummary {
            from: from.to_owned(),
            plan: target.name.clone(),
            direction: if upgrade { "upgrade" } else { "downgrade" },
            effective_at: if upgrade {
                policy.upgrade
            } else {
                policy.downgrade
            }
            .as_str(),
            proration_billing_mode: policy.proration,
            on_payment_failure: policy.on_payment_failure,
        }
    }
}

/// When Dodo's subscription is on `target` (`immediately`) or has the move to it
/// scheduled (`next_billing_date`): how the change it was asked for stands there.
fn target_at_dodo(subscription: &Subscription, target: &Plan) -> Option<&'static str> {
    let product = target.product_id.as_str();
    if subscription.product_id.as_deref() == Some(product) {
        Some(ChangeTiming::Immediately.as_str())
    } else if subscription
        .scheduled_change
        .as_ref()
        .is_some_and(|c| c.product_id == product)
    {
        Some(ChangeTiming::NextBillingDate.as_str())
    } else {
        None
    }
}

/// Whether Dodo's subscription is on `target` (a change `immediately`) or has the move
/// to it scheduled (`next_billing_date`).
fn applied_at_dodo(subscription: &Subscription, target: &Plan, effective_at: &str) -> bool {
    let product = target.product_id.as_str();
    match effective_at {
        "immediately" => subscription.product_id.as_deref() == Some(product),
        _ => subscription
            .scheduled_change
            .as_ref()
            .is_some_and(|c| c.product_id == product),
    }
}

/// Dodo refusing the change itself (a change pending payment, a subscription it will not
/// change): a `409` the caller can act on, with Dodo's code; anything else as usual.
fn refused_change(err: DodoError) -> ApiError {
    match err {
        DodoError::Api {
            status: 400 | 409 | 422,
            ref code,
            ..
        } => {
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                "change_refused",
                "Dodo Payments refused this plan change (see dodo_code); the subscription is unchanged",
            );
            error.dodo_code = Some(code.as_str().into());
            error.with_detail(err.to_string())
        }
        other => other.into(),
    }
}
