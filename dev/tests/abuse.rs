//! Abuse is bounded: one signed-up user cannot spend the merchant's Dodo rate limit. At
//! most ten calls a minute per user reach the routes that call Dodo (create-checkout,
//! success, portal); beyond that a JSON 429 with Retry-After, and no Dodo call. The count
//! lives in DynamoDB, so it holds across Lambda instances (here: separate handlers).

mod common;

use std::sync::Arc;

use common::*;
use lambda_http::http::StatusCode;
use lambda_http::http::header::RETRY_AFTER;
use paywall::handlers::PortalHandler;
use paywall::runtime::Handler;

#[tokio::test]
async fn a_burst_of_one_users_calls_is_cut_at_ten_a_minute_without_calling_dodo() {
    let world = World::new().await;
    // Still processing: each success call asks Dodo and answers 202, granting nothing.
    world.dodo_payment("pay_burst", "processing", Some("burster"), None);
    // The checkout the buyer returns from (opened two hours ago, so not handed out again).
    let two_hours_ago = paywall::time::Clock::system().now().plus_seconds(-2 * 3600);
    world
        .store
        .record_checkout(
            &paywall::ids::UserId::parse("burster").expect("valid"),
            None,
            &paywall::store::PendingCheckout {
                session_id: "cks_burst".into(),
                plan: "monthly".into(),
                created_at: two_hours_ago,
                checkout_url: None,
            },
        )
        .await
        .expect("recorded");
    // Three "instances" of each function, as Lambda would run them side by side.
    let checkouts: Vec<_> = (0..3).map(|_| Arc::new(world.create_checkout())).collect();
    let successes: Vec<_> = (0..3).map(|_| Arc::new(world.success())).collect();
    let mut calls = Vec::new();
    for i in 0..16 {
        let checkout = Arc::clone(&checkouts[i % 3]);
        let success = Arc::clone(&successes[i % 3]);
        calls.push(tokio::spawn(async move {
            let response = if i % 2 == 0 {
                checkout
                    .handle(api_event(
                        "POST",
                        "/payment/create-checkout-session",
                        Some(("burster", Some("burster@example.com"))),
                        None,
                    ))
                    .await
            } else {
                success
                    .handle(api_event(
                        "POST",
                        "/payment/success",
                        Some(("burster", None)),
                        Some(r#"{"payment_id":"pay_burst"}"#),
                    ))
                    .await
            };
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (status, body) = read(response).await;
            (i % 2 == 1, status, body, retry_after)
        }));
    }
    let dodo_calls_before = world.sim().api_calls().len();
    let mut allowed = 0;
    let mut limited = 0;
    let mut successes_allowed = 0;
    for call in calls {
        let (is_success, status, body, retry_after) = call.await.expect("joined");
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            let seconds: u64 = retry_after
                .expect("Retry-After")
                .parse()
                .expect("whole seconds");
            assert!((1..=60).contains(&seconds));
        } else {
            let expected = if is_success {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            assert_eq!(status, expected, "{body}");
            allowed += 1;
            successes_allowed += usize::from(is_success);
        }
    }
    assert_eq!((allowed, limited), (10, 6));
    // The Dodo calls made are those of the ten allowed calls only: one customer, one
    // checkout (the others were handed the same open session), one payment look-up each.
    let dodo_calls = world.sim().api_calls();
    let count = |prefix: &str| dodo_calls.iter().filter(|c| c.starts_with(prefix)).count();
    assert!(dodo_calls_before <= dodo_calls.len());
    assert_eq!(count("POST /checkouts"), 1, "{dodo_calls:?}");
    assert_eq!(count("GET /payments/"), successes_allowed, "{dodo_calls:?}");

    // Another user is unaffected, and so is this one's status (it calls no Dodo).
    let (status, body) = read(
        world
            .create_checkout()
            .handle(api_event(
                "POST",
                "/payment/create-checkout-session",
                Some(("bystander", Some("bystander@example.com"))),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = read(
        world
            .status()
            .handle(api_event(
                "GET",
                "/payment/status",
                Some(("burster", None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The portal counts too.
    let portal = PortalHandler::new(
        world.store_as("portal"),
        world.dodo_client(),
        common::catalog(),
    );
    let (status, body) = read(
        portal
            .handle(api_event(
                "POST",
                "/payment/portal",
                Some(("burster", None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

#[tokio::test]
async fn the_window_slides_calls_leave_it_after_a_minute() {
    let world = World::new().await;
    let who = paywall::ids::UserId::parse("slider").expect("valid");
    let start = 1_000_000_000_000_i64;
    for i in 0..10 {
        let decision = world
            .store
            .take_rate_limited_call(&who, start + i * 1000)
            .await
            .expect("counted");
        assert_eq!(decision, paywall::store::RateDecision::Allowed, "call {i}");
    }
    // At 30 s, the window holds ten: refused until the first leaves it (at 60 s).
    let refused = world
        .store
        .take_rate_limited_call(&who, start + 30_000)
        .await
        .expect("counted");
    assert_eq!(
        refused,
        paywall::store::RateDecision::Limited { retry_after: 30 }
    );
    // A refused call is not counted: at 60.5 s one call has left, one may come in.
    let next = world
        .store
        .take_rate_limited_call(&who, start + 60_500)
        .await
        .expect("counted");
    assert_eq!(next, paywall::store::RateDecision::Allowed);
    let again = world
        .store
        .take_rate_limited_call(&who, start + 60_600)
        .await
        .expect("counted");
    assert!(matches!(
        again,
        paywall::store::RateDecision::Limited { .. }
    ));
}
