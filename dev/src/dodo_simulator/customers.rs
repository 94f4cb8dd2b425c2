//! Customers (`POST /customers`, `GET /customers/{id}`), how a checkout is attached to one,
//! and the customer portal (its session link, page and buttons).

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

pub(super) fn find_customer<'r>(records: &'r Records, id: &str) -> Option<&'r Value> {
    records
        .customers
        .iter()
        .find(|c| c["customer_id"].as_str() == Some(id))
}

pub(super) fn new_customer(records: &mut Records, email: &str, name: &str) -> String {
    let customer_id = records.new_id("cus");
    records.customers.push(json!({
        "customer_id": customer_id,
        "business_id": "bus_simulator",
        "email": email,
        "name": name,
        "created_at": paywall::time::Clock::system().now().to_rfc3339(),
        "metadata": {},
    }));
    customer_id
}

/// The customer a checkout with only an e-mail is attached to: the existing customer with
/// that e-mail (the oldest), unless `always_create_new` — as Dodo does.
pub(super) fn attach_customer(
    records: &mut Records,
    email: &str,
    name: &str,
    always_create_new: bool,
) -> String {
    if !always_create_new
        && let Some(existing) = records
            .customers
            .iter()
            .find(|c| c["email"].as_str() == Some(email))
            .and_then(|c| c["customer_id"].as_str())
    {
        return existing.to_owned();
    }
    new_customer(records, email, name)
}

pub(super) fn always_create_new_customer(request: &Value) -> bool {
    request
        .pointer("/feature_flags/always_create_new_customer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub(super) async fn create_customer(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "POST /customers".into()).await {
        return answer;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(email), Some(name)) = (
        request.get("email").and_then(Value::as_str),
        request.get("name").and_then(Value::as_str),
    ) else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "email and name are required",
        );
    };
    let customer = sim.change(|records| {
        let id = new_customer(records, email, name);
        find_customer(records, &id).cloned()
    });
    axum::Json(customer.unwrap_or(Value::Null)).into_response()
}

pub(super) async fn get_customer(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /customers/{id}")).await {
        return answer;
    }
    match sim.customer(&id) {
        Some(customer) => axum::Json(customer).into_response(),
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Customer not found"),
    }
}

pub(super) async fn portal_session(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim
        .gate(
            &headers,
            format!("POST /customers/{id}/customer-portal/session"),
        )
        .await
    {
        return answer;
    }
    if sim.customer(&id).is_none() {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Customer not found");
    }
    axum::Json(json!({"link": format!("{}/portal/{id}", sim.shared.public_url)})).into_response()
}

