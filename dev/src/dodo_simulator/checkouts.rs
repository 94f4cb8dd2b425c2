//! Checkout sessions: `POST /checkouts`, `GET /checkouts/{id}`, and the hosted checkout page
//! (`GET`/`POST /checkout/{session}`) whose buttons pay, decline, or pay and decline later.

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

impl DodoSimulator {
    /// Creates the payment for a session (and, for a subscription product, the
    /// subscription) and sends its webhooks where Dodo would. With a free trial
    /// (`subscription_data.trial_period_days`), the subscription alone: no payment until
    /// the trial ends. What the buyer is sent back with: the payment's id (or, for a
    /// trial, the subscription's) and the redirect to `return_url`.
    pub(super) async fn complete(
        &self,
        session_id: &str,
        succeeded: bool,
        renewal_fails: bool,
    ) -> Result<(String, String), Refusal> {
        let now = self.now();
        let (answer_query, answer_id, emitted, return_url) = self.with(|inner| {
            let subscription_products = inner.subscription_products.clone();
            let Some(checkout) = inner.records.checkouts.get(session_id).cloned() else {
                return Err(Refusal {
                    status: StatusCode::NOT_FOUND,
                    code: "NOT_FOUND",
                    message: "Checkout session not found",
                });
            };
            let request = &checkout.request;
            // What each line costs: its product's price times its quantity.
            let product_cart = request.get("product_cart").cloned().unwrap_or(json!([]));
            let lines: Vec<(String, i64)> = product_cart
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    Some((
                        l.get("product_id")?.as_str()?.to_owned(),
                        l.get("quantity")?.as_i64()?,
                    ))
                })
                .collect();
            let amount: i64 = lines
                .iter()
                .map(|(product, quantity)| inner.price_of(product) * quantity)
                .sum();
            let first_price = lines
                .first()
                .map_or(DEFAULT_PRICE_MINOR, |(product, _)| inner.price_of(product));
            let records = &mut inner.records;
            let already_paid = checkout
                .payment_id
                .as_ref()
                .and_then(|paid| records.payments.get(paid))
                .and_then(|p| p.get("status"))
                .and_then(Value::as_str)
                == Some("succeeded");
            if already_paid || checkout.subscription_id.is_some() {
                return Err(Refusal {
                    status: StatusCode::CONFLICT,
                    code: "CHECKOUT_ALREADY_COMPLETED",
                    message: "This checkout session has already been paid",
                });
            }
            // The customer the session was attached to, else the one for the e-mail
            // the buyer types on the page (here: a stand-in address).
            let customer_id = match &checkout.customer_id {
                Some(id) => id.clone(),
                None => attach_customer(
                    records,
                    "buyer@example.com",
                    "Buyer",
                    always_create_new_customer(request),
                ),
            };
            let customer = find_customer(records, &customer_id)
                .cloned()
                .unwrap_or_else(|| json!({"customer_id": customer_id}));
            let metadata = request.get("metadata").cloned().unwrap_or(json!({}));
            let subscription_line = lines
                .first()
                .filter(|(product, _)| subscription_products.contains(product))
                .cloned();
            let trial_days = trial_days(request).unwrap_or(0);
            // A subscription is created only when its first charge is paid (or, with a
            // trial, when the card is accepted).
            let subscription = match &subscription_line {
                Some((product, quantity)) if succeeded => Some(records.start_subscription(
                    now,
                    billing::NewSubscription {
                        product_id: product,
                        unit_price: first_price,
                        quantity: *quantity,
                        customer: &customer,
                        metadata: &metadata,
                        renewal_fails,
                        trial_days,
                    },
                )),
                _ => None,
            };
            let subscription_id = subscription
                .as_ref()
                .and_then(|s| s["subscription_id"].as_str())
                .map(str::to_owned);
            let return_url = request
                .get("return_url")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut emitted: Emitted = Vec::new();
            if let Some(subscription) = subscription {
                emitted.push(("subscription.active".into(), subscription));
            }
            if let (Some(subscription_id), true) = (&subscription_id, trial_days > 0) {
                // A free trial: nothing is charged now (Dodo's first `payment.succeeded`
                // comes "whenever [the trial] ends").
                if let Some(stored) = records.checkouts.get_mut(session_id) {
                    stored.subscription_id = Some(subscription_id.clone());
                    stored.customer_id = Some(customer_id);
                }
                self.persist(records);
                let query = format!("subscription_id={subscription_id}&status=active");
                return Ok((query, subscription_id.clone(), emitted, return_url));
            }
            let payment = NewPayment {
                id: records.new_id("pay"),
                now,
                succeeded,
                amount,
                customer: &customer,
                metadata,
                checkout_session_id: Some(session_id),
                subscription_id: subscription_id.as_deref(),
                // Dodo sends no cart with a subscription's payments.
                product_cart: subscription_line.is_none().then_some(product_cart),
                retry_attempt: 0,
                charge: subscription_id
                    .is_some()
                    .then_some(("new", (now, add_months(now, 1)))),
                proration_factor: None,
            }
            .into_json();
            let payment_id = payment["payment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(stored) = records.checkouts.get_mut(session_id) {
                stored.payment_id = Some(payment_id.clone());
                stored.customer_id = Some(customer_id);
            }
            records.note_object(&payment_id, &payment);
            records.payments.insert(payment_id.clone(), payment.clone());
            self.persist(records);
            let event = if succeeded {
                "payment.succeeded"
            } else {
                "payment.failed"
            };
            let status = payment["status"].as_str().unwrap_or_default().to_owned();
            emitted.push((event.into(), payment));
            let query = format!("payment_id={payment_id}&status={status}");
            Ok((query, payment_id, emitted, return_url))
        })?;

        self.emit(emitted).await;
        let redirect = return_url.map(|url| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}{answer_query}")
        });
        Ok((answer_id, redirect.unwrap_or_default()))
    }
}

