//! Subscriptions: `GET /subscriptions`, `GET`/`PATCH /subscriptions/{id}` (cancel at period
//! end, resume), trials, and plan changes (`POST /subscriptions/{id}/change-plan`, its
//! `/preview`, `DELETE /subscriptions/{id}/change-plan/scheduled`).
//!
//! The rules modelled. Sources: SDK = `dodopayments` 1.123.0 `types/`
//! (`subscription_change_plan_params.py`, `subscription_preview_change_plan_response.py`,
//! `subscription_data_param.py`, `subscription_service_period.py`); GUIDE =
//! <https://docs.dodopayments.com/developer-resources/subscription-upgrade-downgrade>;
//! API = <https://docs.dodopayments.com/api-reference/subscriptions/change-plan>;
//! INTEGRATION = <https://docs.dodopayments.com/developer-resources/subscription-integration-guide>.
//! Where they are silent, the plainest rule, marked *(ours)*.
//!
//! - **Prices**: each product costs what [`DodoSimulator::set_product_prices`] says (else
//!   $19.00); `recurring_pre_tax_amount` = price × quantity, charged at each renewal.
//! - **Trials**: `subscription_data.trial_period_days` 0..=10000 (SDK). A free trial
//!   (`trial_amount` null): `subscription.active` at checkout, no payment; the first
//!   `payment.succeeded` "whenever [the trial] ends" with `subscription.renewed`
//!   (INTEGRATION); `next_billing_date` = start + N days, then calendar months. A card
//!   declined then: `payment.failed`, `subscription.on_hold`, Dodo's usual retries. The
//!   checkout answers `subscription_id` and `status=active` (no `payment_id`) *(ours)*.
//! - **Immediate change, by `proration_billing_mode`** (GUIDE's worked examples), with `f` =
//!   the unused part of the period, (next billing − now) / (next − previous billing), in
//!   seconds, each part rounded to the cent:
//!   - `prorated_immediately`: new × f − old × f. $19 → $49 halfway: $24.50 − $9.50 = $15.00.
//!     Negative (a downgrade): no charge, the difference is the subscription's credit.
//!   - `prorated_immediately_keep_cycle`: undocumented; the same arithmetic, and the cycle
//!     is kept, as `prorated_immediately` keeps it (GUIDE's table) *(ours)*.
//!   - `difference_immediately`: new − old ($30 for $19 → $49); a downgrade credits old − new.
//!   - `full_immediately`: the new price in full, no credit for the unused time, and the
//!     billing cycle restarts now.
//!   - `do_not_bill` (SDK enum only): no charge, no credit; the next renewal is at the new
//!     price *(ours)*.
//!   - A credit is spent first on later charges (renewals, upgrades): the preview's
//!     `customer_credits` is negative when spent, positive when added (SDK). A charge the
//!     credit covers makes no payment *(ours)*.
//!   - During a trial (any mode but `do_not_bill`): "ends trial, charges immediately"
//!     (GUIDE): the new price in full, a paid period from now *(ours: no credit, nothing
//!     was paid)*.
//!   - The payment: `charge_type: plan_change`, its service period from now to the next
//!     billing date with `proration_factor` = f (SDK). Then `payment.succeeded` and
//!     `subscription.plan_changed` (GUIDE: "Webhooks (payment, plan_changed)"). No charge:
//!     no payment, `plan_changed` alone.
//!   - A declined card: `payment.failed`. `on_payment_failure: prevent_change` keeps the
//!     current plan (no pending change is kept: Dodo's models have no field for it *(ours)*);
//!     `apply_change` (the default, SDK/API) applies the plan anyway and the subscription
//!     goes `on_hold` ("If this immediate charge fails … placed on hold", INTEGRATION),
//!     `subscription.plan_changed` then `subscription.on_hold`, with the usual retries.
//! - **`effective_at: next_billing_date`** (API: the customer keeps the current plan to the
//!   period's end): `scheduled_change` (SDK `ScheduledPlanChange`) is set, and
//!   `subscription.updated` sent *(ours)*. At the renewal, "the plan change payment replaces
//!   the renewal payment" (SDK) at the new price: `payment.succeeded`,
//!   `subscription.plan_changed`, `subscription.renewed`. Declined with `prevent_change`:
//!   "the plan change is cancelled. The subscription then renews on the current plan, with
//!   the usual payment retries" (SDK); with `apply_change`, the new plan, on hold.
//! - A second change while one is scheduled: `409`, unless `cancel_scheduled_change_plan`
//!   replaces it (SDK); an immediate change that does not apply leaves it in place (SDK).
//! - `DELETE …/change-plan/scheduled`: the schedule is dropped, `subscription.updated`,
//!   `204` with no body (the SDK returns `None`); `404` when there is none *(ours)*.
//! - Refused (GUIDE: "Plan change fails with 422 error": not active, invalid product, bad
//!   parameters): `422` for a subscription not `active`, a product that is not a
//!   subscription product, the same product and quantity, a bad body; `404` for an unknown
//!   subscription. The preview answers the same errors and the same amounts, changing
//!   nothing.
//! - **Cancel and resume**: `PATCH cancel_at_next_billing_date: true|false` sends
//!   `subscription.updated` when it changes the flag and nothing when it is already so
//!   (idempotent); a cancelled subscription cannot be resumed (`422`) *(ours)*.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::billing::{rfc3339, seconds_of};
use super::*;

