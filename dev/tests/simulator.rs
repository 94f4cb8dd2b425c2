//! The Dodo simulator's webhook deliveries: signed as Dodo signs them, retried on
//! non-2xx on Dodo's schedule (compressed), with the same `webhook-id` each time.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dev::dodo_simulator::{DodoSimulator, WebhookTarget};
use paywall::webhook_signature::{SignedHeaders, WebhookSecret, verify};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Seen {
    answers_left_failing: u32,
    deliveries: Vec<(String, bool, Value)>,
}

#[tokio::test]
async fn deliveries_are_signed_and_retried_until_accepted() {
    let seen = Arc::new(Mutex::new(Seen {
        answers_left_failing: 2,
        ..Seen::default()
    }));
    let endpoint_seen = Arc::clone(&seen);
    let endpoint = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = Arc::clone(&endpoint_seen);
            async move {
                let secret = WebhookSecret::parse(SECRET).expect("secret");
                let valid = verify(
                    &secret,
                    SignedHeaders::from_http(&headers),
                    &body,
                    paywall::time::Clock::system().now().unix_seconds(),
                )
                .is_ok();
                let id = headers["webhook-id"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned();
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut seen = seen.lock().expect("lock");
                seen.deliveries.push((id, valid, event));
                if seen.answers_left_failing > 0 {
                    seen.answers_left_failing -= 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, endpoint).await });

    let dodo = DodoSimulator::start(None).await.expect("sim");
    dodo.simulator.set_webhook(Some(WebhookTarget {
        url: hook_url,
        secret: Arc::new(WebhookSecret::parse(SECRET).expect("secret")),
        // 5 s -> 1.4 ms, 5 min -> 83 ms.
        time_compression: 3600,
    }));
    dodo.simulator
        .deliver(
            "payment.succeeded",
            json!({"payment_id": "pay_1", "status": "succeeded"}),
        )
        .await;

    let mut waited = 0;
    while dodo.simulator.deliveries().len() < 3 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    let attempts: Vec<(u32, u16)> = dodo
        .simulator
        .deliveries()
        .iter()
        .map(|d| (d.attempt, d.status))
        .collect();
    assert_eq!(attempts, [(1, 500), (2, 500), (3, 200)]);

    let seen = seen.lock().expect("lock");
    assert!(
        seen.deliveries.iter().all(|(_, valid, _)| *valid),
        "every attempt is signed"
    );
    let ids: Vec<&String> = seen.deliveries.iter().map(|(id, _, _)| id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one webhook-id across retries"
    );
    let event = &seen.deliveries[0].2;
    assert_eq!(event["type"], "payment.succeeded");
    // Dodo's SDK models the event's `data` as the object alone: no `payload_type`.
    assert_eq!(event["data"].get("payload_type"), None);
    assert_eq!(event["data"]["payment_id"], "pay_1");
}

