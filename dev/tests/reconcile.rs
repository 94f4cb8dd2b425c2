//! The reconcile run repairs what lost webhooks leave wrong, against dynoxide and the
//! Dodo stand-in: a lost renewal, a lost `payment.succeeded`, an abandoned checkout; it
//! is idempotent and stays within its Dodo call budget.

mod common;

use std::time::Duration;

use common::*;
use paywall::config::CheckoutConfig;
use paywall::handlers::CreateCheckoutHandler;
use paywall::handlers::reconcile::{Limits, Reconciler};
use paywall::ids::UserId;
use paywall::subscription::Subscription;
use paywall::time::{SECONDS_PER_DAY, Timestamp};
use serde_json::{Value, json};

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

fn subscription_json(id: &str, owner: &str, next_billing: Timestamp) -> Value {
    json!({
        "subscription_id": id, "status": "active", "product_id": PRO,
        "next_billing_date": next_billing.to_rfc3339(), "cancel_at_next_billing_date": false,
        "metadata": {"user_id": owner, "plan": "pro"},
        "customer": {"customer_id": format!("cus_{owner}"), "email": format!("{owner}@example.com")},
    })
}

fn reconciler(world: &World, limits: Limits) -> Reconciler {
    Reconciler::new(
        world.store.clone(),
        world.dodo_client(),
        catalog_with_subscription(),
        limits,
    )
}

async fn view(world: &World, who: &str, now: Timestamp) -> Value {
    let account = world.store.get_account(&user(who)).await.expect("read");
    serde_json::to_value(paywall::access::AccessView::of(&account, now)).expect("json")
}

#[tokio::test]
async fn a_lost_renewal_is_repaired_before_access_ends() {
    let world = World::new().await;
    let now = Timestamp::now();
    // The last webhook we saw: active until two hours from now.
    let seen = Subscription::from_json(&subscription_json(
        "sub_r",
        "renewer",
        now.plus_seconds(7200),
    ))
    .expect("valid");
    world
        .store
        .apply_subscription(&user("renewer"), &seen, "pro", 1)
        .await
        .expect("stored");
    // Dodo renewed it, but the subscription.renewed webhook never arrived.
    world
        .sim()
        .put_subscription(subscription_json("sub_r", "renewer", now.plus_days(30)));
    assert_eq!(
        view(&world, "renewer", now.plus_seconds(3 * 3600)).await["has_paid"],
        false
    );

    let summary = reconciler(&world, Limits::default()).run(now).await;
    assert_eq!(summary.subscriptions_refreshed, 1, "{summary:?}");
    assert_eq!(summary.failed, 0);
    let after = view(&world, "renewer", now.plus_seconds(3 * 3600)).await;
    assert_eq!(after["has_paid"], true, "{after}");
    assert_eq!(after["plan_expires_at"], now.plus_days(30).to_rfc3339());

    // Renewed far ahead: no longer due, so the next run asks Dodo nothing.
    let calls = world.sim().api_calls().len();
    let again = reconciler(&world, Limits::default()).run(now).await;
    assert_eq!(
        (again.checked, world.sim().api_calls().len()),
        (0, calls),
        "{again:?}"
    );
}

async fn open_checkout_at(world: &World, who: &str, at: Timestamp) -> String {
    let handler = CreateCheckoutHandler::new(
        world.store.clone(),
        world.dodo_client(),
        catalog_with_subscription(),
        CheckoutConfig {
            success_url: SUCCESS_URL.to_owned(),
        },
    );
    let request = api_event(
        "POST",
        "/payment/create-checkout-session",
        Some((who, Some("buyer@example.com"))),
        Some(r#"{"plan":"monthly"}"#),
    );
    let response = handler.respond(&request, at).await.expect("opened");
    let (_, body) = read(response).await;
    body["checkout_url"].as_str().expect("url").to_owned()
}

#[tokio::test]
async fn a_lost_payment_webhook_is_repaired_and_a_rerun_changes_nothing() {
    let world = World::new().await;
    let now = Timestamp::now();
    let url = open_checkout_at(&world, "lost-webhook", now.plus_seconds(-2 * 3600)).await;
    // Paid on Dodo's page; no webhook target, so payment.succeeded is lost.
    let paid = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("paid");
    assert_eq!(paid.status(), 303);
    assert_eq!(view(&world, "lost-webhook", now).await["has_paid"], false);

    let summary = reconciler(&world, Limits::default()).run(now).await;
    assert_eq!(summary.payments_granted, 1, "{summary:?}");
    let after = view(&world, "lost-webhook", now).await;
    assert_eq!(after["has_paid"], true, "{after}");
    let expiry = after["plan_expires_at"].clone();

    let again = reconciler(&world, Limits::default()).run(now).await;
    assert_eq!(again.checked, 0, "{again:?}");
    assert_eq!(
        view(&world, "lost-webhook", now).await["plan_expires_at"],
        expiry
    );
}

#[tokio::test]
async fn a_recent_checkout_waits_and_an_abandoned_one_is_dropped() {
    let world = World::new().await;
    let now = Timestamp::now();
    open_checkout_at(&world, "just-opened", now.plus_seconds(-600)).await;
    open_checkout_at(
        &world,
        "walked-away",
        now.plus_seconds(-3 * SECONDS_PER_DAY),
    )
    .await;
    let summary = reconciler(&world, Limits::default()).run(now).await;
    assert_eq!(summary.checkouts_abandoned, 1, "{summary:?}");
    assert_eq!(summary.payments_granted, 0);
    assert_eq!(view(&world, "walked-away", now).await["has_paid"], false);
    // Dropped from the checks, while the recent one is still pending.
    let again = reconciler(&world, Limits::default()).run(now).await;
    assert_eq!(again.checkouts_abandoned, 0, "{again:?}");
    assert_eq!(view(&world, "just-opened", now).await["status"], "pending");
}

#[tokio::test]
async fn a_run_stays_within_its_dodo_call_budget() {
    let world = World::new().await;
    let now = Timestamp::now();
    for i in 0..10 {
        let id = format!("sub_b{i}");
        let owner = format!("budget-{i}");
        let seen = Subscription::from_json(&subscription_json(&id, &owner, now.plus_seconds(3600)))
            .expect("valid");
        world
            .store
            .apply_subscription(&user(&owner), &seen, "pro", 1)
            .await
            .expect("stored");
        world
            .sim()
            .put_subscription(subscription_json(&id, &owner, now.plus_days(30)));
    }
    let limits = Limits {
        max_dodo_calls: 6,
        time_budget: Duration::from_secs(30),
        ..Limits::default()
    };
    let summary = reconciler(&world, limits).run(now).await;
    assert!(summary.stopped_early, "{summary:?}");
    assert!(summary.dodo_calls <= 6, "{summary:?}");
    assert_eq!(world.sim().api_calls().len() as u32, summary.dodo_calls);
    // The next runs finish the rest.
    let mut refreshed = summary.subscriptions_refreshed;
    for _ in 0..3 {
        refreshed += reconciler(&world, limits)
            .run(now)
            .await
            .subscriptions_refreshed;
    }
    assert_eq!(refreshed, 10);
}