impl DodoSimulator {
    /// The customer puts in a new card (in Dodo's portal); `succeeds` says whether it
    /// pays. An on-hold subscription is charged with it at once. `false`: no such
    /// subscription.
    pub async fn new_card(&self, subscription_id: &str, succeeds: bool) -> bool {
        let now = self.now();
        let known = self.with(|inner| inner.records.subscriptions.contains_key(subscription_id));
        let emitted = self.change(|records| records.new_card(subscription_id, succeeds, now));
        self.emit(emitted).await;
        known
    }

    /// `PATCH /subscriptions/{id}` with `cancel_at_next_billing_date`: `true` cancels at
    /// the period's end, `false` resumes (before then). `false`: no such subscription.
    pub async fn cancel_at_period_end(&self, subscription_id: &str, cancel: bool) -> bool {
        self.set_cancel_at_period_end(subscription_id, cancel)
            .await
            .is_some()
    }

    /// As [`Self::cancel_at_period_end`], with Dodo's refusal: `None` for no such
    /// subscription, `Some(Err)` when it is already cancelled (and asked otherwise).
    pub async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
    ) -> Option<Result<(), &'static str>> {
        let outcome =
            self.change(|records| records.set_cancel_at_period_end(subscription_id, cancel))?;
        match outcome {
            Ok(emitted) => {
                self.emit(emitted).await;
                Some(Ok(()))
            }
            Err(message) => Some(Err(message)),
        }
    }
}

pub(super) async fn get_subscription(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /subscriptions/{id}")).await {
        return answer;
    }
    match sim.with(|inner| inner.records.subscriptions.get(&id).cloned()) {
        Some(subscription) => axum::Json(subscription).into_response(),
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found"),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    page_size: Option<usize>,
    page_number: Option<usize>,
    status: Option<String>,
    product_id: Option<String>,
    customer_id: Option<String>,
    created_at_gte: Option<String>,
}

/// `GET /subscriptions`: newest first, `page_size` (default 10, at most 100) from
/// `page_number` (from 0), only those in `status`, on `product_id`, of `customer_id` and
/// created at or after `created_at_gte` when they are given.
pub(super) async fn list_subscriptions(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "GET /subscriptions".into()).await {
        return answer;
    }
    let Ok(axum::extract::Query(query)) = query else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_QUERY",
            "page_size and page_number must be non-negative integers",
        );
    };
    let since = match query.created_at_gte.as_deref() {
        None => None,
        Some(text) => match paywall::time::Timestamp::parse_rfc3339(text) {
            Some(at) => Some(at.unix_seconds()),
            None => {
                return dodo_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_QUERY",
                    "created_at_gte must be an RFC 3339 date-time",
                );
            }
        },
    };
    let size = query.page_size.unwrap_or(10).min(100);
    let page = query.page_number.unwrap_or(0);
    let items = sim.with(|inner| {
        // Newest first; ties by id so that pages are stable.
        let mut all: Vec<(&str, &str, &Value)> = inner
            .records
            .subscriptions
            .values()
            .filter(|s| {
                query
                    .status
                    .as_deref()
                    .is_none_or(|wanted| s["status"].as_str() == Some(wanted))
                    && query
                        .product_id
                        .as_deref()
                        .is_none_or(|wanted| s["product_id"].as_str() == Some(wanted))
                    && query
                        .customer_id
                        .as_deref()
                        .is_none_or(|wanted| s["customer"]["customer_id"].as_str() == Some(wanted))
                    && since.is_none_or(|since| {
                        s["created_at"]
                            .as_str()
                            .and_then(paywall::time::Timestamp::parse_rfc3339)
                            .is_some_and(|created| created.unix_seconds() >= since)
                    })
            })
            .map(|s| {
                (
                    s["created_at"].as_str().unwrap_or_default(),
                    s["subscription_id"].as_str().unwrap_or_default(),
                    s,
                )
            })
            .collect();
        all.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        all.into_iter()
            .skip(page.saturating_mul(size))
            .take(size)
            .map(|(_, _, s)| subscription_list_item(s))
            .collect::<Vec<_>>()
    });
    axum::Json(json!({ "items": items })).into_response()
}