/// Every Dodo route the simulator serves, once, in the shape of Dodo's SDK models: the list
/// routes answer their list models (shorter than the objects), the objects carry the
/// fields the models require. (`make test-sdk-models` runs this with the recorder on, so
/// that `dev/sdk-oracle/validate.py` sees each route; here a few fields stand for the
/// rest.)
#[tokio::test]
async fn every_route_answers_in_the_shape_of_dodos_models() {
    let endpoint = axum::Router::new().route("/hook", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, endpoint).await });
    let dodo = DodoSimulator::start(None).await.expect("sim");
    let sim = &dodo.simulator;
    sim.set_subscription_products(["pdt_sub".to_owned()]);
    sim.set_webhook(Some(WebhookTarget {
        url: hook_url,
        secret: Arc::new(WebhookSecret::parse(SECRET).expect("secret")),
        time_compression: 3600,
    }));
    let http = paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = dodo.url.clone();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let request = http.request(method, format!("{base}{path}"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let path = path.to_owned();
        async move {
            let response = request.send().await.expect("answer");
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.expect("JSON")
        }
    };
    use reqwest::Method;

    let customer = call(
        Method::POST,
        "/customers",
        Some(json!({"email": "a@example.com", "name": "A"})),
    )
    .await;
    let customer_id = customer["customer_id"].as_str().expect("id").to_owned();
    let again = call(Method::GET, &format!("/customers/{customer_id}"), None).await;
    assert_eq!(again["email"], "a@example.com");

    let mut paid = Vec::new();
    for product in ["pdt_sub", "pdt_pass"] {
        let session = call(
            Method::POST,
            "/checkouts",
            Some(json!({
                "product_cart": [{"product_id": product, "quantity": 1}],
                "customer": {"customer_id": customer_id},
                "return_url": "http://127.0.0.1:9/back",
                "metadata": {"user_id": "u1"},
            })),
        )
        .await;
        let session_id = session["session_id"].as_str().expect("session").to_owned();
        let page = http
            .post(format!("{base}/checkout/{session_id}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("outcome=succeeded")
            .send()
            .await
            .expect("paid");
        assert!(page.status().is_redirection());
        let status = call(Method::GET, &format!("/checkouts/{session_id}"), None).await;
        assert_eq!(status["payment_status"], "succeeded");
        paid.push(status["payment_id"].as_str().expect("payment").to_owned());
    }
    let (subscription_payment, pass_payment) = (&paid[0], &paid[1]);

    let list = call(Method::GET, "/subscriptions", None).await;
    let item = &list["items"][0];
    assert_eq!(item["discounts"], json!([]));
    assert_eq!(
        item.get("brand_id"),
        None,
        "not in SubscriptionListResponse"
    );
    let subscription_id = item["subscription_id"].as_str().expect("id").to_owned();
    let subscription = call(
        Method::GET,
        &format!("/subscriptions/{subscription_id}"),
        None,
    )
    .await;
    assert_eq!(subscription["addons"], json!([]));
    assert_eq!(subscription.get("business_id"), None, "not in Subscription");
    let patched = call(
        Method::PATCH,
        &format!("/subscriptions/{subscription_id}"),
        Some(json!({"cancel_at_next_billing_date": true})),
    )
    .await;
    assert_eq!(patched["cancel_at_next_billing_date"], true);

    let product = call(Method::GET, "/products/pdt_sub", None).await;
    assert_eq!(product["is_recurring"], true);
    assert_eq!(product["price"]["type"], "recurring_price");
    let product = call(Method::GET, "/products/pdt_pass", None).await;
    assert_eq!(product["price"]["type"], "one_time_price");

    let payment = call(Method::GET, &format!("/payments/{pass_payment}"), None).await;
    assert_eq!(payment["product_cart"][0]["product_id"], "pdt_pass");
    assert_eq!(payment["service_periods"], json!([]));
    let payment = call(
        Method::GET,
        &format!("/payments/{subscription_payment}"),
        None,
    )
    .await;
    assert_eq!(payment["charge_type"], "new");
    assert_eq!(
        payment["service_periods"][0]["subscription_id"],
        subscription_id.as_str()
    );
    let payments = call(Method::GET, "/payments?status=succeeded", None).await;
    assert_eq!(payments["items"].as_array().map(Vec::len), Some(2));
    for item in payments["items"].as_array().into_iter().flatten() {
        // Dodo lists no cart: what a listed payment bought is read from its own GET.
        assert_eq!(item.get("product_cart"), None, "not in PaymentListResponse");
        assert_eq!(item["has_license_key"], false);
    }

    let refund = call(
        Method::POST,
        "/refunds",
        Some(json!({"payment_id": pass_payment})),
    )
    .await;
    assert_eq!(refund["metadata"], json!({}));
    let refunds = call(Method::GET, "/refunds", None).await;
    assert_eq!(refunds["items"][0].get("customer"), None, "RefundListItem");
    let dispute = call(
        Method::POST,
        "/simulator/disputes",
        Some(json!({"payment_id": subscription_payment, "outcome": "lost"})),
    )
    .await;
    assert_eq!(dispute["amount"], "1900", "a string in Dodo's Dispute");
    let disputes = call(Method::GET, "/disputes", None).await;
    assert_eq!(disputes["items"][0]["payment_provider"], "dodo");

    let portal = call(
        Method::POST,
        &format!("/customers/{customer_id}/customer-portal/session"),
        None,
    )
    .await;
    assert!(portal["link"].as_str().is_some());
}
