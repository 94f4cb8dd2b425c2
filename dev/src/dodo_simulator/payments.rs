//! Payments: `GET /payments/{id}`, and `GET /payments` (with the list machinery the refund and
//! dispute lists share).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use paywall::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

pub(super) async fn get_payment(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /payments/{id}")).await {
        return answer;
    }
    match sim.payment(&id) {
        Some(payment) => axum::Json(payment).into_response(),
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Payment not found"),
    }
}

#[derive(Deserialize)]
pub(super) struct ClaimListQuery {
    page_size: Option<usize>,
    page_number: Option<usize>,
    created_at_gte: Option<String>,
    status: Option<String>,
}

/// Which records a list call asks for.
pub(super) enum Listed {
    Payments,
    Refunds,
    Disputes,
}

/// `GET /payments`, `GET /refunds` and `GET /disputes`: newest first, pages as
/// `GET /subscriptions`, only those created at or after `created_at_gte` (and, for
/// payments, in `status`) when given.
pub(super) fn list_page(sim: &DodoSimulator, listed: Listed, query: &ClaimListQuery) -> Response {
    let since = match &query.created_at_gte {
        None => None,
        Some(text) => match Timestamp::parse_rfc3339(text) {
            Some(since) => Some(since),
            None => {
                return dodo_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_QUERY",
                    "created_at_gte must be an RFC 3339 time",
                );
            }
        },
    };
    let created = |item: &Value| {
        item["created_at"]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
    };
    let size = query.page_size.unwrap_or(10).min(100);
    let page = sim.with(|inner| {
        let records = &inner.records;
        let all: Box<dyn Iterator<Item = &Value>> = match listed {
            Listed::Payments => Box::new(records.payments.values()),
            Listed::Refunds => Box::new(records.refunds.iter()),
            Listed::Disputes => Box::new(records.disputes.iter()),
        };
        let mut items: Vec<(Option<Timestamp>, &str, &Value)> = all
            .filter(|item| since.is_none_or(|since| created(item).is_some_and(|at| at >= since)))
            .filter(|item| {
                query
                    .status
                    .as_deref()
                    .is_none_or(|wanted| item["status"].as_str() == Some(wanted))
            })
            .map(|item| {
                let id = ["payment_id", "refund_id", "dispute_id"]
                    .iter()
                    .rev()
                    .find_map(|key| item[*key].as_str())
                    .unwrap_or_default();
                (created(item), id, item)
            })
            .collect();
        // Newest first; ties by id so that pages are stable.
        items.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        items
            .into_iter()
            .skip(query.page_number.unwrap_or(0).saturating_mul(size))
            .take(size)
            .map(|(_, _, item)| match listed {
                Listed::Payments => payment_list_item(item),
                Listed::Refunds => refund_list_item(item),
                Listed::Disputes => dispute_list_item(item),
            })
            .collect::<Vec<Value>>()
    });
    axum::Json(json!({ "items": page })).into_response()
}

/// A payment as `GET /payments` lists it: Dodo's `PaymentListResponse`, shorter than the
/// `Payment` of `GET /payments/{id}` — no `product_cart`, `billing`, `refunds`,
/// `disputes`, `is_update_payment_method` (so what a listed payment bought is read from
/// `GET /payments/{id}`) — plus `has_license_key` and the latest `dispute_status`.
pub(super) fn payment_list_item(payment: &Value) -> Value {
    let mut item = project(
        payment,
        &[
            "payment_id",
            "brand_id",
            "created_at",
            "currency",
            "customer",
            "digital_products_delivered",
            "includes_usage",
            "is_multi_subscription",
            "metadata",
            "payment_provider",
            "retry_attempt",
            "service_periods",
            "subscription_ids",
            "total_amount",
            "charge_type",
            "checkout_session_id",
            "payment_method",
            "refund_status",
            "status",
            "subscription_id",
        ],
    );
    item.insert("has_license_key".into(), json!(false));
    let dispute_status = payment["disputes"]
        .as_array()
        .and_then(|disputes| disputes.last())
        .map(|dispute| dispute["dispute_status"].clone());
    item.insert(
        "dispute_status".into(),
        dispute_status.unwrap_or(Value::Null),
    );
    Value::Object(item)
}

pub(super) type ClaimQuery =
    Result<axum::extract::Query<ClaimListQuery>, axum::extract::rejection::QueryRejection>;

/// One list route: the key and faults, the query, then the page.
pub(super) async fn list_route(
    sim: &DodoSimulator,
    headers: &HeaderMap,
    query: ClaimQuery,
    listed: Listed,
    call: &str,
) -> Response {
    if let Err(answer) = sim.gate(headers, call.to_owned()).await {
        return answer;
    }
    let Ok(axum::extract::Query(query)) = query else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_QUERY",
            "bad query",
        );
    };
    list_page(sim, listed, &query)
}

pub(super) async fn list_payments(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: ClaimQuery,
) -> Response {
    list_route(&sim, &headers, query, Listed::Payments, "GET /payments").await
}