/// A subscription as `GET /subscriptions` lists it: Dodo's `SubscriptionListResponse`
/// (no `brand_id`, addons, meters or credit carts; `discounts` always present).
pub(super) fn subscription_list_item(subscription: &Value) -> Value {
    let mut item = project(
        subscription,
        &[
            "subscription_id",
            "status",
            "product_id",
            "quantity",
            "customer",
            "metadata",
            "billing",
            "created_at",
            "previous_billing_date",
            "next_billing_date",
            "cancel_at_next_billing_date",
            "cancelled_at",
            "currency",
            "recurring_pre_tax_amount",
            "tax_inclusive",
            "payment_frequency_count",
            "payment_frequency_interval",
            "subscription_period_count",
            "subscription_period_interval",
            "trial_period_days",
            "on_demand",
            "has_payment_method",
        ],
    );
    item.insert("discounts".into(), json!([]));
    Value::Object(item)
}

#[derive(Deserialize)]
pub(super) struct SubscriptionPatch {
    cancel_at_next_billing_date: Option<bool>,
}

/// `PATCH /subscriptions/{id}`: `cancel_at_next_billing_date` (the rest of Dodo's fields
/// are not simulated and are refused).
pub(super) async fn patch_subscription(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim
        .gate(&headers, format!("PATCH /subscriptions/{id}"))
        .await
    {
        return answer;
    }
    let Ok(SubscriptionPatch {
        cancel_at_next_billing_date: Some(cancel),
    }) = serde_json::from_slice(&body)
    else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "the simulator changes only cancel_at_next_billing_date (a boolean)",
        );
    };
    match sim.set_cancel_at_period_end(&id, cancel).await {
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found"),
        Some(Err(message)) => dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SUBSCRIPTION_CANCELLED",
            message,
        ),
        Some(Ok(())) => axum::Json(sim.subscription(&id).unwrap_or_default()).into_response(),
    }
}

/// What a scheduled change's `ScheduledPlanChange` does not carry: the recurring amount
/// it will charge, and what a failed payment does to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ScheduledTerms {
    pub amount: i64,
    pub prevent_change: bool,
}

