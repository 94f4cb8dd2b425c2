//! Subscriptions: `GET /subscriptions`, `GET`/`PATCH /subscriptions/{id}`; a new card and a
//! cancellation at period end, as the portal and the API do them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

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

    /// `PATCH /subscriptions/{id}` with `cancel_at_next_billing_date`.
    pub async fn cancel_at_period_end(&self, subscription_id: &str, cancel: bool) -> bool {
        let emitted =
            self.change(|records| records.set_cancel_at_period_end(subscription_id, cancel));
        let found = emitted.is_some();
        self.emit(emitted.unwrap_or_default()).await;
        found
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
}

/// `GET /subscriptions`: newest first, `page_size` (default 10, at most 100) from
/// `page_number` (from 0), only those in `status` when it is given.
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
    if !sim.cancel_at_period_end(&id, cancel).await {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found");
    }
    axum::Json(sim.subscription(&id).unwrap_or_default()).into_response()
}
