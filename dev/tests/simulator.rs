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

// ---- Prices, trials, plan changes, cancel and resume: on the simulator's test clock ----

mod lifecycle {
    use super::*;
    use dev::dodo_simulator::RunningSimulator;
    use paywall::time::{Clock, SECONDS_PER_DAY, Timestamp};

    /// A 30-day period: April 1 to May 1 (halfway: April 16).
    const START: &str = "2027-04-01T00:00:00Z";
    const BASIC: &str = "pdt_basic"; // $19
    const PRO: &str = "pdt_pro"; // $49

    fn at(text: &str) -> i64 {
        Timestamp::parse_rfc3339(text).expect("time").unix_seconds()
    }

    struct World {
        dodo: RunningSimulator,
        clock: Clock,
        http: reqwest::Client,
        events: Arc<Mutex<Vec<(String, Value)>>>,
    }

    async fn world() -> World {
        let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let seen = Arc::clone(&events);
        let endpoint = axum::Router::new().route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let seen = Arc::clone(&seen);
                async move {
                    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let kind = event["type"].as_str().unwrap_or_default().to_owned();
                    seen.lock()
                        .expect("lock")
                        .push((kind, event["data"].clone()));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, endpoint).await });
        let dodo = DodoSimulator::start(None).await.expect("sim");
        let clock = Clock::test(at(START) * 1000, false);
        let sim = &dodo.simulator;
        sim.set_clock(clock.clone());
        sim.set_subscription_products([BASIC.to_owned(), PRO.to_owned()]);
        sim.set_product_prices([(BASIC.to_owned(), 1900), (PRO.to_owned(), 4900)]);
        sim.set_webhook(Some(WebhookTarget {
            url: hook_url,
            secret: Arc::new(WebhookSecret::parse(SECRET).expect("secret")),
            time_compression: 3600,
        }));
        World {
            dodo,
            clock,
            http: paywall::http::client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            events,
        }
    }

    impl World {
        async fn call(
            &self,
            method: reqwest::Method,
            path: &str,
            body: Option<Value>,
        ) -> (u16, Value) {
            let request = self
                .http
                .request(method, format!("{}{path}", self.dodo.url));
            let request = match body {
                Some(body) => request.json(&body),
                None => request,
            };
            let answer = request.send().await.expect("answer");
            let status = answer.status().as_u16();
            (status, answer.json().await.unwrap_or(Value::Null))
        }

        /// Buys `product` (with a trial of `trial` days, a card declined after the first
        /// charge when `declines_later`); the subscription's id.
        async fn buy(&self, product: &str, trial: Option<i64>, declines_later: bool) -> String {
            let mut request = json!({
                "product_cart": [{"product_id": product, "quantity": 1}],
                "customer": {"email": "buyer@example.com", "name": "Buyer"},
                "feature_flags": {"always_create_new_customer": true},
                "metadata": {"user_id": "u1"},
            });
            if let Some(days) = trial {
                request["subscription_data"] = json!({"trial_period_days": days});
            }
            let (status, session) = self
                .call(reqwest::Method::POST, "/checkouts", Some(request))
                .await;
            assert_eq!(status, 200, "{session}");
            let session_id = session["session_id"].as_str().expect("session");
            let before: Vec<Value> = self
                .dodo
                .simulator
                .subscriptions()
                .iter()
                .map(|s| s["subscription_id"].clone())
                .collect();
            let form = if declines_later {
                "outcome=succeeded&renewal=fails"
            } else {
                "outcome=succeeded"
            };
            let paid: Value = self
                .http
                .post(format!("{}/checkout/{session_id}", self.dodo.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .expect("paid")
                .json()
                .await
                .expect("JSON");
            let newest = self
                .dodo
                .simulator
                .subscriptions()
                .into_iter()
                .find(|s| !before.contains(&s["subscription_id"]))
                .expect("a new subscription");
            let id = newest["subscription_id"].as_str().expect("id").to_owned();
            if trial.is_some() {
                assert_eq!(
                    paid["subscription_id"],
                    id.as_str(),
                    "a trial has no payment"
                );
            }
            id
        }

        /// Moves the clock to `to` (s), running everything due on the way.
        async fn advance_to(&self, to: i64) {
            loop {
                let next = self
                    .dodo
                    .simulator
                    .next_due_millis()
                    .filter(|ms| *ms <= to * 1000);
                match next {
                    Some(ms) => {
                        if ms > self.clock.now_millis() {
                            self.clock.advance_to(ms).expect("forward");
                        }
                        self.dodo.simulator.run_next_due().await;
                    }
                    None => break,
                }
            }
            self.clock.advance_to(to * 1000).expect("forward");
        }

        fn subscription(&self, id: &str) -> Value {
            self.dodo.simulator.subscription(id).expect("subscription")
        }

        fn payment(&self, id: &str) -> Value {
            self.dodo.simulator.payment(id).expect("payment")
        }

        /// The events about `subscription` (its own, and its payments'), in order.
        fn events_of(&self, subscription: &str) -> Vec<(String, Value)> {
            self.events
                .lock()
                .expect("lock")
                .iter()
                .filter(|(_, data)| data["subscription_id"] == subscription)
                .cloned()
                .collect()
        }

        fn kinds_of(&self, subscription: &str) -> Vec<String> {
            self.events_of(subscription)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        }

        async fn change(&self, id: &str, body: Value) -> (u16, Value) {
            self.call(
                reqwest::Method::POST,
                &format!("/subscriptions/{id}/change-plan"),
                Some(body),
            )
            .await
        }

        async fn preview(&self, id: &str, body: Value) -> (u16, Value) {
            self.call(
                reqwest::Method::POST,
                &format!("/subscriptions/{id}/change-plan/preview"),
                Some(body),
            )
            .await
        }
    }

    fn to_plan(product: &str, mode: &str) -> Value {
        json!({"product_id": product, "quantity": 1, "proration_billing_mode": mode})
    }

    #[tokio::test]
    async fn products_cost_their_catalogue_price() {
        let w = world().await;
        let (_, product) = w
            .call(reqwest::Method::GET, &format!("/products/{PRO}"), None)
            .await;
        assert_eq!(product["price"]["price"], 4900);
        let (_, product) = w
            .call(reqwest::Method::GET, "/products/pdt_unpriced", None)
            .await;
        assert_eq!(product["price"]["price"], 1900, "the default");
        let id = w.buy(PRO, None, false).await;
        let subscription = w.subscription(&id);
        assert_eq!(subscription["recurring_pre_tax_amount"], 4900);
        let first = &w.events_of(&id)[1].1;
        assert_eq!(first["total_amount"], 4900);
        // The renewal charges the product's price too.
        w.advance_to(at("2027-05-01T00:00:00Z")).await;
        let renewed = w.events_of(&id);
        assert_eq!(renewed[2].0, "payment.succeeded");
        assert_eq!(renewed[2].1["total_amount"], 4900);
    }

    #[tokio::test]
    async fn a_trial_is_free_until_its_end_then_charged_or_put_on_hold() {
        let w = world().await;
        let (status, _) = w
            .call(
                reqwest::Method::POST,
                "/checkouts",
                Some(json!({
                    "product_cart": [{"product_id": BASIC, "quantity": 1}],
                    "subscription_data": {"trial_period_days": 10_001},
                })),
            )
            .await;
        assert_eq!(status, 422, "Dodo's bound is 10000 days");

        let paying = w.buy(BASIC, Some(14), false).await;
        let declining = w.buy(BASIC, Some(14), true).await;
        let trial_end = at(START) + 14 * SECONDS_PER_DAY;
        for id in [&paying, &declining] {
            let subscription = w.subscription(id);
            assert_eq!(subscription["status"], "active");
            assert_eq!(subscription["trial_period_days"], 14);
            assert_eq!(subscription["trial_amount"], Value::Null);
            assert_eq!(
                subscription["next_billing_date"],
                Timestamp::from_unix_seconds(trial_end).to_rfc3339()
            );
            assert_eq!(
                w.kinds_of(id),
                ["subscription.active"],
                "no charge at the start"
            );
        }
        assert!(w.dodo.simulator.payments().is_empty());

        w.advance_to(trial_end - 1).await;
        assert!(
            w.dodo.simulator.payments().is_empty(),
            "nothing before the end"
        );
        w.advance_to(trial_end).await;
        assert_eq!(
            w.kinds_of(&paying),
            [
                "subscription.active",
                "payment.succeeded",
                "subscription.renewed"
            ]
        );
        let charge = &w.events_of(&paying)[1].1;
        assert_eq!(charge["total_amount"], 1900);
        assert_eq!(
            charge["service_periods"][0]["starts_at"],
            Timestamp::from_unix_seconds(trial_end).to_rfc3339()
        );
        assert_eq!(
            w.subscription(&paying)["next_billing_date"],
            Timestamp::from_unix_seconds(paywall::time::add_months(trial_end, 1)).to_rfc3339()
        );
        assert_eq!(
            w.kinds_of(&declining),
            [
                "subscription.active",
                "payment.failed",
                "subscription.on_hold"
            ]
        );
        assert_eq!(w.subscription(&declining)["status"], "on_hold");
    }

    /// $19 → $49 halfway through a 30-day period, in each mode: preview, then the charge.
    #[tokio::test]
    async fn each_proration_mode_charges_dodos_arithmetic() {
        let w = world().await;
        let cases = [
            // (mode, charge, next billing date after the change)
            ("prorated_immediately", 1500, "2027-05-01T00:00:00Z"),
            (
                "prorated_immediately_keep_cycle",
                1500,
                "2027-05-01T00:00:00Z",
            ),
            ("difference_immediately", 3000, "2027-05-01T00:00:00Z"),
            ("full_immediately", 4900, "2027-05-16T00:00:00Z"),
            ("do_not_bill", 0, "2027-05-01T00:00:00Z"),
        ];
        let mut ids = Vec::new();
        for _ in cases {
            ids.push(w.buy(BASIC, None, false).await);
        }
        w.advance_to(at("2027-04-16T00:00:00Z")).await;
        for ((mode, charge, next), id) in cases.iter().zip(&ids) {
            let (status, preview) = w.preview(id, to_plan(PRO, mode)).await;
            assert_eq!(status, 200, "{mode}: {preview}");
            assert_eq!(
                preview["immediate_charge"]["summary"]["total_amount"], *charge,
                "{mode}"
            );
            assert_eq!(preview["new_plan"]["product_id"], PRO);
            assert_eq!(
                w.subscription(id)["product_id"],
                BASIC,
                "a preview changes nothing"
            );

            let (status, answer) = w.change(id, to_plan(PRO, mode)).await;
            assert_eq!(status, 200, "{mode}: {answer}");
            let subscription = w.subscription(id);
            assert_eq!(subscription["product_id"], PRO, "{mode}");
            assert_eq!(subscription["recurring_pre_tax_amount"], 4900);
            assert_eq!(subscription["next_billing_date"], *next, "{mode}");
            let kinds = w.kinds_of(id);
            if *charge == 0 {
                assert_eq!(answer["payment_id"], Value::Null, "{mode}: no payment");
                assert_eq!(kinds[2..], ["subscription.plan_changed"], "{mode}");
            } else {
                let payment = w.payment(answer["payment_id"].as_str().expect("payment"));
                assert_eq!(payment["total_amount"], *charge, "{mode}: preview = charge");
                assert_eq!(payment["charge_type"], "plan_change");
                assert_eq!(
                    kinds[2..],
                    ["payment.succeeded", "subscription.plan_changed"],
                    "{mode}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_prorated_downgrade_is_a_credit_spent_at_the_renewal() {
        let w = world().await;
        let id = w.buy(PRO, None, false).await;
        w.advance_to(at("2027-04-16T00:00:00Z")).await;
        let (_, preview) = w.preview(&id, to_plan(BASIC, "prorated_immediately")).await;
        let summary = &preview["immediate_charge"]["summary"];
        assert_eq!(summary["total_amount"], 0);
        assert_eq!(
            summary["customer_credits"], 1500,
            "($49 - $19) / 2, credited"
        );
        let (status, answer) = w.change(&id, to_plan(BASIC, "prorated_immediately")).await;
        assert_eq!(status, 200);
        assert_eq!(answer["payment_id"], Value::Null, "no refund, no payment");
        w.advance_to(at("2027-05-01T00:00:00Z")).await;
        let events = w.events_of(&id);
        let renewal = &events[events.len() - 2];
        assert_eq!(renewal.0, "payment.succeeded");
        assert_eq!(renewal.1["total_amount"], 400, "$19 less the $15 credit");
    }

    #[tokio::test]
    async fn a_scheduled_downgrade_applies_at_the_renewal_at_the_new_price() {
        let w = world().await;
        let id = w.buy(PRO, None, false).await;
        let kept = w.buy(PRO, None, false).await;
        w.advance_to(at("2027-04-16T00:00:00Z")).await;
        let scheduled = json!({
            "product_id": BASIC, "quantity": 1,
            "proration_billing_mode": "prorated_immediately",
            "effective_at": "next_billing_date",
        });
        let (_, preview) = w.preview(&id, scheduled.clone()).await;
        assert_eq!(
            preview["immediate_charge"]["effective_at"],
            "2027-05-01T00:00:00Z"
        );
        assert_eq!(preview["immediate_charge"]["summary"]["total_amount"], 1900);
        for sub in [&id, &kept] {
            let (status, answer) = w.change(sub, scheduled.clone()).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["payment_id"], Value::Null);
        }
        let subscription = w.subscription(&id);
        assert_eq!(subscription["product_id"], PRO, "not yet");
        let change = &subscription["scheduled_change"];
        assert_eq!(change["product_id"], BASIC);
        assert_eq!(change["effective_at"], "2027-05-01T00:00:00Z");
        assert_eq!(change["addons"], json!([]));
        let (status, _) = w.change(&id, scheduled.clone()).await;
        assert_eq!(status, 409, "one schedule at a time");
        let mut replacing = scheduled.clone();
        replacing["cancel_scheduled_change_plan"] = json!(true);
        let (status, _) = w.change(&id, replacing).await;
        assert_eq!(status, 200, "unless it replaces the first");

        // The other one's schedule is cancelled: it renews on its plan.
        let path = format!("/subscriptions/{kept}/change-plan/scheduled");
        let answer = w
            .http
            .delete(format!("{}{path}", w.dodo.url))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), 204);
        assert_eq!(w.subscription(&kept)["scheduled_change"], Value::Null);
        let (status, _) = w.call(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(status, 404, "nothing left to cancel");

        w.advance_to(at("2027-05-01T00:00:00Z") - 1).await;
        assert_eq!(w.subscription(&id)["product_id"], PRO, "not a second early");
        w.advance_to(at("2027-05-01T00:00:00Z")).await;
        let subscription = w.subscription(&id);
        assert_eq!(subscription["product_id"], BASIC);
        assert_eq!(subscription["recurring_pre_tax_amount"], 1900);
        assert_eq!(subscription["scheduled_change"], Value::Null);
        let events = w.events_of(&id);
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds[kinds.len() - 3..],
            [
                "payment.succeeded",
                "subscription.plan_changed",
                "subscription.renewed"
            ]
        );
        assert_eq!(
            events[events.len() - 3].1["total_amount"],
            1900,
            "the new price"
        );
        let kept_events = w.events_of(&kept);
        let renewal = &kept_events[kept_events.len() - 2];
        assert_eq!(
            renewal.1["total_amount"], 4900,
            "the cancelled schedule charges nothing new"
        );
        assert_eq!(w.subscription(&kept)["product_id"], PRO);
    }

    #[tokio::test]
    async fn a_declined_upgrade_keeps_or_changes_the_plan_as_asked() {
        let w = world().await;
        let prevented = w.buy(BASIC, None, true).await;
        let applied = w.buy(BASIC, None, true).await;
        w.advance_to(at("2027-04-16T00:00:00Z")).await;
        let mut body = to_plan(PRO, "prorated_immediately");
        body["on_payment_failure"] = json!("prevent_change");
        let (status, answer) = w.change(&prevented, body).await;
        assert_eq!(status, 200);
        let payment = w.payment(answer["payment_id"].as_str().expect("a payment"));
        assert_eq!(payment["status"], "failed");
        assert_eq!(payment["total_amount"], 1500);
        let subscription = w.subscription(&prevented);
        assert_eq!(
            subscription["product_id"], BASIC,
            "prevent_change: the plan stays"
        );
        assert_eq!(subscription["status"], "active");
        assert_eq!(w.kinds_of(&prevented)[2..], ["payment.failed"]);

        let mut body = to_plan(PRO, "prorated_immediately");
        body["on_payment_failure"] = json!("apply_change");
        let (status, _) = w.change(&applied, body).await;
        assert_eq!(status, 200);
        let subscription = w.subscription(&applied);
        assert_eq!(
            subscription["product_id"], PRO,
            "apply_change: changed anyway"
        );
        assert_eq!(subscription["status"], "on_hold");
        assert_eq!(
            w.kinds_of(&applied)[2..],
            [
                "payment.failed",
                "subscription.plan_changed",
                "subscription.on_hold"
            ]
        );
        let (status, _) = w.change(&applied, to_plan(BASIC, "do_not_bill")).await;
        assert_eq!(status, 422, "an on-hold subscription cannot change plan");
    }

    #[tokio::test]
    async fn bad_changes_are_refused_as_dodo_would() {
        let w = world().await;
        let id = w.buy(BASIC, None, false).await;
        let (status, _) = w.change(&id, to_plan(BASIC, "prorated_immediately")).await;
        assert_eq!(status, 422, "the same plan");
        let (status, _) = w
            .change(&id, to_plan("pdt_unknown", "prorated_immediately"))
            .await;
        assert_eq!(status, 422, "not a subscription product");
        let (status, _) = w
            .change("sub_missing", to_plan(PRO, "prorated_immediately"))
            .await;
        assert_eq!(status, 404);
        let (status, _) = w
            .change(&id, json!({"product_id": PRO, "quantity": 1}))
            .await;
        assert_eq!(status, 422, "proration_billing_mode is required");
        let (status, _) = w.change(&id, to_plan(PRO, "sometimes")).await;
        assert_eq!(status, 422);
        assert_eq!(w.kinds_of(&id).len(), 2, "nothing happened");
    }

    #[tokio::test]
    async fn cancel_and_resume_at_period_end_are_idempotent() {
        let w = world().await;
        let id = w.buy(BASIC, None, false).await;
        let path = format!("/subscriptions/{id}");
        for (cancel, events) in [(true, 3), (true, 3), (false, 4), (false, 4)] {
            let (status, answer) = w
                .call(
                    reqwest::Method::PATCH,
                    &path,
                    Some(json!({"cancel_at_next_billing_date": cancel})),
                )
                .await;
            assert_eq!(status, 200);
            assert_eq!(answer["cancel_at_next_billing_date"], cancel);
            assert_eq!(w.kinds_of(&id).len(), events, "cancel = {cancel}");
        }
        let kinds = w.kinds_of(&id);
        assert_eq!(kinds[2..], ["subscription.updated", "subscription.updated"]);
        w.advance_to(at("2027-05-01T00:00:00Z")).await;
        assert_eq!(
            w.subscription(&id)["status"],
            "active",
            "resumed: it renews"
        );
        assert_eq!(
            w.kinds_of(&id).last().map(String::as_str),
            Some("subscription.renewed")
        );

        // Cancelled at the period's end, it cannot be resumed after.
        w.call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"cancel_at_next_billing_date": true})),
        )
        .await;
        w.advance_to(at("2027-06-01T00:00:00Z")).await;
        assert_eq!(w.subscription(&id)["status"], "cancelled");
        let (status, _) = w
            .call(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"cancel_at_next_billing_date": false})),
            )
            .await;
        assert_eq!(status, 422);
    }
}