/// `1900` → `$19.00`.
fn dollars(minor: i64) -> String {
    format!("${}.{:02}", minor / 100, minor % 100)
}

/// `subscription_data.trial_period_days`: `Some(days)` when given (checked at creation).
fn trial_days(request: &Value) -> Option<i64> {
    request
        .pointer("/subscription_data/trial_period_days")
        .and_then(Value::as_i64)
}

/// Metadata values must be strings in the API version Dodo documents (1.53.2).
pub(super) fn validate_checkout(body: &Value) -> Result<(), String> {
    let lines = body
        .get("product_cart")
        .and_then(Value::as_array)
        .filter(|lines| !lines.is_empty())
        .ok_or("product_cart must be a non-empty array")?;
    for line in lines {
        if line.get("product_id").and_then(Value::as_str).is_none() {
            return Err("product_cart[].product_id is required".into());
        }
        if line.get("quantity").and_then(Value::as_u64).unwrap_or(0) < 1 {
            return Err("product_cart[].quantity must be a positive integer".into());
        }
    }
    if let Some(metadata) = body.get("metadata") {
        let strings_only = metadata
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !strings_only {
            return Err("metadata must map to string values".into());
        }
    }
    if let Some(url) = body.get("return_url")
        && !url.is_string()
    {
        return Err("return_url must be a string".into());
    }
    // "Must be between 0 and 10000 days" (SDK `SubscriptionDataParam.trial_period_days`).
    if let Some(days) = body.pointer("/subscription_data/trial_period_days")
        && !days.is_null()
        && !days.as_i64().is_some_and(|d| (0..=10_000).contains(&d))
    {
        return Err("subscription_data.trial_period_days must be between 0 and 10000".into());
    }
    Ok(())
}

pub(super) async fn create_checkout(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "POST /checkouts".into()).await {
        return answer;
    }
    let Ok(body) = body else {
        return dodo_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Request body is too large",
        );
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "Request body is not valid JSON",
        );
    };
    if let Err(message) = validate_checkout(&request) {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            &message,
        );
    }
    let session_id = sim.change(|records| records.new_id("cks"));
    let checkout_url = format!("{}/checkout/{session_id}", sim.shared.public_url);
    let attached = sim.change(|records| {
        let customer = request.get("customer");
        let customer_id = match customer.and_then(|c| c.get("customer_id")) {
            Some(id) => {
                let id = id.as_str().unwrap_or_default().to_owned();
                if find_customer(records, &id).is_none() {
                    return Err(());
                }
                Some(id)
            }
            // An e-mail alone: attached to the existing customer with that e-mail, unless
            // told to always create a new one (Dodo's documented default).
            None => customer
                .and_then(|c| c.get("email"))
                .and_then(Value::as_str)
                .map(|email| {
                    let name = customer
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or(email);
                    attach_customer(records, email, name, always_create_new_customer(&request))
                }),
        };
        records.checkouts.insert(
            session_id.clone(),
            Checkout {
                request: request.clone(),
                payment_id: None,
                subscription_id: None,
                customer_id,
            },
        );
        Ok(())
    });
    if attached.is_err() {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Customer not found");
    }
    axum::Json(json!({"session_id": session_id, "checkout_url": checkout_url})).into_response()
}

