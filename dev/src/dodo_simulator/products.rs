//! Products: `GET /products/{id}`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;

pub(super) async fn get_product(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /products/{id}")).await {
        return answer;
    }
    let (is_recurring, price) = sim.with(|inner| {
        (
            inner.subscription_products.contains(&id),
            inner.price_of(&id),
        )
    });
    let price = if is_recurring {
        json!({"type": "recurring_price", "price": price, "currency": "USD",
               "discount": 0, "purchasing_power_parity": false,
               "payment_frequency_count": 1, "payment_frequency_interval": "Month",
               "subscription_period_count": 10, "subscription_period_interval": "Year"})
    } else {
        json!({"type": "one_time_price", "price": price, "currency": "USD",
               "discount": 0, "purchasing_power_parity": false})
    };
    // Every field Dodo's `Product` requires (SDK `types/product.py`).
    axum::Json(json!({
        "product_id": id,
        "business_id": "bus_simulator",
        "brand_id": "bus_simulator",
        "name": PRODUCT_NAME,
        "is_recurring": is_recurring,
        "price": price,
        "tax_category": "saas",
        "license_key_enabled": false,
        "metadata": {},
        "entitlements": [],
        "credit_entitlements": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }))
    .into_response()
}
