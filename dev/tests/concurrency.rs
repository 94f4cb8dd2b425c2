//! One payment delivered 20 times at once, through the webhook and the success call
//! together, grants exactly once.

mod common;

use std::sync::Arc;

use common::*;
use lambda_http::http::StatusCode;
use paywall::ids::UserId;
use paywall::runtime::Handler;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_grant_once() {
    let world = World::new().await;
    let session = world.open_checkout("user-alice", "alice@example.com").await;
    let payment = world.dodo_payment("pay_race", "succeeded", Some("user-alice"), Some(&session));
    let event = payment_event("payment.succeeded", &payment);
    let webhook = Arc::new(world.webhook());
    let success = Arc::new(world.success());
    let before = paywall::time::Clock::system().now();

    let mut tasks = Vec::new();
    for i in 0..20 {
        // Nine success calls (with the checkout, the ten a minute one user may make).
        if i % 2 == 0 || i == 19 {
            let webhook = Arc::clone(&webhook);
            let event = event.clone();
            tasks.push(tokio::spawn(async move {
                let now = paywall::time::Clock::system().now().unix_seconds();
                // Dodo's retries reuse the id; distinct ids stand for distinct deliveries.
                let id = format!("msg_{}", i % 4);
                let (status, body) =
                    read(webhook.handle(signed_webhook(&event, &id, now)).await).await;
                (
                    status,
                    body["outcome"].as_str().unwrap_or_default().to_owned(),
                )
            }));
        } else {
            let success = Arc::clone(&success);
            tasks.push(tokio::spawn(async move {
                let body = json!({"payment_id": "pay_race"}).to_string();
                let request = api_event(
                    "POST",
                    "/payment/success",
                    Some(("user-alice", None)),
                    Some(&body),
                );
                let (status, body) = read(success.handle(request).await).await;
                (
                    status,
                    body["status"].as_str().unwrap_or_default().to_owned(),
                )
            }));
        }
    }
    let mut granted_by_webhook = 0;
    for task in tasks {
        let (status, outcome) = task.await.expect("joined");
        assert_eq!(status, StatusCode::OK, "{outcome}");
        if outcome == "granted" {
            granted_by_webhook += 1;
        }
    }
    assert!(granted_by_webhook <= 1);

    let record = world
        .store
        .get_user(&UserId::parse("user-alice").expect("valid"))
        .await
        .expect("read")
        .expect("exists");
    // Exactly one 30-day grant, and exactly one applied write after the checkout.
    let until = record.paid_until.expect("paid");
    assert!(
        until >= before.plus_days(30)
            && until <= paywall::time::Clock::system().now().plus_days(30),
        "{until:?}"
    );
    assert_eq!(record.version, 1);
    let grant = world
        .store
        .payment_grant("pay_race")
        .await
        .expect("read")
        .expect("marked");
    assert_eq!(grant.granted_until, until);
}

/// Issue 17, L9: a subscription going on hold and a pass bought at the same moment, for
/// many users at once. Whichever commits second must see the other (every access-changing
/// write is conditioned on the user's access revision), so the events always reach the
/// final state: some event says the pass now speaks. Before, the pass's writer judged
/// "no change" from a snapshot that still had the subscription, and the last event said
/// `on_hold` with nothing after it while the user had a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_of_one_users_access_end_with_an_event_that_tells_the_truth() {
    let world = World::new().await;
    let catalog = catalog_with_subscription();
    let webhook = Arc::new(paywall::handlers::WebhookHandler::new(
        world.store_as("webhook"),
        secret(),
        catalog.clone(),
    ));
    let now = paywall::time::Clock::system().now();
    let at = |ms: i64| {
        paywall::time::Timestamp::from_unix_seconds(now.unix_seconds() - 60 + ms / 1000)
            .to_rfc3339()
    };
    let subscription = |user: &str, status: &str, stamp: i64| {
        json!({"business_id": "bus_1", "type": format!("subscription.{status}"), "timestamp": at(stamp),
               "data": {"subscription_id": format!("sub_{user}"), "status": status, "product_id": PRO,
                        "next_billing_date": now.plus_days(10).to_rfc3339(),
                        "cancel_at_next_billing_date": false,
                        "metadata": {"user_id": user, "plan": "pro"}}})
        .to_string()
    };
    let rounds = 6;
    let users: Vec<String> = (0..12 * rounds).map(|i| format!("racer-{i}")).collect();
    for user in &users {
        let now_s = paywall::time::Clock::system().now().unix_seconds();
        let (status, body) = read(
            webhook
                .handle(signed_webhook(
                    &subscription(user, "active", 0),
                    &format!("msg_a_{user}"),
                    now_s,
                ))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Rounds of twelve racing users: the race is a matter of timing, and a dozen at a
    // time meet it most often (before the fix about one round in three lost it).
    for round in users.chunks(12) {
        let mut tasks = Vec::new();
        for user in round {
            let on_hold = subscription(user, "on_hold", 2_000);
            let pass =
                json!({"business_id": "bus_1", "type": "payment.succeeded", "timestamp": at(2_000),
            "data": {"payment_id": format!("pay_{}", user.replace('-', "_")), "status": "succeeded",
                     "metadata": {"user_id": user},
                     "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
                     "total_amount": 1900, "currency": "USD"}})
                .to_string();
            for (body, id) in [
                (on_hold, format!("msg_h_{user}")),
                (pass, format!("msg_p_{user}")),
            ] {
                let webhook = Arc::clone(&webhook);
                tasks.push(tokio::spawn(async move {
                    let now_s = paywall::time::Clock::system().now().unix_seconds();
                    read(webhook.handle(signed_webhook(&body, &id, now_s)).await).await
                }));
            }
        }
        for task in tasks {
            let (status, body) = task.await.expect("joined");
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let events = world.store.all_access_events().await.expect("events");
    for user in &users {
        let account = world
            .store
            .get_account(&UserId::parse(user).expect("valid"))
            .await
            .expect("read");
        let now = paywall::time::Clock::system().now();
        let standing = paywall::entitlements::Entitlements::of(&account, &catalog, now);
        assert_eq!(
            standing.plan.as_deref(),
            Some("monthly"),
            "{user}: the pass speaks"
        );
        let told: Vec<serde_json::Value> = events
            .iter()
            .filter(|e| e.user.as_str() == user)
            .filter_map(|e| serde_json::from_str(&e.detail).ok())
            .collect();
        assert!(
            told.iter().any(|d| d["after"]["plan"] == "monthly"),
            "{user}: no event reached the final state: {told:?}"
        );
    }
}