/// A `POST /subscriptions/{id}/change-plan` (or `/preview`) body, as the SDK's
/// `SubscriptionChangePlanParams` has it (the fields the simulator models).
#[derive(Clone, Debug, Deserialize)]
pub(super) struct ChangePlanRequest {
    product_id: String,
    quantity: i64,
    proration_billing_mode: ProrationMode,
    #[serde(default)]
    effective_at: EffectiveAt,
    #[serde(default)]
    on_payment_failure: Option<OnPaymentFailure>,
    #[serde(default)]
    cancel_scheduled_change_plan: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ProrationMode {
    ProratedImmediately,
    FullImmediately,
    DifferenceImmediately,
    DoNotBill,
    ProratedImmediatelyKeepCycle,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EffectiveAt {
    #[default]
    Immediately,
    NextBillingDate,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnPaymentFailure {
    PreventChange,
    ApplyChange,
}

/// What a change costs, by the arithmetic at the top of this file.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Quote {
    /// When the charge is made and the change applies (s).
    effective_at: i64,
    /// The new plan's unit price and recurring amount (price × quantity).
    unit_price: i64,
    new_amount: i64,
    /// The part of a period the new plan is charged for.
    proration_factor: f64,
    /// What is charged (minor units, ≥ 0): no payment when 0.
    total: i64,
    /// The credit's movement: negative when spent on this charge, positive when a
    /// downgrade adds to it.
    credit_delta: i64,
    /// A new billing cycle starts at the change (`full_immediately`, or ending a trial).
    new_cycle: bool,
}

/// `f` of `amount`, to the nearest minor unit (halves away from zero).
fn part(amount: i64, f: f64) -> i64 {
    (amount as f64 * f).round() as i64
}

/// `0.5` → `"0.5"`; `1` → `"1"` (the SDK's `proration_factor` string).
fn factor_text(f: f64) -> String {
    let text = format!("{f:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn refuse(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

impl Records {
    /// Checks a change of `subscription_id` and prices it at `now`; `unit_price` is the
    /// new product's (the caller checked that it is a subscription product).
    pub(super) fn quote_change(
        &self,
        subscription_id: &str,
        request: &ChangePlanRequest,
        unit_price: i64,
        now: i64,
    ) -> Result<Quote, Refusal> {
        let subscription = self.subscriptions.get(subscription_id).ok_or(refuse(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Subscription not found",
        ))?;
        if subscription["status"] != "active" {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "SUBSCRIPTION_NOT_ACTIVE",
                "Only an active subscription can change plan",
            ));
        }
        if request.quantity < 1 {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "quantity must be at least 1",
            ));
        }
        if subscription["product_id"] == request.product_id.as_str()
            && subscription["quantity"] == request.quantity
        {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "SAME_PLAN",
                "The subscription is already on this product and quantity",
            ));
        }
        let has_schedule = subscription["scheduled_change"].get("product_id").is_some();
        if has_schedule && !request.cancel_scheduled_change_plan {
            return Err(refuse(
                StatusCode::CONFLICT,
                "SCHEDULED_PLAN_CHANGE_EXISTS",
                "The subscription has a scheduled plan change: cancel it first, or set \
                 cancel_scheduled_change_plan",
            ));
        }
        let previous = seconds_of(subscription, "previous_billing_date");
        let next = seconds_of(subscription, "next_billing_date");
        let (Some(previous), Some(next)) = (previous, next) else {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "SUBSCRIPTION_NOT_ACTIVE",
                "The subscription has no billing period",
            ));
        };
        let old_amount = subscription["recurring_pre_tax_amount"]
            .as_i64()
            .unwrap_or(DEFAULT_PRICE_MINOR);
        let new_amount = unit_price * request.quantity;
        let quote = |total: i64, credit_delta: i64, proration_factor: f64, new_cycle: bool| Quote {
            effective_at: now,
            unit_price,
            new_amount,
            proration_factor,
            total,
            credit_delta,
            new_cycle,
        };
        // A net amount owed (spends the credit first) or due back (added to the credit).
        let net = |owed: i64, f: f64| {
            if owed >= 0 {
                let (total, used) = self.after_credit(subscription_id, owed);
                quote(total, -used, f, false)
            } else {
                quote(0, -owed, f, false)
            }
        };
        if request.effective_at == EffectiveAt::NextBillingDate {
            let (total, used) = self.after_credit(subscription_id, new_amount);
            return Ok(Quote {
                effective_at: next,
                ..quote(total, -used, 1.0, false)
            });
        }
        let mode = request.proration_billing_mode;
        if self.trial_ends.contains_key(subscription_id) && mode != ProrationMode::DoNotBill {
            // Nothing was paid for the trial: no credit; the trial ends, the new plan is
            // charged in full and a paid period starts now.
            return Ok(quote(new_amount, 0, 1.0, true));
        }
        Ok(match mode {
            ProrationMode::ProratedImmediately | ProrationMode::ProratedImmediatelyKeepCycle => {
                let span = (next - previous).max(1) as f64;
                let f = ((next - now) as f64 / span).clamp(0.0, 1.0);
                net(part(new_amount, f) - part(old_amount, f), f)
            }
            ProrationMode::DifferenceImmediately => net(new_amount - old_amount, 1.0),
            ProrationMode::FullImmediately => quote(new_amount, 0, 1.0, true),
            ProrationMode::DoNotBill => quote(0, 0, 0.0, false),
        })
    }

    /// The subscription as it is once the change applies (`at`: when).
    fn with_change(
        subscription: &Value,
        request: &ChangePlanRequest,
        quote: &Quote,
        at: i64,
    ) -> Value {
        let mut changed = subscription.clone();
        changed["product_id"] = json!(request.product_id);
        changed["quantity"] = json!(request.quantity);
        changed["recurring_pre_tax_amount"] = json!(quote.new_amount);
        changed["scheduled_change"] = Value::Null;
        if quote.new_cycle {
            changed["previous_billing_date"] = json!(rfc3339(at));
            changed["next_billing_date"] = json!(rfc3339(add_months(at, 1)));
        }
        changed
    }

    /// Applies a priced change now: the charge (if any), then the new plan unless the
    /// charge failed under `prevent_change`. The events, and the payment's id.
    pub(super) fn change_plan(
        &mut self,
        subscription_id: &str,
        request: &ChangePlanRequest,
        quote: &Quote,
        now: i64,
    ) -> (Emitted, Option<String>) {
        let prevent_change = request.on_payment_failure == Some(OnPaymentFailure::PreventChange);
        if request.effective_at == EffectiveAt::NextBillingDate {
            let schedule = json!({
                "id": self.new_id("spc"),
                "product_id": request.product_id,
                "quantity": request.quantity,
                "effective_at": rfc3339(quote.effective_at),
                "created_at": rfc3339(now),
                "addons": [],
                "product_name": PRODUCT_NAME,
            });
            self.scheduled_terms.insert(
                subscription_id.to_owned(),
                ScheduledTerms {
                    amount: quote.new_amount,
                    prevent_change,
                },
            );
            let subscription = self.subscriptions.get_mut(subscription_id).expect("exists");
            subscription["scheduled_change"] = schedule;
            return (
                vec![("subscription.updated".into(), subscription.clone())],
                None,
            );
        }
        let next = self.subscriptions[subscription_id]["next_billing_date"]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
            .map_or(now, Timestamp::unix_seconds);
        let period = if quote.new_cycle {
            (now, add_months(now, 1))
        } else {
            (now, next)
        };
        let payment = (quote.total > 0).then(|| {
            self.charge(
                subscription_id,
                now,
                0,
                quote.total,
                ("plan_change", period),
                Some(factor_text(quote.proration_factor)),
            )
        });
        let paid = payment.as_ref().is_none_or(|p| p["status"] == "succeeded");
        let payment_id = payment
            .as_ref()
            .and_then(|p| p["payment_id"].as_str())
            .map(str::to_owned);
        let mut emitted: Emitted = payment
            .map(|p| {
                let event = if paid {
                    "payment.succeeded"
                } else {
                    "payment.failed"
                };
                (event.to_owned(), p)
            })
            .into_iter()
            .collect();
        if !paid && prevent_change {
            // The plan stays as it was (and so does a schedule it would have replaced).
            return (emitted, payment_id);
        }
        if paid {
            self.add_credit(subscription_id, quote.credit_delta);
        }
        self.scheduled_terms.remove(subscription_id);
        if quote.new_cycle || request.proration_billing_mode != ProrationMode::DoNotBill {
            self.trial_ends.remove(subscription_id);
        }
        let changed = Self::with_change(&self.subscriptions[subscription_id], request, quote, now);
        self.subscriptions
            .insert(subscription_id.to_owned(), changed.clone());
        if quote.new_cycle {
            let next = add_months(now, 1);
            self.schedule(
                next,
                Action::Renew {
                    subscription_id: subscription_id.to_owned(),
                    due: next,
                },
            );
        }
        emitted.push(("subscription.plan_changed".into(), changed));
        if !paid {
            // `apply_change` with a declined card: the new plan, on hold, with the usual
            // retries.
            let snapshot = self.hold(subscription_id, now, 1);
            emitted.push(("subscription.on_hold".into(), snapshot));
        }
        (emitted, payment_id)
    }

    /// `SubscriptionPreviewChangePlanResponse` for a priced change (nothing changes).
    pub(super) fn preview(
        &self,
        subscription_id: &str,
        request: &ChangePlanRequest,
        quote: &Quote,
    ) -> Value {
        let subscription = &self.subscriptions[subscription_id];
        json!({
            "immediate_charge": {
                "effective_at": rfc3339(quote.effective_at),
                "line_items": [{
                    "type": "subscription",
                    "id": subscription_id,
                    "product_id": request.product_id,
                    "name": PRODUCT_NAME,
                    "quantity": request.quantity,
                    "unit_price": quote.unit_price,
                    "proration_factor": quote.proration_factor,
                    "currency": "USD",
                    "tax_inclusive": false,
                }],
                "summary": {
                    "currency": "USD",
                    "total_amount": quote.total,
                    "settlement_amount": quote.total,
                    "settlement_currency": "USD",
                    "customer_credits": quote.credit_delta,
                    "customer_credits_currency": "USD",
                },
            },
            "new_plan": Self::with_change(subscription, request, quote, quote.effective_at),
        })
    }

    /// Drops the subscription's scheduled change, if any; whether there was one.
    pub(super) fn clear_scheduled_change(&mut self, subscription_id: &str) -> bool {
        self.scheduled_terms.remove(subscription_id);
        let Some(subscription) = self.subscriptions.get_mut(subscription_id) else {
            return false;
        };
        let had = subscription["scheduled_change"].get("product_id").is_some();
        subscription["scheduled_change"] = Value::Null;
        had
    }

    /// The scheduled change takes effect (at its renewal): the new product, quantity and
    /// recurring amount.
    pub(super) fn apply_scheduled_change(&mut self, subscription_id: &str) {
        let terms = self.scheduled_terms.remove(subscription_id);
        let Some(subscription) = self.subscriptions.get_mut(subscription_id) else {
            return;
        };
        let schedule = subscription["scheduled_change"].take();
        if let (Some(product), Some(terms)) = (schedule.get("product_id"), terms) {
            subscription["product_id"] = product.clone();
            subscription["quantity"] = schedule["quantity"].clone();
            subscription["recurring_pre_tax_amount"] = json!(terms.amount);
        }
    }
}

