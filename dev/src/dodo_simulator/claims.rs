//! Refunds (`POST`/`GET /refunds`) and disputes (`GET /disputes`, and the simulator-only
//! `POST /simulator/disputes` that stands in for the banks that raise them).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

impl DodoSimulator {
    /// `POST /refunds`: a full refund of a succeeded payment.
    pub async fn refund(&self, payment_id: &str) -> Result<Value, String> {
        let now = self.now();
        let emitted = self.change(|records| records.refund(payment_id, "requested", now))?;
        let refund = emitted.first().map(|(_, r)| r.clone()).unwrap_or_default();
        self.emit(emitted).await;
        Ok(refund)
    }

    /// A bank raises a dispute of a payment: `dispute.opened` now, and the bank's answer
    /// (`won` for the merchant, or lost) after [`DISPUTE_RESOLVES_AFTER`].
    pub async fn open_dispute(&self, payment_id: &str, won: bool) -> Result<Value, String> {
        let now = self.now();
        let emitted = self.change(|records| records.open_dispute(payment_id, won, now))?;
        let dispute = emitted.first().map(|(_, d)| d.clone()).unwrap_or_default();
        self.emit(emitted).await;
        Ok(dispute)
    }
}

#[derive(Deserialize)]
pub(super) struct RefundRequest {
    payment_id: String,
}

/// `POST /refunds`: a full refund (the simulator does not split payments).
pub(super) async fn create_refund(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "POST /refunds".into()).await {
        return answer;
    }
    let Ok(request) = serde_json::from_slice::<RefundRequest>(&body) else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "payment_id is required",
        );
    };
    match sim.refund(&request.payment_id).await {
        Ok(refund) => axum::Json(refund).into_response(),
        Err(message) => dodo_error(StatusCode::UNPROCESSABLE_ENTITY, "REFUND_REFUSED", &message),
    }
}

#[derive(Deserialize)]
pub(super) struct DisputeRequest {
    payment_id: String,
    /// The bank's answer in seven days: `won` (for the merchant) or `lost`.
    outcome: String,
}

pub(super) async fn raise_dispute(
    State(sim): State<DodoSimulator>,
    body: axum::body::Bytes,
) -> Response {
    let request = serde_json::from_slice::<DisputeRequest>(&body)
        .ok()
        .filter(|r| r.outcome == "won" || r.outcome == "lost");
    let Some(request) = request else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "payment_id and outcome (won or lost) are required",
        );
    };
    match sim
        .open_dispute(&request.payment_id, request.outcome == "won")
        .await
    {
        Ok(dispute) => axum::Json(dispute).into_response(),
        Err(message) => dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DISPUTE_REFUSED",
            &message,
        ),
    }
}

/// A refund as `GET /refunds` and a payment's `refunds` list it: Dodo's
/// `RefundListItem` (no `customer`, `brand_id` or `metadata`).
pub(super) fn refund_list_item(refund: &Value) -> Value {
    Value::Object(project(
        refund,
        &[
            "refund_id",
            "payment_id",
            "business_id",
            "created_at",
            "is_partial",
            "status",
            "amount",
            "currency",
            "reason",
        ],
    ))
}

/// A dispute as `GET /disputes` lists it: Dodo's `DisputeListResponse`.
pub(super) fn dispute_list_item(dispute: &Value) -> Value {
    let mut item = project(
        dispute,
        &[
            "dispute_id",
            "payment_id",
            "business_id",
            "amount",
            "currency",
            "created_at",
            "dispute_stage",
            "dispute_status",
        ],
    );
    item.insert("payment_provider".into(), json!("dodo"));
    Value::Object(item)
}

pub(super) async fn list_refunds(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: ClaimQuery,
) -> Response {
    list_route(&sim, &headers, query, Listed::Refunds, "GET /refunds").await
}

pub(super) async fn list_disputes(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: ClaimQuery,
) -> Response {
    list_route(&sim, &headers, query, Listed::Disputes, "GET /disputes").await
}