/// The portal page names its customer and what they bought, so a person (or a test) can
/// see whose portal a link opens.
pub(super) async fn portal_page(
    State(sim): State<DodoSimulator>,
    Path(customer): Path<String>,
) -> Response {
    let Some(record) = sim.customer(&customer) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>Customer not found</h1>".to_owned()),
        )
            .into_response();
    };
    let payments: Vec<String> = sim.with(|inner| {
        let mut ids: Vec<String> = inner
            .records
            .payments
            .values()
            .filter(|p| {
                p.pointer("/customer/customer_id").and_then(Value::as_str) == Some(&customer)
            })
            .filter_map(|p| p["payment_id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    });
    let items: String = payments
        .iter()
        .map(|id| format!("<li class=\"payment\">{}</li>", escape_html(id)))
        .collect();
    let mut subscriptions: Vec<Value> = sim
        .subscriptions()
        .into_iter()
        .filter(|s| s.pointer("/customer/customer_id").and_then(Value::as_str) == Some(&customer))
        .collect();
    subscriptions.sort_by(|a, b| {
        a["subscription_id"]
            .as_str()
            .cmp(&b["subscription_id"].as_str())
    });
    let subscription_items: String = subscriptions
        .iter()
        .map(|s| {
            let id = escape_html(s["subscription_id"].as_str().unwrap_or_default());
            let status = escape_html(s["status"].as_str().unwrap_or_default());
            let next = escape_html(s["next_billing_date"].as_str().unwrap_or_default());
            let cancelling = s["cancel_at_next_billing_date"] == true;
            let (action, label, when) = if cancelling {
                ("resume", "Keep renewing", format!("cancels at period end ({next})"))
            } else {
                ("cancel", "Cancel at period end", format!("next charge {next}"))
            };
            format!(
                "<li class=\"subscription\"><p><code>{id}</code> <span class=\"status\">{status}</span>, \
                 <span class=\"renewal\">{when}</span></p>\
                 <form method=\"post\" action=\"{p}/portal/{c}/subscriptions/{id}\">\
                 <input type=\"hidden\" name=\"action\" value=\"card\">\
                 <button name=\"renewal\" value=\"succeeds\">New card</button>\
                 <button name=\"renewal\" value=\"fails\">New card (declined)</button></form>\
                 <form method=\"post\" action=\"{p}/portal/{c}/subscriptions/{id}\">\
                 <button name=\"action\" value=\"{action}\">{label}</button></form></li>",
                c = escape_html(&customer),
                p = escape_html(&sim.shared.public_url),
            )
        })
        .collect();
    let none = |items: &str, what: &str| {
        if items.is_empty() {
            format!("<li class=\"note\">No {what}.</li>")
        } else {
            String::new()
        }
    };
    // The app that sent the customer here: the local server the simulator is served on.
    let app = sim
        .shared
        .public_url
        .strip_suffix("/dodo")
        .map(|origin| format!("{origin}/"))
        .unwrap_or_else(|| "/".to_owned());
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Customer portal (Dodo simulator)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; color: #1b1b1f; }}
 .card {{ border: 1px solid #ddd; border-radius: 12px; padding: 1.5rem; }}
 .note {{ color: #666; font-size: .85rem; }}
 ul {{ padding-left: 0; list-style: none; }}
 li.subscription {{ border-top: 1px solid #eee; padding: .5rem 0; }}
 form {{ display: inline; }}
 button {{ font-size: .95rem; padding: .4rem .9rem; border-radius: 8px; border: 1px solid #888; cursor: pointer; margin: 0 .4rem .4rem 0; }}
 a.back {{ display: inline-block; margin-top: 1rem; }}
</style></head>
<body><div class="card">
<p class="note">Dodo Payments simulator: no money moves.</p>
<h1>Customer portal</h1>
<p>Customer <code id="customer">{customer}</code> (<span id="email">{email}</span>):
subscriptions, cards and invoices would be managed here.</p>
<h2>Subscriptions</h2>
<ul id="subscriptions">{subscription_items}{no_subscriptions}</ul>
<h2>Payments</h2>
<ul id="payments">{items}{no_payments}</ul>
<a class="back" id="back" href="{app}">← Back to the app</a>
</div></body></html>"#,
        customer = escape_html(&customer),
        email = escape_html(record["email"].as_str().unwrap_or_default()),
        no_subscriptions = none(&subscription_items, "subscriptions"),
        no_payments = none(&items, "payments"),
        app = escape_html(&app),
    ))
    .into_response()
}

pub(super) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize)]
pub(super) struct PortalAction {
    /// `card`: a new card (`renewal=succeeds|fails`); `cancel`/`resume`: at period end.
    action: String,
    renewal: Option<String>,
}

/// The portal's buttons: a new card for a subscription, or cancel it at period end (or
/// take that back), as the customer would in Dodo's portal.
pub(super) async fn portal_action(
    State(sim): State<DodoSimulator>,
    Path((customer, id)): Path<(String, String)>,
    form: Result<Form<PortalAction>, axum::extract::rejection::FormRejection>,
) -> Response {
    let owned = sim.subscription(&id).is_some_and(|s| {
        s.pointer("/customer/customer_id").and_then(Value::as_str) == Some(&customer)
    });
    if !owned {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found");
    }
    let Ok(Form(form)) = form else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "the form needs action=card|cancel|resume",
        );
    };
    match (form.action.as_str(), form.renewal.as_deref()) {
        ("card", None | Some("succeeds")) => sim.new_card(&id, true).await,
        ("card", Some("fails")) => sim.new_card(&id, false).await,
        ("cancel", _) => sim.cancel_at_period_end(&id, true).await,
        ("resume", _) => sim.cancel_at_period_end(&id, false).await,
        _ => {
            return dodo_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "action must be card, cancel or resume; renewal succeeds or fails",
            );
        }
    };
    Redirect::to(&format!("{}/portal/{customer}", sim.shared.public_url)).into_response()
}