/// `POST /subscriptions/{id}/change-plan`: answers `SubscriptionChangePlanResponse`
/// (`payment_id` of the charge, when there is one).
pub(super) async fn change_plan(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim
        .gate(&headers, format!("POST /subscriptions/{id}/change-plan"))
        .await
    {
        return answer;
    }
    let now = sim.now();
    // Priced and applied under one lock, so that two changes at once cannot both pass.
    let changed = sim.with(|inner| {
        let (request, quote) = priced_change_locked(inner, &id, &body, now)?;
        let out = inner.records.change_plan(&id, &request, &quote, now);
        sim.persist(&inner.records);
        Ok::<_, Box<Response>>(out)
    });
    let (emitted, payment_id) = match changed {
        Ok(out) => out,
        Err(answer) => return *answer,
    };
    sim.emit(emitted).await;
    axum::Json(json!({
        "payment_id": payment_id,
        "payment_link": null,
        "client_secret": null,
        "expires_on": null,
    }))
    .into_response()
}

/// Reads a change-plan body and prices it (under the simulator's lock): the request and
/// its quote, or Dodo's refusal.
fn priced_change_locked(
    inner: &mut Inner,
    id: &str,
    body: &[u8],
    now: i64,
) -> Result<(ChangePlanRequest, Quote), Box<Response>> {
    let request: ChangePlanRequest = serde_json::from_slice(body).map_err(|e| {
        Box::new(dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            &format!("not a change-plan request: {e}"),
        ))
    })?;
    if !inner.records.subscriptions.contains_key(id) {
        return Err(Box::new(dodo_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Subscription not found",
        )));
    }
    if !inner.subscription_products.contains(&request.product_id) {
        return Err(Box::new(dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_PRODUCT",
            "product_id is not a subscription product",
        )));
    }
    let unit_price = inner.price_of(&request.product_id);
    let quote = inner
        .records
        .quote_change(id, &request, unit_price, now)
        .map_err(|refusal| Box::new(refusal.into_response()))?;
    Ok((request, quote))
}