pub(super) async fn get_checkout(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /checkouts/{id}")).await {
        return answer;
    }
    let found = sim.with(|inner| {
        let checkout = inner.records.checkouts.get(&id)?;
        let payment = checkout
            .payment_id
            .as_ref()
            .and_then(|p| inner.records.payments.get(p));
        Some(json!({
            "id": id,
            "created_at": paywall::time::Clock::system().now().to_rfc3339(),
            "customer_email": checkout.request.pointer("/customer/email"),
            "payment_id": checkout.payment_id,
            "payment_status": payment.and_then(|p| p.get("status")),
        }))
    });
    match found {
        Some(session) => axum::Json(session).into_response(),
        None => dodo_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Checkout session not found",
        ),
    }
}

pub(super) async fn checkout_page(
    State(sim): State<DodoSimulator>,
    Path(session): Path<String>,
) -> Response {
    let Some(request) = sim.checkout_request(&session) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>Checkout session not found</h1>".to_owned()),
        )
            .into_response();
    };
    // The customer the session is attached to (the paywall names its user's own), else
    // the e-mail the request gave, else the page would ask for one.
    let attached = sim
        .checkout_customer(&session)
        .and_then(|id| sim.customer(&id))
        .and_then(|customer| customer["email"].as_str().map(str::to_owned));
    let email = attached
        .or_else(|| {
            request
                .pointer("/customer/email")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(Dodo would ask for it here)".to_owned());
    let product = request
        .pointer("/product_cart/0/product_id")
        .and_then(Value::as_str)
        .unwrap_or("?");
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout (Dodo simulator)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; color: #1b1b1f; }}
 .card {{ border: 1px solid #ddd; border-radius: 12px; padding: 1.5rem; }}
 .note {{ color: #666; font-size: .85rem; }}
 button {{ font-size: 1rem; padding: .6rem 1.2rem; border-radius: 8px; border: 1px solid #888; cursor: pointer; margin-right: .5rem; }}
 #pay {{ background: #1b1b1f; color: white; border-color: #1b1b1f; }}
</style></head>
<body><div class="card">
<p class="note">Dodo Payments simulator: no money moves.</p>
<h1>Checkout</h1>
<p>Product <code>{product}</code>: <strong>{price}</strong></p>
<p>Customer: <span id="customer-email">{email}</span></p>
<p class="note">Three test cards:</p>
<form method="post">
<button id="pay" name="outcome" value="succeeded">Pay {price}</button>
<button id="decline" name="outcome" value="failed">Declined card</button>
</form>
<form method="post"><input type="hidden" name="outcome" value="succeeded">
<input type="hidden" name="renewal" value="fails">
<button id="pay-then-fail">Pay now, declined at renewal</button>
</form></div></body></html>"#,
        product = escape_html(product),
        email = escape_html(&email),
        price = escape_html(&dollars(sim.product_price(product))),
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct Outcome {
    outcome: String,
    /// `fails`: the card pays now and is declined at every later charge.
    renewal: Option<String>,
}

pub(super) async fn complete_checkout(
    State(sim): State<DodoSimulator>,
    Path(session): Path<String>,
    form: Result<Form<Outcome>, axum::extract::rejection::FormRejection>,
) -> Response {
    // A malformed form is Dodo's JSON error, not axum's plain-text rejection.
    let Ok(Form(form)) = form else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "the form needs outcome=succeeded or outcome=failed",
        );
    };
    let succeeded = match form.outcome.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => {
            return dodo_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "outcome must be `succeeded` or `failed`",
            );
        }
    };
    let renewal_fails = match form.renewal.as_deref() {
        None | Some("succeeds") => false,
        Some("fails") => true,
        Some(_) => {
            return dodo_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "renewal must be `succeeds` or `fails`",
            );
        }
    };
    match sim.complete(&session, succeeded, renewal_fails).await {
        // A trial's answer names its subscription: there is no payment yet.
        Ok((id, redirect)) if redirect.is_empty() && id.starts_with("sub_") => {
            axum::Json(json!({"subscription_id": id})).into_response()
        }
        Ok((payment_id, redirect)) if redirect.is_empty() => {
            axum::Json(json!({"payment_id": payment_id})).into_response()
        }
        Ok((_, redirect)) => Redirect::to(&redirect).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}
