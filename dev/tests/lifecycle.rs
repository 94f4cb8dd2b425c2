//! Order and duplicates cannot corrupt state: realistic sequences of Dodo events (buy,
//! renew, fail, recover, cancel; refund; dispute lost then won) are delivered in every
//! permutation, with a duplicate, and every run must end in the state of the run that
//! received them in order — the state Dodo reports.

mod common;

use common::*;
use lambda_http::http::StatusCode;
use paywall::access::AccessView;
use paywall::handlers::WebhookHandler;
use paywall::ids::UserId;
use paywall::time::{SECONDS_PER_DAY, Timestamp};
use serde_json::{Value, json};

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn extend(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == n {
            out.push(prefix.clone());
            return;
        }
        for i in 0..n {
            if !prefix.contains(&i) {
                prefix.push(i);
                extend(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::new(), n, &mut out);
    out
}

fn iso(seconds: i64) -> String {
    Timestamp::from_unix_seconds(seconds).to_rfc3339()
}

fn envelope(event_type: &str, occurred_ms: i64, data: Value) -> String {
    let occurred = format!(
        "{}.{:03}Z",
        iso(occurred_ms / 1000).trim_end_matches('Z'),
        occurred_ms % 1000
    );
    json!({"business_id": "bus_1", "type": event_type, "timestamp": occurred, "data": data})
        .to_string()
}

struct Runner {
    webhook: WebhookHandler,
    world: World,
    now: Timestamp,
}

impl Runner {
    async fn new() -> Self {
        let world = World::new().await;
        let webhook = WebhookHandler::new(
            world.store_as("webhook"),
            secret(),
            catalog_with_subscription(),
        );
        Self {
            webhook,
            world,
            now: paywall::time::Clock::system().now(),
        }
    }

    async fn deliver(&self, body: &str, delivery: usize) {
        let request = signed_webhook(body, &format!("msg_{delivery}"), self.now.unix_seconds());
        let (status, answer) = read(
            self.webhook
                .respond(&request, self.now)
                .await
                .unwrap_or_else(|e| e.into_response()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    }

    /// Delivers `events` in `order`, then the first of them once more (a duplicate), and
    /// returns the user's view with the per-run ids left out.
    async fn run(&self, user: &str, events: &[String], order: &[usize]) -> Value {
        for (delivery, index) in order.iter().chain(order.first()).enumerate() {
            self.deliver(&events[*index], delivery).await;
        }
        let account = self
            .world
            .store
            .get_account(&UserId::parse(user).expect("valid"))
            .await
            .expect("read");
        let mut view = serde_json::to_value(AccessView::of(
            &account,
            &catalog_with_subscription(),
            self.now,
        ))
        .expect("json");
        let object = view.as_object_mut().expect("object");
        let had_subscription = object
            .remove("subscription_id")
            .is_some_and(|v| !v.is_null());
        object.remove("dodo_payment_id");
        object.insert("had_subscription".into(), json!(had_subscription));
        view
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_lifecycle_ends_the_same_in_every_order() {
    let runner = Runner::new().await;
    let now = runner.now.unix_seconds();
    let day = SECONDS_PER_DAY;
    let t0 = now * 1000 - 60_000;
    let events = |run: usize| -> Vec<String> {
        let user = format!("sub-user-{run}");
        let sub = format!("sub_{run}");
        let state = |status: &str, next: i64, grace: Option<i64>, cancel: bool| {
            json!({
                "payload_type": "Subscription", "subscription_id": sub, "status": status,
                "product_id": PRO, "quantity": 1, "next_billing_date": iso(next),
                "previous_billing_date": iso(now - day), "past_due_ends_at": grace.map(iso),
                "cancel_at_next_billing_date": cancel, "metadata": {"user_id": user, "plan": "pro"},
                "customer": {"customer_id": format!("cus_{run}"), "email": format!("{user}@example.com")},
                "recurring_pre_tax_amount": 2900, "currency": "USD",
            })
        };
        vec![
            envelope(
                "subscription.active",
                t0,
                state("active", now + 10 * day, None, false),
            ),
            envelope(
                "subscription.renewed",
                t0 + 1_000,
                state("active", now + 40 * day, None, false),
            ),
            envelope(
                "subscription.past_due",
                t0 + 2_000,
                state("past_due", now + 40 * day, Some(now + 43 * day), false),
            ),
            envelope(
                "subscription.active",
                t0 + 3_000,
                state("active", now + 70 * day, None, false),
            ),
            envelope(
                "subscription.cancelled",
                t0 + 3_500,
                state("cancelled", now + 70 * day, None, true),
            ),
            // The subscription's own payment: it must not grant days on top.
            envelope(
                "payment.succeeded",
                t0 + 1_000,
                json!({
                    "payload_type": "Payment", "payment_id": format!("pay_sub_{run}"), "status": "succeeded",
                    "subscription_id": sub, "metadata": {"user_id": user, "plan": "pro"},
                    "customer": {"customer_id": format!("cus_{run}"), "email": format!("{user}@example.com")},
                    // As Dodo sends a subscription's payments: no product_cart.
                    "total_amount": 2900, "currency": "USD",
                }),
            ),
        ]
    };

    let expected = runner
        .run("sub-user-0", &events(0), &[0, 1, 2, 3, 4, 5])
        .await;
    assert_eq!(expected["status"], "cancelled", "{expected}");
    assert_eq!(expected["has_paid"], true);
    assert_eq!(expected["cancel_at_period_end"], true);
    assert_eq!(expected["plan"], "pro");
    assert_eq!(expected["plan_expires_at"], iso(now + 70 * day));
    // W3: a subscriber's payment_date is their subscription's last successful payment.
    assert!(expected["payment_date"].is_string(), "{expected}");

    for (run, order) in permutations(6).into_iter().enumerate().skip(1) {
        let user = format!("sub-user-{run}");
        let got = runner.run(&user, &events(run), &order).await;
        assert_eq!(got, expected, "order {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refunded_pass_ends_refunded_in_every_order() {
    let runner = Runner::new().await;
    let t0 = runner.now.unix_seconds() * 1000 - 60_000;
    let events = |run: usize| -> Vec<String> {
        let payment = format!("pay_refund_{run}");
        vec![
            envelope(
                "payment.succeeded",
                t0,
                json!({
                    "payload_type": "Payment", "payment_id": payment, "status": "succeeded",
                    "metadata": {"user_id": format!("refund-user-{run}"), "plan": "monthly"},
                    "product_cart": [{"product_id": PRODUCT, "quantity": 1}], "total_amount": 1900,
                }),
            ),
            envelope(
                "refund.succeeded",
                t0 + 1_000,
                json!({"payload_type": "Refund", "refund_id": format!("ref_{run}"), "payment_id": payment,
                       "is_partial": true, "amount": 100, "status": "succeeded"}),
            ),
            envelope(
                "refund.succeeded",
                t0 + 2_000,
                json!({"payload_type": "Refund", "refund_id": format!("ref_full_{run}"), "payment_id": payment,
                       "is_partial": false, "amount": 1800, "status": "succeeded"}),
            ),
        ]
    };
    let expected = runner.run("refund-user-0", &events(0), &[0, 1, 2]).await;
    assert_eq!(expected["has_paid"], false, "{expected}");
    assert_eq!(expected["status"], "refunded");
    for (run, order) in permutations(3).into_iter().enumerate().skip(1) {
        let got = runner
            .run(&format!("refund-user-{run}"), &events(run), &order)
            .await;
        assert_eq!(got, expected, "order {order:?}");
    }

    // A partial refund alone takes nothing back.
    let partial_only = events(99);
    let got = runner.run("refund-user-99", &partial_only, &[1, 0]).await;
    assert_eq!(got["has_paid"], true, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_lost_then_won_ends_restored_in_every_order() {
    let runner = Runner::new().await;
    let t0 = runner.now.unix_seconds() * 1000 - 60_000;
    let events = |run: usize, last: &str| -> Vec<String> {
        let payment = format!("pay_dispute_{run}");
        let dispute = |event_type: &str, status: &str, at: i64| {
            envelope(
                event_type,
                at,
                json!({"payload_type": "Dispute", "dispute_id": format!("dsp_{run}"), "payment_id": payment,
                       "dispute_status": status, "dispute_stage": "dispute", "amount": "1900", "currency": "USD"}),
            )
        };
        vec![
            envelope(
                "payment.succeeded",
                t0,
                json!({
                    "payload_type": "Payment", "payment_id": payment, "status": "succeeded",
                    "metadata": {"user_id": format!("dispute-user-{run}"), "plan": "monthly"},
                    "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
                }),
            ),
            dispute("dispute.opened", "dispute_opened", t0 + 1_000),
            dispute("dispute.lost", "dispute_lost", t0 + 2_000),
            dispute(
                &format!("dispute.{last}"),
                &format!("dispute_{last}"),
                t0 + 3_000,
            ),
        ]
    };
    let won = runner
        .run("dispute-user-0", &events(0, "won"), &[0, 1, 2, 3])
        .await;
    assert_eq!(won["has_paid"], true, "{won}");
    assert_eq!(won["status"], "active");
    assert_eq!(
        won["plan_expires_at"],
        runner.now.plus_days(30).to_rfc3339()
    );
    for (run, order) in permutations(4).into_iter().enumerate().skip(1) {
        let got = runner
            .run(&format!("dispute-user-{run}"), &events(run, "won"), &order)
            .await;
        assert_eq!(got, won, "order {order:?}");
    }

    // Lost for good (accepted by the merchant last): revoked in every order.
    let lost = runner
        .run("dispute-user-100", &events(100, "accepted"), &[0, 1, 2, 3])
        .await;
    assert_eq!(lost["has_paid"], false, "{lost}");
    assert_eq!(lost["status"], "refunded");
    for (run, order) in permutations(4).into_iter().enumerate().skip(1) {
        let got = runner
            .run(
                &format!("dispute-user-{}", 100 + run),
                &events(100 + run, "accepted"),
                &order,
            )
            .await;
        assert_eq!(got, lost, "order {order:?}");
    }
}

#[tokio::test]
async fn a_second_subscription_is_refused_while_one_runs_and_its_payment_confirms_by_state() {
    use paywall::config::CheckoutConfig;
    use paywall::handlers::{CreateCheckoutHandler, SuccessHandler};
    use paywall::runtime::Handler;

    let runner = Runner::new().await;
    let world = &runner.world;
    let now = runner.now.unix_seconds();
    let user = "subscriber";
    let subscription = json!({
        "subscription_id": "sub_live", "status": "active", "product_id": PRO,
        "next_billing_date": iso(now + 30 * SECONDS_PER_DAY), "cancel_at_next_billing_date": false,
        "metadata": {"user_id": user, "plan": "pro"},
        "customer": {"customer_id": "cus_sub", "email": "subscriber@example.com"},
    });
    world.sim().put_subscription(subscription);
    world.sim().put_payment(json!({
        "payment_id": "pay_sub_first", "status": "succeeded", "subscription_id": "sub_live",
        // As Dodo sends a subscription's payments: no product_cart.
        "metadata": {"user_id": user, "plan": "pro"},
        "customer": {"customer_id": "cus_sub", "email": "subscriber@example.com"},
    }));

    // The buyer returns before any webhook: the success call reads the subscription.
    returning_buyer(world, user).await;
    let success = SuccessHandler::new(
        world.store_as("success"),
        world.dodo_client(),
        catalog_with_subscription(),
    );
    let (status, body) = read(
        success
            .handle(api_event(
                "POST",
                "/payment/success",
                Some((user, None)),
                Some(r#"{"payment_id":"pay_sub_first"}"#),
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["has_paid"], true);
    assert_eq!(body["subscription_id"], "sub_live");
    // W3: the subscriber's last successful payment is named, though no pass was granted.
    assert!(body["payment_date"].is_string(), "{body}");
    assert_eq!(body["dodo_payment_id"], "pay_sub_first", "{body}");

    let checkout = CreateCheckoutHandler::new(
        world.store_as("create-checkout"),
        world.dodo_client(),
        catalog_with_subscription(),
        CheckoutConfig {
            success_url: SUCCESS_URL.to_owned(),
        },
    );
    let open = |plan: &str| {
        api_event(
            "POST",
            "/payment/create-checkout-session",
            Some((user, None)),
            Some(&json!({"plan": plan}).to_string()),
        )
    };
    let (status, body) = read(checkout.handle(open("pro")).await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_subscribed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("customer portal")
    );
    // A pass is still for sale.
    let (status, body) = read(checkout.handle(open("monthly")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A subscription's payments, as Dodo sends them: `payment.succeeded` with the
/// subscription and its product in the cart, at `created_ms`.
fn subscription_payment(payment: &str, sub: &str, user: &str, created_ms: i64) -> Value {
    json!({
        "payload_type": "Payment", "payment_id": payment, "status": "succeeded",
        "subscription_id": sub, "metadata": {"user_id": user, "plan": "pro"},
        "customer": {"customer_id": format!("cus_{user}"), "email": format!("{user}@example.com")},
        // As Dodo sends a subscription's payments: no product_cart.
        "created_at": format!("{}.{:03}Z", iso(created_ms / 1000).trim_end_matches('Z'), created_ms % 1000),
        "total_amount": 2900, "currency": "USD",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refund_of_a_subscriptions_latest_payment_ends_access_until_a_later_payment() {
    let runner = Runner::new().await;
    let now = runner.now.unix_seconds();
    let t0 = now * 1000 - 3_600_000;
    let events = |run: usize, renewed: bool| -> Vec<String> {
        let user = format!("refunded-sub-{run}");
        let sub = format!("sub_refund_{run}");
        let first = format!("pay_first_{run}");
        let mut events = vec![
            envelope(
                "subscription.active",
                t0,
                json!({
                    "payload_type": "Subscription", "subscription_id": sub, "status": "active",
                    "product_id": PRO, "next_billing_date": iso(now + 30 * SECONDS_PER_DAY),
                    "cancel_at_next_billing_date": false, "metadata": {"user_id": user, "plan": "pro"},
                }),
            ),
            envelope(
                "payment.succeeded",
                t0 + 10,
                subscription_payment(&first, &sub, &user, t0),
            ),
            envelope(
                "refund.succeeded",
                t0 + 60_000,
                json!({"payload_type": "Refund", "refund_id": format!("ref_{run}"), "payment_id": first,
                       "is_partial": false, "amount": 2900, "status": "succeeded"}),
            ),
        ];
        if renewed {
            events.push(envelope(
                "payment.succeeded",
                t0 + 120_000,
                subscription_payment(&format!("pay_later_{run}"), &sub, &user, t0 + 120_000),
            ));
        }
        events
    };
    // Refunded, nothing paid since: no access, in every order.
    let expected = runner
        .run("refunded-sub-0", &events(0, false), &[0, 1, 2])
        .await;
    assert_eq!(
        (expected["has_paid"].clone(), expected["status"].clone()),
        (json!(false), json!("refunded")),
        "{expected}"
    );
    for (run, order) in permutations(3).into_iter().enumerate().skip(1) {
        let user = format!("refunded-sub-{run}");
        let got = runner.run(&user, &events(run, false), &order).await;
        assert_eq!(got, expected, "order {order:?}");
    }
    // A later payment succeeds: access again, in every order.
    let expected = runner
        .run("refunded-sub-100", &events(100, true), &[0, 1, 2, 3])
        .await;
    assert_eq!(expected["has_paid"], true, "{expected}");
    for (run, order) in permutations(4).into_iter().enumerate().skip(1) {
        let user = format!("refunded-sub-{}", 100 + run);
        let got = runner.run(&user, &events(100 + run, true), &order).await;
        assert_eq!(got, expected, "order {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_dispute_on_a_subscription_payment_ends_its_access_at_once() {
    let runner = Runner::new().await;
    let now = runner.now.unix_seconds();
    let t0 = now * 1000 - 3_600_000;
    let events = |run: usize, won_later: bool| -> Vec<String> {
        let user = format!("disputed-sub-{run}");
        let sub = format!("sub_dispute_{run}");
        let payment = format!("pay_disputed_{run}");
        let dispute = |event_type: &str, status: &str, at: i64| {
            envelope(
                event_type,
                at,
                json!({"payload_type": "Dispute", "dispute_id": format!("dsp_{run}"), "payment_id": payment,
                       "dispute_status": status, "dispute_stage": "dispute", "amount": "2900", "currency": "USD"}),
            )
        };
        let mut events = vec![
            envelope(
                "subscription.active",
                t0,
                json!({
                    "payload_type": "Subscription", "subscription_id": sub, "status": "active",
                    "product_id": PRO, "next_billing_date": iso(now + 30 * SECONDS_PER_DAY),
                    "cancel_at_next_billing_date": false, "metadata": {"user_id": user, "plan": "pro"},
                }),
            ),
            envelope(
                "payment.succeeded",
                t0 + 10,
                subscription_payment(&payment, &sub, &user, t0),
            ),
            dispute("dispute.lost", "dispute_lost", t0 + 60_000),
        ];
        if won_later {
            events.push(dispute("dispute.won", "dispute_won", t0 + 120_000));
        }
        events
    };
    let expected = runner
        .run("disputed-sub-0", &events(0, false), &[0, 1, 2])
        .await;
    assert_eq!(
        (expected["has_paid"].clone(), expected["status"].clone()),
        (json!(false), json!("refunded")),
        "{expected}"
    );
    for (run, order) in permutations(3).into_iter().enumerate().skip(1) {
        let user = format!("disputed-sub-{run}");
        let got = runner.run(&user, &events(run, false), &order).await;
        assert_eq!(got, expected, "order {order:?}");
    }
    let expected = runner
        .run("disputed-sub-100", &events(100, true), &[0, 1, 2, 3])
        .await;
    assert_eq!(expected["has_paid"], true, "won after all: {expected}");
    for (run, order) in permutations(4).into_iter().enumerate().skip(1) {
        let user = format!("disputed-sub-{}", 100 + run);
        let got = runner.run(&user, &events(100 + run, true), &order).await;
        assert_eq!(got, expected, "order {order:?}");
    }
}