/// `POST /subscriptions/{id}/change-plan/preview`: what the same change would charge, by
/// the same arithmetic, changing nothing.
pub(super) async fn preview_change_plan(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim
        .gate(
            &headers,
            format!("POST /subscriptions/{id}/change-plan/preview"),
        )
        .await
    {
        return answer;
    }
    let now = sim.now();
    let preview = sim.with(|inner| {
        let (request, quote) = priced_change_locked(inner, &id, &body, now)?;
        Ok::<_, Box<Response>>(inner.records.preview(&id, &request, &quote))
    });
    match preview {
        Ok(preview) => axum::Json(preview).into_response(),
        Err(answer) => *answer,
    }
}

/// `DELETE /subscriptions/{id}/change-plan/scheduled`: drops the scheduled change
/// (`subscription.updated`); no body. `404` when there is none.
pub(super) async fn cancel_scheduled_change(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim
        .gate(
            &headers,
            format!("DELETE /subscriptions/{id}/change-plan/scheduled"),
        )
        .await
    {
        return answer;
    }
    let cleared = sim.change(|records| {
        if !records.subscriptions.contains_key(&id) {
            return Err("Subscription not found");
        }
        if !records.clear_scheduled_change(&id) {
            return Err("The subscription has no scheduled plan change");
        }
        Ok(records.subscriptions[&id].clone())
    });
    match cleared {
        Ok(subscription) => {
            sim.emit(vec![("subscription.updated".into(), subscription)])
                .await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", message),
    }
}
