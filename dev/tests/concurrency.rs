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
